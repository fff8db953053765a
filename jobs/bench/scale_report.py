"""The scale simulation's figures as lines to read (jobs/bench/scale.py prints them): a line per
size, then how each figure grew across the sizes."""

from __future__ import annotations

from typing import Any


def growth(figures: list[dict[str, Any]], key: str, by: str) -> str:
    """'x1.10 from 1,000 to 100,000 units'-style growth of `key` between the first and last."""
    first, last = figures[0], figures[-1]
    if not first[key]:
        return "n/a"
    return f"x{last[key] / first[key]:.2f} from {first[by]:,} to {last[by]:,}"



def report_lines(f: dict[str, Any]) -> list[str]:
    """scale_bench's figures, a line each, then how each grew across the sizes."""
    return run_lines(f) + s3_lines(f) + ray_data_lines(f) + cache_lines(f)


def run_lines(f: dict[str, Any]) -> list[str]:
    """Planning, the units (by size, then by fleet) and the readers."""
    lines = []
    for p in f["plan"]:
        lines.append(f"plan     {p['units']:>9,} units: {p['seconds']:6.2f} s, peak RSS {p['peak_rss_mb']:6.0f} MB")
    if len(f["plan"]) > 1:
        lines.append(f"         plan time {growth(f['plan'], 'seconds', 'units')} units; "
                     f"peak RSS {growth(f['plan'], 'peak_rss_mb', 'units')}")
    for u in f["units"] + f["actors"][1:]:
        lines.append(f"units    {u['units']:>9,} units, {u['actors']:>5,} actors: "
                     f"{u['unit_seconds_median'] * 1000:7.1f} ms per unit (median), "
                     f"{u['units_per_second']:7.1f} units/s, {u['failed']} not committed")
    if len(f["units"]) > 1:
        lines.append(f"         ms per unit {growth(f['units'], 'unit_seconds_median', 'units')} units")
    if len(f["actors"]) > 1:
        lines.append(f"         ms per unit {growth(f['actors'], 'unit_seconds_median', 'actors')} actors "
                     f"(threads of one process: the GIL, not storage, is most of it)")
    for r in f["readers"]:
        lines.append(f"readers  {r['units']:>9,} units: status {r['status_seconds']:6.2f} s "
                     f"({r['status_peak_rss_mb']:.0f} MB), ledger {r['ledger_seconds']:6.2f} s "
                     f"({r['ledger_peak_rss_mb']:.0f} MB), report {r['report_seconds']:6.2f} s "
                     f"({r['report_peak_rss_mb']:.0f} MB)")
    if len(f["readers"]) > 1:
        for which in ("status", "ledger", "report"):
            lines.append(f"         {which} time {growth(f['readers'], which + '_seconds', 'units')} units; "
                         f"peak RSS {growth(f['readers'], which + '_peak_rss_mb', 'units')}")
    return lines


def s3_lines(f: dict[str, Any]) -> list[str]:
    """Requests per unit on S3 and their price, a fleet's beats, a unit once the fleet has started."""
    lines = []
    for s in f["s3"]:
        by_class = ", ".join(f"{k} {v / s['units']:.2f}" for k, v in sorted(s["requests"].items()))
        lines.append(f"s3       {s['units']:>9,} units, {s['actors']:>5,} actors: {s['requests_per_unit']:.1f} "
                     f"requests per unit ({by_class}): ${s['usd_per_1k_units']:.4f} per 1,000 units")
    for b in f.get("beats", []):
        lines.append(f"beats    {b['actors']:>5,} actors beat every {b['beat_seconds']:.0f} s: "
                     f"{b['puts_per_second']:.0f} PUT/s, ${b['usd_per_hour']:.3f} per hour")
    if f.get("s3_prices"):
        lines.append(f"         S3 prices: {f['s3_prices']['source']}, as of {f['s3_prices']['as_of']}")
    by_units = [s for s in f["s3"] if s["actors"] == f["s3"][0]["actors"]] if f["s3"] else []
    if len(by_units) > 1:
        lines.append(f"         requests per unit {growth(by_units, 'requests_per_unit', 'units')} units")
    by_actors = [s for s in f["s3"] if s["units"] == f["s3"][0]["units"]]
    if len(by_actors) > 1:
        lines.append(f"         requests per unit {growth(by_actors, 'requests_per_unit', 'actors')} actors")
    for m in f.get("s3_marginal", []):
        # below zero, the smaller run had not reached a steady state (each actor held a unit or two)
        start = f"{m['fleet_start_requests']:,.0f}" if m["fleet_start_requests"] >= 0 else "n/a"
        lines.append(f"s3 unit  {m['actors']:>5,} actors: {m['requests_per_unit']:.1f} requests per unit once the "
                     f"fleet has started ({m['from_units']:,} to {m['to_units']:,} units), and {start} for the "
                     f"fleet's start")
    if len(f.get("s3_marginal", [])) > 1:
        started = growth(f["s3_marginal"], "requests_per_unit", "actors")
        lines.append(f"         requests per unit once started {started} actors")
    return lines


def ray_data_lines(f: dict[str, Any]) -> list[str]:
    """Ray Data's driver: blocks and seconds as a run cuts them, against one block per unit."""
    lines = []
    for r in f["ray_data"]:
        kind = "one block per unit" if r["one_per_unit"] else "blocks as a run cuts them"
        lines.append(f"ray data {r['units']:>9,} units, {kind:26}: {r['blocks']:>7,} blocks, "
                     f"{r['seconds']:6.1f} s, driver peak RSS {r['peak_rss_mb']:5.0f} MB")
    cut = [r for r in f["ray_data"] if not r["one_per_unit"]]
    if len(cut) > 1:
        lines.append(f"         blocks {growth(cut, 'blocks', 'units')} units; driver seconds "
                     f"{growth(cut, 'seconds', 'units')}")
    return lines


def cache_lines(f: dict[str, Any]) -> list[str]:
    """A unit's lookup in each cache, and a fold into a shard's run."""
    lines = []
    for c in f["cache"]:
        lines.append(f"cache    {c['answers']:>11,} answers: a unit's lookup cold {c['cold_seconds'] * 1000:6.1f} ms "
                     f"({c['cold_files_opened']} files), warm {c['warm_seconds'] * 1000:6.1f} ms "
                     f"({c['warm_files_opened']} files); keys in memory {c['keys_in_memory']}, footers kept "
                     f"{c.get('footer_bytes', 0) / 1e6:.1f} MB, peak RSS {c['peak_rss_mb']:.0f} MB "
                     f"({c.get('rss_trimmed_mb') or 0:.0f} MB held after the lookups)")
        lines.append(f"         a fold of {c['fold_answers']:,} answers into a shard's run of "
                     f"{c['run_files_before']} files: {c['fold_seconds']:.2f} s, {c['run_files_after']} files written, "
                     "Arrow's peak "
                     f"{c['fold_arrow_peak_mb']:.0f} MB (RSS +{c['fold_added_peak_mb']:.0f} MB)")
    if len(f["cache"]) > 1:
        held = growth(f["cache"], "rss_trimmed_mb", "answers") if f["cache"][0].get("rss_trimmed_mb") else "n/a"
        lines.append(f"         warm lookup {growth(f['cache'], 'warm_seconds', 'answers')} answers; "
                     f"peak RSS {growth(f['cache'], 'peak_rss_mb', 'answers')}; held {held}")
    return lines
