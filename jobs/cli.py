"""The `spotbatch` command: parse, call pipelines, print."""

from __future__ import annotations

import argparse
import logging
import sys

from cluster.models import fetch, models_dir
from cluster.models.builtin import BUILDERS
from jobs.bench.common import COMPILE_MODES
from jobs.bench.scale import FULL_TAKES
from operators.failures import CLASSES
from pipelines.formats.export import FORMATS
from pipelines.log import cli_console
from pipelines.planning.schedule import parse_run_date, uses_run_date, with_run_date
from pipelines.redact import redact_url
from pipelines.spec import load_spec
from spotbatch.errors import SpecError, SpotbatchError

# The command's own lines ("spotbatch: ...") are log records (pipelines/log.py); what it was asked
# for (a run's summary, a status, a report, JSON) is its output, printed.
log = logging.getLogger("spotbatch.cli")


def _run(args: argparse.Namespace) -> int:
    from cluster.cpu_priority import yield_to_engines

    yield_to_engines()  # before any thread or local Ray process exists: they inherit it
    from jobs.summary import format_summary
    from pipelines.run import run

    if args.retry_failed:
        from pipelines.retry import retry_failed
        from pipelines.run_context import Invocation

        if args.spec:
            raise SpecError("give a spec or --retry-failed OUTPUT, not both (the output keeps its spec)")
        how = Invocation(address=args.address, verbose=args.verbose or None)
        summary = retry_failed(args.retry_failed, classes=args.only_class, overrides=args.set, how=how)
        print(format_summary(summary))
        return exit_code(summary)
    if not args.spec:
        raise SpecError("spotbatch run needs a spec (or --retry-failed OUTPUT)")
    spec = load_spec(args.spec, overrides=args.set, output=args.output)
    if uses_run_date(spec) or args.date:
        spec = with_run_date(spec, parse_run_date(args.date))
        log.info("run of %s", redact_url(spec.output.path))
    summary = run(spec, address=args.address, new_run=args.new_run, verbose=args.verbose or None)
    print(format_summary(summary))
    return exit_code(summary)


def exit_code(summary) -> int:
    """0 finished, 3 stopped by the budget, 4 stopped by a cancel or the deadline (both resumable),
    1 not finished for another reason."""
    from pipelines.stops.stopping import RESUMABLE_STOPS

    if summary.finished:
        return 0
    if summary.stopped in RESUMABLE_STOPS:
        return 4
    return 3 if summary.stopped else 1


def _cancel(args: argparse.Namespace) -> int:
    from pipelines.stops.stopping import cancel

    runs = cancel(args.output)
    if not runs:
        log.info("no run is working on %s: nothing to cancel", redact_url(args.output))
        return 0
    log.info("asked %d run(s) working on %s to stop (%s): each takes no new unit, commits the units in "
             "flight and exits 4; the same command resumes", len(runs), redact_url(args.output), ", ".join(runs))
    return 0


def _estimate(args: argparse.Namespace) -> int:
    import json

    from pipelines.estimate import estimate
    from pipelines.estimate.text import format_estimate

    spec = load_spec(args.spec, overrides=args.set, output=args.output)
    est = estimate(spec, by=args.by, references=args.reference, instance_types=args.instance_type or None,
                   sample_rows=args.sample_rows)
    print(json.dumps(est.to_json(), indent=1) if args.json else format_estimate(est))
    return 0


def _status(args: argparse.Namespace) -> int:
    import json

    from pipelines.store.status import format_status, run_status

    status = run_status(args.output)
    print(json.dumps(status.to_json(), indent=1) if args.json else format_status(status))
    return 0


def _compact(args: argparse.Namespace) -> int:
    from pipelines.cache.compaction import NO_CACHE, compact_cache
    from pipelines.engine.actor import RUN_CACHE
    from pipelines.store.compact import compact
    from pipelines.store.output import OutputStore

    if args.output is None and args.cache is None:
        raise SystemExit("spotbatch compact: give an output path, or --cache PATH")
    caches = [args.cache] if args.cache else []
    if args.output is not None:
        store = OutputStore(args.output)
        store.require_manifest()
        done = compact(store)
        log.info("folded %d ended run(s), %d actor(s) and %d attempt record(s) into one archive (%d files "
                 "removed); %d orphaned staging file(s) removed", done.runs, done.actors, done.attempts,
                 done.files_removed, done.orphans_removed)
        caches.append(f"{args.output.rstrip('/')}/{RUN_CACHE}")
    for path in caches:
        c = compact_cache(path)
        if c.skipped == NO_CACHE and path != args.cache:
            continue  # the run kept no cache of its own
        log.info("response cache %s: %s", redact_url(path), c.skipped or (
            f"{c.entries_files} entries file(s) ({c.answers:,} answers) moved into shards; "
            f"{c.shard_files_merged} shard file(s) merged; {c.shard_files_written} written"))
    return 0


def _report(args: argparse.Namespace) -> int:
    from jobs.report import report

    return report(args.output, as_json=args.json, plot=args.plot, compare=args.compare, estimate=args.estimate)


