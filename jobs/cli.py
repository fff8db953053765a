"""The `spotbatch` command: parse, call pipelines, print."""

from __future__ import annotations

import argparse
import logging
import sys

from cluster.models import fetch
from cluster.models.builtin import BUILDERS
from jobs import cli_args
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

    from pipelines.estimate import Ask, estimate
    from pipelines.estimate.text import format_estimate

    if args.calibrate:  # a run on a real engine: its driver yields the cores to it, as `run`'s does
        from cluster.cpu_priority import yield_to_engines

        yield_to_engines()

    spec = load_spec(args.spec, overrides=args.set, output=args.output)
    ask = Ask(by=args.by, references=tuple(args.reference), instance_types=tuple(args.instance_type or ()),
              sample_rows=args.sample_rows, calibrate_rows=args.calibrate, address=args.address)
    est = estimate(spec, ask)
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
             + (f"; {counts['skipped']:,} skipped (errors, cut-off answers, or rows of a request not all "
                f"committed)" if counts["skipped"] else ""))
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
    if args.serve is not None:
        from jobs.bench import serve

        serve.main(args.serve)
        return 0
    if args.task == "embed":
        from jobs.bench.embed import bench as bench_embed

        model = "all-minilm-l6-v2" if args.model == "smollm2-135m" else args.model
        bench_embed(args.prompts or (400 if args.quick else 3000), model,
                    out="spotbatch-bench-embed.json" if args.out == "spotbatch-bench.json" else args.out,
                    rounds=args.rounds)
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


def _serve(args: argparse.Namespace) -> int:
    if args.hash_key:
        from server.keys import key_hash

        print(key_hash(sys.stdin.readline().strip()))
        return 0
    if not args.config or not args.store:
        raise SpecError("spotbatch serve needs --config serve.yaml and --store DIR (or --hash-key)")
    from server.app import serve

    serve(args.config, args.store, port=args.port, host=args.host, address=args.address)
    return 0


def build_parser() -> argparse.ArgumentParser:
    return cli_args.build_parser(__doc__, {
        "run": _run, "estimate": _estimate, "status": _status, "cancel": _cancel, "report": _report,
        "compact": _compact, "demo": _demo, "up": _up, "down": _down, "export": _export, "bench": _bench,
        "models": _models, "serve": _serve})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_console():
        try:
            return args.func(args)
        except SpotbatchError as err:  # its class says how it ends (spotbatch/errors.py): no traceback
            log.error("error: %s", err)
            return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
