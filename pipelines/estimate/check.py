"""An estimate checked against the run it estimated (`spotbatch report OUT --estimate FILE`):
its engine prompt tokens, output tokens, time and $ against the ledger's measured figures,
each with its error, so users learn how far to trust the next one.

The estimate is the JSON `spotbatch estimate --json` printed before the run; its option for
the run's own instance type and market (the spec's `cost`) is the one compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cluster.prices import normalize_market
from pipelines.store.ledger import Ledger
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from spotbatch.errors import InputError


def read_estimate(path: str) -> dict[str, Any]:
    """An estimate's JSON, or an InputError naming the file and what is missing."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"estimate file {path}: cannot read it as JSON ({err.__class__.__name__}: {err})") from None
    for field in ("work", "options"):
        if not isinstance(data, dict) or field not in data:
            raise InputError(f"estimate file {path}: field {field} is missing; write it with `spotbatch estimate "
                             f"SPEC --json > {path}`")
    return data


def against_actual(estimated: dict[str, Any], output: str, ledger: Ledger) -> dict[str, Any]:
    """{figure: {estimated, actual, error}} for input and output tokens, seconds and $; error is
    estimated / actual - 1 (None where nothing was measured)."""
    store = OutputStore(output)
    cost = ((store.read_manifest() or {}).get("spec") or {}).get("cost") or {}
    itype, market = cost.get("instance_type"), normalize_market(cost.get("market") or "on_demand")
    option = next((o for o in estimated["options"] if (o["instance_type"], o["market"]) == (itype, market)), None)
    runs = Records(store).runs().values()
    seconds = sum(r["ended_at"] - r["started_at"] for r in runs if r.get("ended_at") and r.get("started_at"))
    s, work = ledger.summary, estimated["work"]
    figures = {"input_tokens": (work["engine_prompt_tokens"], s.input_tokens),
               "output_tokens": (work["output_tokens"], s.output_tokens),
               "seconds": (option["seconds"] if option else None, seconds),
               "usd": (option["usd"] if option else None, s.total_usd)}
    return {"instance_type": itype, "market": market,
            **{name: {"estimated": e, "actual": a, "error": e / a - 1 if e is not None and a else None}
               for name, (e, a) in figures.items()}}


def format_check(check: dict[str, Any]) -> str:
    lines = [f"estimated against actual ({check['instance_type']} {check['market']}):"]
    for name in ("input_tokens", "output_tokens", "seconds", "usd"):
        row = check[name]
        error = "-" if row["error"] is None else f"{row['error']:+.0%}"
        estimated = "not estimated" if row["estimated"] is None else f"{row['estimated']:,.4g}"
        lines.append(f"  {name:<14} estimated {estimated:>12}  actual {row['actual']:>12,.4g}  error {error}")
    return "\n".join(lines)
