"""Driver memory of planning and resuming: it must follow units, not rows.

    python -m jobs.bench_plan [--rows 1000000] [--shards 1000] [--work DIR]

Writes the input once (kept under --work for re-runs), then in fresh processes plans a run of
ROWS rows and of ROWS/10 rows (the baseline), and resumes each from its manifest, printing each
process's peak RSS and the ratios. Its last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PROBE = """
import json, resource, sys, time
from pipelines.run import prepare
from pipelines.spec import PipelineSpec
t = time.monotonic()
spec = PipelineSpec(input={"paths": sys.argv[1], "prompt_column": "text"}, output={"path": sys.argv[2]})
store, plan = prepare(spec)
committed = store.committed_units()
print(json.dumps({"units": len(plan.units), "rows": plan.input_rows, "seconds": time.monotonic() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_input(folder: Path, rows: int, shards: int) -> None:
    if (folder / "_DONE").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    per = rows // shards
    for s in range(shards):
        ids = pa.array(range(s * per, (s + 1) * per), pa.int64())
        text = pa.array([f"Summarize document {i}: " + "lorem ipsum " * 20 for i in range(s * per, (s + 1) * per)])
        pq.write_table(pa.table({"id": ids, "text": text}), folder / f"part-{s:05d}.parquet")
    (folder / "_DONE").write_text("")


def probe(input_dir: Path, output_dir: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(input_dir), str(output_dir)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "spotbatch-bench-plan")
    args = parser.parse_args()
    results = {}
    for label, rows in (("baseline", args.rows // 10), ("full", args.rows)):
        inp = args.work / f"input-{rows}"
        write_input(inp, rows, args.shards)
        out = Path(tempfile.mkdtemp(prefix="out-", dir=args.work))
        results[f"{label}_plan"] = probe(inp, out)
        results[f"{label}_resume"] = probe(inp, out)
        for phase in ("plan", "resume"):
            r = results[f"{label}_{phase}"]
            print(f"{label:8} {phase:6}: {r['rows']:>9,} rows, {r['units']:>5,} units, "
                  f"peak RSS {r['peak_rss_mb']:7.1f} MB, {r['seconds']:5.1f} s")
    ratio_rows = results["full_plan"]["rows"] / results["baseline_plan"]["rows"]
    ratio_mem = results["full_plan"]["peak_rss_mb"] / results["baseline_plan"]["peak_rss_mb"]
    ratio_resume = results["full_resume"]["peak_rss_mb"] / results["baseline_resume"]["peak_rss_mb"]
    print(f"{ratio_rows:.0f}x the rows: plan peak RSS x{ratio_mem:.2f}, resume peak RSS x{ratio_resume:.2f}")
    print(json.dumps({**results, "rows_ratio": ratio_rows, "plan_rss_ratio": ratio_mem,
                      "resume_rss_ratio": ratio_resume}))


if __name__ == "__main__":
    main()