def _demo(args: argparse.Namespace) -> int:
    from jobs.demo import demo

    return demo(args.output, model=args.model, rows=args.rows, address=args.address)


def _export(args: argparse.Namespace) -> int:
    from pipelines.formats.export import ExportRequest, export

    counts = export(ExportRequest(args.output, args.format, args.to, include_truncated=args.include_truncated,
                                  overrides=list(args.set or []), partial=args.partial))
    log.info(f"exported {counts['written']:,} of {counts['rows']:,} rows to {args.to}"
             + (f"; {counts['errors']:,} failed rows in the errors file" if counts["errors"] else "")
             + (f"; {counts['skipped']:,} skipped (errors or cut-off answers)" if counts["skipped"] else ""))
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.scale is not None:
        from jobs.bench import scale

        scale.main(args.scale)
        return 0
    if args.adhoc is not None:
        from jobs.bench import adhoc

        adhoc.main(args.adhoc)
        return 0
    if args.task == "embed":
        from jobs.bench.embed import bench as bench_embed

        model = "all-minilm-l6-v2" if args.model == "smollm2-135m" else args.model
        bench_embed(args.prompts or (400 if args.quick else 3000), model,
                    out="spotbatch-bench-embed.json" if args.out == "spotbatch-bench.json" else args.out)
        return 0
    from jobs.bench.main import bench

    figures = bench(quick=args.quick, sets=args.sets, runners=args.runners, out=args.out, model=args.model,
                    compile="compiled" if args.compiled else args.compile, prompts=args.prompts, rounds=args.rounds)
    failed = [r for s in figures["sets"].values() for rd in s["rounds"] for r in rd["runners"].values()
              if "error" in r]
    return 1 if failed else 0


def _up(args: argparse.Namespace) -> int:
    from cluster.local_ray import up

    state, new = up(num_cpus=args.num_cpus)
    log.info("a local Ray %s at %s (%s CPUs, logs in %s).\n  Runs on this machine with no --address or "
             "$RAY_ADDRESS use it, and skip Ray's start; `spotbatch down` stops it.",
             "is up" if new else "was already up", state["address"], state["num_cpus"], state["temp_dir"])
    return 0


def _down(args: argparse.Namespace) -> int:
    from cluster.local_ray import down

    state = down()
    if state:
        log.info("stopped the local Ray at %s", state["address"])
    else:
        log.info("no local Ray from `spotbatch up` is running")
    return 0


