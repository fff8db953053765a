"""`spotbatch report`: what a run cost, as a table, JSON, or a chart."""

from __future__ import annotations

import json
from typing import Any

from jobs.summary import format_cost
from operators.cost import BUCKETS
from pipelines.store.ledger import Ledger, compute_ledger
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from pipelines.store.startup import format_startup, startup
from pipelines.store.status import format_status, run_status


def latest_reference(store: OutputStore) -> dict[str, Any] | None:
    """The reference price of the latest invocation that named one."""
    runs = sorted(Records(store).runs().items())
    return next((r["reference"] for _, r in reversed(runs) if r.get("reference")), None)


def load_ledger(path: str) -> Ledger:
    store = OutputStore(path)
    return compute_ledger(store, latest_reference(store))


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def spec_differences(path: str, other: str) -> list[str]:
    """How the two runs' specs differ in what decides cost: model(s), sampling, compute, cost."""
    specs = []
    for p in (path, other):
        manifest = OutputStore(p).read_manifest() or {}
        spec = manifest.get("spec", {})
        specs.append(_flat({k: spec.get(k) for k in ("model", "models", "route", "sampling", "compute", "cost")}))
    a, b = specs
    return [f"{key}: {a.get(key)!r} vs {b.get(key)!r}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def report_json(path: str, ledger: Ledger) -> dict[str, Any]:
    return {**ledger.summary.to_json(), "status": run_status(path).to_json(),
            "tokens_per_second": tokens_per_second(ledger), "startup": startup(Records(OutputStore(path)))}


def tokens_per_second(ledger: Ledger, window: float = 10.0) -> list[tuple[float, float]]:
    """(seconds since the first run started, output tokens/s) per window, from unit commits."""
    if not ledger.timeline or ledger.started_at is None:
        return []
    buckets: dict[int, int] = {}
    for t, tokens in ledger.timeline:
        i = int((t - ledger.started_at) // window)
        buckets[i] = buckets.get(i, 0) + tokens
    last = max(buckets)
    series = [(i * window, buckets.get(i, 0) / window) for i in range(last + 1)]
    return series + [((last + 1) * window, series[-1][1])]  # so a step plot shows the last window too


def draw_chart(ledger: Ledger, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    usd = ledger.summary.breakdown_usd
    colors = {"load": "#8c8c8c", "useful": "#2a9d48", "idle": "#e0b341", "wasted": "#d1495b"}
    left.bar(list(BUCKETS), [usd[b] for b in BUCKETS], color=[colors[b] for b in BUCKETS])
    left.set_ylabel("US$")
    left.set_title(f"cost split, total ${ledger.summary.total_usd:.4f}")
    series = tokens_per_second(ledger)
    if series:
        right.step([t for t, _ in series], [v for _, v in series], where="post")
    right.set_xlabel("seconds since start")
    right.set_ylabel("output tokens/s" if ledger.summary.output_tokens else "input tokens/s")
    right.set_title("throughput (committed units)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report_data(path: str, compare: str | None = None, plot: str | None = None,
                estimate: str | None = None) -> dict[str, Any]:
    """What `report --json` prints (and spotbatch.report returns): the output's cost ledger summary,
    its status, tokens/s over time and where its latest run's first seconds went; with `compare`,
    {"run", "compare", "differences"}. `plot` also draws the chart to that file; `estimate` (the
    file `spotbatch estimate --json` wrote) adds the estimate against the actual figures."""
    ledger = load_ledger(path)
    data = report_json(path, ledger)
    if estimate:
        from pipelines.estimate.check import against_actual, read_estimate

        data["estimate"] = against_actual(read_estimate(estimate), path, ledger)
    if plot:
        draw_chart(ledger, plot, path)
    if not compare:
        return data
    return {"run": data, "compare": report_json(compare, load_ledger(compare)),
            "differences": spec_differences(path, compare)}


def report(path: str, as_json: bool = False, plot: str | None = None, compare: str | None = None,
           estimate: str | None = None) -> int:
    if as_json:
        print(json.dumps(report_data(path, compare, plot, estimate), indent=1))
    else:
        ledger = load_ledger(path)
        other = load_ledger(compare) if compare else None
        print(format_status(run_status(path)))
        first = startup(Records(OutputStore(path)))
        if first:
            print(format_startup(first) + " (the latest run)")
        print(format_cost(ledger.summary))
        if estimate:
            from pipelines.estimate import check

            print(check.format_check(check.against_actual(check.read_estimate(estimate), path, ledger)))
        if other is not None:
            print(f"\ncompared with {compare}:\n{format_cost(other.summary)}")
            differences = spec_differences(path, compare)
            print("settings that differ (this run vs that one): "
                  + ("; ".join(differences) if differences else "none"))
            mine, theirs = ledger.summary.usd_per_1m_output_tokens, other.summary.usd_per_1m_output_tokens
            if mine and theirs:
                print(f"per 1M output tokens, {path} costs {mine / theirs:.2f}x {compare}")
        if plot:
            draw_chart(ledger, plot, path)
    return 0
