"""`spotbatch bench --scale`: what grows as a run grows, with a fake engine that answers at once
(the engine is not what is measured here; `spotbatch bench` measures it).

Real planning, the real read stage, unit protocol, response cache and records, on real storage:
a local folder, and with --s3 the loopback S3 (moto_server) behind a proxy that counts every
request by how S3 prices it. Each figure comes from a fresh process (its peak RSS is its own):
  plan      driver seconds and peak memory to plan N units
  units     seconds per unit, and S3 requests per unit, with A simulated actors (threads, each
            its own protocol and cache reader) taking units from one queue
  readers   seconds and peak memory of `status`, the ledger and `report` over N units' records
  ray_data  Ray Data's driver: blocks, seconds and peak memory to stream N unit descriptors as a
            run cuts them (pipelines/stream/unit_blocks.py), against one block per unit
  cache     one unit's lookup (100 hits, 100 misses) against caches of 10k .. 10M answers, and
            one fold of new answers into a shard's run (compaction's largest step)
Prints a line per step as it goes (its size, then its seconds), then each figure with its
growth across the sizes, and ends with the JSON line. Without options the sizes are small (a
few minutes); --full takes the docs' (docs/guide/scaling.md; hours: SIZES and FULL_TAKES below).

    python -m jobs.bench.scale [--full] [--units 300,1000] [--actors 10,30]
                               [--cache-sizes 10000,100000] [--s3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from jobs.bench.scale_figures import S3Target, Sizes, marginal_requests, scale_bench
from jobs.bench.scale_probes import PROBES
from jobs.bench.scale_report import report_lines
from jobs.bench.steps import Steps

__all__ = ["FULL_TAKES", "SIZES", "S3Target", "Sizes", "main", "marginal_requests", "parse", "report_lines",
           "scale_bench"]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


# A run without options measures every figure at sizes that finish in a few minutes on a
# 2-core machine; --full takes the sizes the docs' figures come from.
SIZES = {
    "small": {"units": [300, 1000], "actors": [10, 30], "cache_sizes": [10_000, 100_000],
              "s3_units": [100, 300], "s3_actors": [30]},
    "full": {"units": [1000, 10_000, 100_000], "actors": [10, 100, 1000],
             "cache_sizes": [10_000, 1_000_000, 10_000_000], "s3_units": [1000, 2000], "s3_actors": [100]},
}
# Estimated, not timed as one run: the sum of its steps' times measured one by one (docs/guide/scaling.md, "How
# it scales"): the 100k-unit run 87 min, 100 and 1,000 actors on 10k units 55 min, Ray Data's one
# block per unit at 100k units about 30 min, the readers and the 10M-answer cache the rest.
FULL_TAKES = "about 3 hours on a 2-core machine, estimated from its steps measured one by one; more with --s3"


def sizes_args(parser: argparse.ArgumentParser) -> None:
    small = SIZES["small"]
    parser.add_argument("--full", action="store_true",
                        help="the sizes of docs/guide/scaling.md "
                             f"({', '.join(f'{k} {v}' for k, v in SIZES['full'].items())}): "
                             f"{FULL_TAKES}. Without it: {', '.join(f'{k} {v}' for k, v in small.items())}, "
                             "a few minutes")
    parser.add_argument("--units", type=_ints, help=f"default {small['units']}")
    parser.add_argument("--actors", type=_ints, help=f"default {small['actors']}")
    parser.add_argument("--cache-sizes", type=_ints, help=f"default {small['cache_sizes']}")
    parser.add_argument("--ray-data-units", type=_ints, default=None, help="default: --units")
    parser.add_argument("--s3", action="store_true", help="also on the loopback S3 (moto_server), requests counted")
    parser.add_argument("--s3-units", type=_ints, help=f"default {small['s3_units']}")
    parser.add_argument("--s3-actors", type=_ints, help=f"default {small['s3_actors']}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spotbatch bench --scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes_args(parser)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "spotbatch-bench-scale")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("probe_args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, value in SIZES["full" if args.full else "small"].items():
        if getattr(args, name) is None:  # an option given outright wins over either set of sizes
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse(argv)
    if args.probe:
        print(json.dumps(PROBES[args.probe](*json.loads(args.probe_args))))
        return None
    args.work.mkdir(parents=True, exist_ok=True)
    steps = Steps("scale")
    print(f"scale: units {args.units}, actors {args.actors}, cache sizes {args.cache_sizes}"
          + (f", S3 units {args.s3_units} with actors {args.s3_actors}" if args.s3 else "")
          + ("" if args.full else f"; --full for the sizes of docs/guide/scaling.md: {FULL_TAKES}"), flush=True)
    sizes = Sizes(args.units, args.actors, args.cache_sizes, args.s3_units if args.s3 else [], args.s3_actors,
                  args.ray_data_units)
    if args.s3:
        from jobs.bench.s3_requests import S3RequestCounter, moto_server, storage_options

        with moto_server() as endpoint, S3RequestCounter(endpoint) as counter:
            figures = scale_bench(sizes, args.work, S3Target(storage_options(counter.endpoint), counter), steps)
    else:
        figures = scale_bench(sizes, args.work, steps=steps)
    print(f"scale: {steps.done} steps in {steps.total_seconds():.0f} s", flush=True)
    for line in report_lines(figures):
        print(line)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
