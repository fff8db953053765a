"""The `spotbatch` command's arguments: one function a subcommand, in the order `spotbatch
--help` lists them, each given the function of jobs/cli.py that runs it."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cluster.models import models_dir
from cluster.models.builtin import BUILDERS
from jobs.bench.common import COMPILE_MODES
from jobs.bench.scale import FULL_TAKES
from operators.failures import CLASSES
from pipelines.formats.export import FORMATS

Handler = Callable[[argparse.Namespace], int]


def build_parser(description: str, handlers: dict[str, Handler]) -> argparse.ArgumentParser:
    """`handlers`: the function that runs each subcommand, by its name."""
    parser = argparse.ArgumentParser(prog="spotbatch", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, add in SUBCOMMANDS.items():
        add(sub, handlers[name])
    return parser


def add_run(sub: argparse._SubParsersAction, handler: Handler) -> None:
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
    p.set_defaults(func=handler)


def add_estimate(sub: argparse._SubParsersAction, handler: Handler) -> None:
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
    p.add_argument("--calibrate", type=_at_least_one, metavar="N",
                   help="first run about N rows sampled over the input on one real engine (apart from the output; "
                        "it costs their engine time), so this model's speed and output length here decide")
    p.add_argument("--address", help="with --calibrate: the Ray cluster to run on (default: as `spotbatch run`)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=handler)


def add_status(sub: argparse._SubParsersAction, handler: Handler) -> None:
    p = sub.add_parser("status", help="how far a run has come: units, rows, tokens")
    p.add_argument("output", help="the run's output path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=handler)


def add_cancel(sub: argparse._SubParsersAction, handler: Handler) -> None:
    p = sub.add_parser("cancel", help="ask the runs working on an output to stop: they commit the units in "
                                      "flight and exit 4; the same command resumes")
    p.add_argument("output", help="the run's output path")
    p.set_defaults(func=handler)


def add_report(sub: argparse._SubParsersAction, handler: Handler) -> None:
    p = sub.add_parser("report", help="what a run cost: $ per token, load/useful/idle/wasted, tokens/s")
    p.add_argument("output", help="the run's output path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the cost split and tokens/s over time")
    p.add_argument("--compare", metavar="OTHER", help="another run's output, for $ per 1M tokens side by side")
    p.add_argument("--estimate", metavar="FILE.json",
                   help="what `spotbatch estimate SPEC --json` said before the run: shows its tokens, time and $ "
                        "against the actual, with the errors")
    p.set_defaults(func=handler)


def add_compact(sub: argparse._SubParsersAction, handler: Handler) -> None:
    p = sub.add_parser("compact", help="fold the records of ended runs into one archive, and compact the response "
                                       "cache; status, report and answers unchanged")
    p.add_argument("output", nargs="?", help="the run's output path (its records and its own cache)")
    p.add_argument("--cache", metavar="PATH", help="a shared response cache (cache.path) to compact")
    p.set_defaults(func=handler)


def add_demo(sub: argparse._SubParsersAction, handler: Handler) -> None:
    p = sub.add_parser("demo", help="make sample prompts and run them on SmolLM2 on a local Ray")
    p.add_argument("--output", help="where results go (default: a new temp folder)")
    p.add_argument("--model", default="smollm2-135m", help="model name or folder")
    p.add_argument("--rows", type=int, default=240, help="how many sample prompts")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else the local Ray of "
                                     "`spotbatch up`, else a private local Ray)")
    p.set_defaults(func=handler)


def add_up(sub: argparse._SubParsersAction, handler: Handler) -> None:
    p = sub.add_parser("up", help="keep a local Ray running, so later runs on this machine skip Ray's start")
    p.add_argument("--num-cpus", type=_at_least_one, help="CPUs it offers (default: all of this machine's)")
    p.set_defaults(func=handler)


def add_down(sub: argparse._SubParsersAction, handler: Handler) -> None:
    p = sub.add_parser("down", help="stop the local Ray `spotbatch up` started (only its own processes)")
    p.set_defaults(func=handler)


def add_export(sub: argparse._SubParsersAction, handler: Handler) -> None:
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
    p.set_defaults(func=handler)


def add_bench(sub: argparse._SubParsersAction, handler: Handler) -> None:
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
    p.add_argument("--serve", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="instead: a file through `spotbatch run` and through `spotbatch serve` with the OpenAI "
                        "SDK side by side, then 50 small batches in a row: model loads and the server's memory "
                        "(jobs/bench/serve.py; its options follow, e.g. --serve --lines 48 --rounds 3)")
    p.set_defaults(func=handler)


def add_models(sub: argparse._SubParsersAction, handler: Handler) -> None:
    p = sub.add_parser("models", help="put models on this node (a node's set-up, or a warm image)")
    msub = p.add_subparsers(dest="models_command", required=True)
    mp = msub.add_parser("prepare", help=f"build built-in models into {models_dir()}, or fetch a hub repo or a "
                                         "URL folder as a run's engines would (idempotent)")
    mp.add_argument("names", nargs="*", help="built-in names, hub repo ids or URLs; default: all built-in ("
                    + ", ".join(sorted(BUILDERS)) + ")")
    mp.add_argument("--revision", help="for hub repo ids: a branch, tag or commit (default main)")
    mp.set_defaults(func=handler)


def add_serve(sub: argparse._SubParsersAction, handler: Handler) -> None:
    p = sub.add_parser("serve", help="OpenAI's Files and Batches API on this machine, each batch a spotbatch run")
    p.add_argument("--config", help="serve.yaml: the model names requests use -> spotbatch models and compute")
    p.add_argument("--store", help="where files, batches and their runs live: a folder or an s3:// prefix")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only); put TLS in front of "
                                                       "any other (docs/guide/serve.md)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else the local Ray of "
                                     "`spotbatch up`, else a private local Ray)")
    p.add_argument("--hash-key", action="store_true",
                   help="read an API key on stdin and print its sha256, a line of the keys file; serve nothing")
    p.set_defaults(func=handler)


SUBCOMMANDS = {
    "run": add_run,
    "estimate": add_estimate,
    "status": add_status,
    "cancel": add_cancel,
    "report": add_report,
    "compact": add_compact,
    "demo": add_demo,
    "up": add_up,
    "down": add_down,
    "export": add_export,
    "bench": add_bench,
    "models": add_models,
    "serve": add_serve,
}


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value