def _models(args: argparse.Namespace) -> int:
    for name in args.names or sorted(BUILDERS):
        print(f"{name}: {fetch(name, revision=args.revision)}")  # credentials for URLs come from the environment
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spotbatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run or resume a batch described by a YAML spec")
    p.add_argument("spec", nargs="?", help="pipeline spec (YAML)")
    p.add_argument("--retry-failed", metavar="OUTPUT",
                   help="run the error records of a finished output again, with its own spec, and merge them")
    p.add_argument("--only-class", action="append", choices=list(CLASSES),
                   help="with --retry-failed: only rows that failed this way (repeatable; default: all)")
    p.add_argument("--output", help="output path (overrides output.path)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec value, e.g. --set sampling.max_tokens=64 (repeatable)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else the local Ray of "
                                     "`spotbatch up`, else a private local Ray)")
    p.add_argument("--date", help="fills {date} in the spec's paths (default: today, UTC): nightly runs")
    p.add_argument("--new-run", action="store_true",
                   help="the output holds a run of another spec: move its results aside and start over")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's and vLLM's log lines here (default: in a file whose path is printed)")
    p.set_defaults(func=_run)

    p = sub.add_parser("estimate", help="the bill before the run: its tokens, and the time and $ of each instance "
                                        "type and market, beside the providers' batch prices; starts no engine")
    p.add_argument("spec", help="pipeline spec (YAML)")
    p.add_argument("--output", help="output path (overrides output.path); read only, to see what is committed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec value, e.g. --set sampling.max_tokens=64 (repeatable)")
    p.add_argument("--by", metavar="TIME", help="the deadline to meet instead of compute.deadline: a UTC time "
                                                "of day (06:00) or a duration (3h, 90m)")
    p.add_argument("--reference", action="append", default=[], metavar="MODEL",
                   help="a provider model to price the same tokens at its batch price, e.g. gpt-4o-mini (repeatable)")
    p.add_argument("--instance-type", action="append", metavar="TYPE",
                   help="only this instance type of the price catalog (repeatable; default: every one)")
    p.add_argument("--sample-rows", type=_at_least_one, default=20_000,
                   help="read every row up to this many, else a sample of about this many (default 20,000)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_estimate)

    p = sub.add_parser("status", help="how far a run has come: units, rows, tokens")
    p.add_argument("output", help="the run's output path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_status)

    p = sub.add_parser("cancel", help="ask the runs working on an output to stop: they commit the units in "
                                      "flight and exit 4; the same command resumes")
    p.add_argument("output", help="the run's output path")
    p.set_defaults(func=_cancel)

    p = sub.add_parser("report", help="what a run cost: $ per token, load/useful/idle/wasted, tokens/s")
    p.add_argument("output", help="the run's output path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the cost split and tokens/s over time")
    p.add_argument("--compare", metavar="OTHER", help="another run's output, for $ per 1M tokens side by side")
    p.add_argument("--estimate", metavar="FILE.json",
                   help="what `spotbatch estimate SPEC --json` said before the run: shows its tokens, time and $ "
                        "against the actual, with the errors")
    p.set_defaults(func=_report)

    p = sub.add_parser("compact", help="fold the records of ended runs into one archive, and compact the response "
                                       "cache; status, report and answers unchanged")
    p.add_argument("output", nargs="?", help="the run's output path (its records and its own cache)")
    p.add_argument("--cache", metavar="PATH", help="a shared response cache (cache.path) to compact")
    p.set_defaults(func=_compact)

    p = sub.add_parser("demo", help="make sample prompts and run them on SmolLM2 on a local Ray")
    p.add_argument("--output", help="where results go (default: a new temp folder)")
    p.add_argument("--model", default="smollm2-135m", help="model name or folder")
    p.add_argument("--rows", type=int, default=240, help="how many sample prompts")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else the local Ray of "
                                     "`spotbatch up`, else a private local Ray)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("up", help="keep a local Ray running, so later runs on this machine skip Ray's start")
    p.add_argument("--num-cpus", type=_at_least_one, help="CPUs it offers (default: all of this machine's)")
    p.set_defaults(func=_up)

    p = sub.add_parser("down", help="stop the local Ray `spotbatch up` started (only its own processes)")
    p.set_defaults(func=_down)

    p = sub.add_parser("export", help="results as provider batch output, chat JSONL or prompt/response Parquet")
    p.add_argument("output", help="the run's output path")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--to", required=True, help="file to write (never overwritten)")
    p.add_argument("--partial", action="store_true", help="export an unfinished run's committed units")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="credentials and settings the output does not keep, e.g. "
                        "--set input.storage_options.profile=prod (repeatable)")
    p.add_argument("--include-truncated", action="store_true",
                   help="chat-jsonl: keep answers cut off by max_tokens (default: only finished ones)")
    p.set_defaults(func=_export)

    p = sub.add_parser("bench", help="throughput against plain vLLM and Ray Data's LLM processor, same prompts")
    p.add_argument("--quick", action="store_true", help="48 prompts per set instead of 320 (a few minutes)")
    p.add_argument("--prompts", type=int, help="prompts per set (overrides --quick)")
    p.add_argument("--sets", nargs="+", choices=["long_tail", "shared_system"], help="default: both")
    p.add_argument("--runners", nargs="+", choices=["plain_vllm", "spotbatch", "ray_data_llm"], help="default: all")
    p.add_argument("--model", default="smollm2-135m", help="model name or folder")
    p.add_argument("--compile", choices=COMPILE_MODES, default="eager",
                   help="eager (default), compiled, or default: what a spec without model.enforce_eager gets "
                        "(spotbatch decides by the work ahead; the other runners are given its choice)")
    p.add_argument("--compiled", action="store_true", help="the same as --compile compiled")
    p.add_argument("--rounds", type=_at_least_one, default=1,
                   help="run the runners in turn this many times; ratios are the median of the rounds")
    p.add_argument("--out", default="spotbatch-bench.json", help="where the JSON figures go")
    p.add_argument("--task", choices=["generate", "embed"], default="generate",
                   help="embed: the same texts through plain vLLM's LLM.embed and `spotbatch run` (task embed), "
                        "texts/s side by side (--prompts texts, default 3000; --model default all-minilm-l6-v2)")
    p.add_argument("--scale", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="instead: the scale simulation with a fake engine (jobs/bench/scale.py; its options "
                        "follow, e.g. --scale --units 1000,10000 --s3): small sizes by default, a few minutes; "
                        f"--scale --full for the sizes of docs/guide/scaling.md: {FULL_TAKES}")
    p.add_argument("--adhoc", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="instead: five small batches one after another in one process, against plain vLLM's "
                        "start-up and warm generate (jobs/bench/adhoc.py; its options follow)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("models", help="put models on this node (a node's set-up, or a warm image)")
    msub = p.add_subparsers(dest="models_command", required=True)
    mp = msub.add_parser("prepare", help=f"build built-in models into {models_dir()}, or fetch a hub repo or a "
                                         "URL folder as a run's engines would (idempotent)")
    mp.add_argument("names", nargs="*", help="built-in names, hub repo ids or URLs; default: all built-in ("
                    + ", ".join(sorted(BUILDERS)) + ")")
    mp.add_argument("--revision", help="for hub repo ids: a branch, tag or commit (default main)")
    mp.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_console():
        try:
            return args.func(args)
        except SpotbatchError as err:  # its class says how it ends (spotbatch/errors.py): no traceback
            log.error("error: %s", err)
            return err.exit_code


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
