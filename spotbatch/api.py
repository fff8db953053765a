"""The functions of `import spotbatch`, each a thin entry over the internals the CLI calls too.

Nothing heavy is imported here at module level: each function imports what it needs when it is
called, so `import spotbatch` starts no Ray and imports no vLLM or torch.

In the examples, `spec` is a small spec over three sample prompts on the tiny test model, and
`output` is an output folder that holds its planned run, stopped by `compute.deadline: "0s"`
before any engine started (the repository's conftest.py makes both). A line that starts
engines is marked `# doctest: +SKIP`: the examples run in the test suite, which keeps engines
for the tests marked `engine`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.background import RunHandle
    from pipelines.estimate import Estimate
    from pipelines.run import RunSummary
    from pipelines.spec import PipelineSpec


def run(spec: PipelineSpec, *, address: str | None = None, new_run: bool = False,
        verbose: bool | None = None) -> RunSummary:
    """Run `spec` to its end and return what this call did and what the output cost so far.

    Resumes: units the output has committed already are not run again, so calling it again after
    an interruption (or on a finished output) costs only what is left. An output that holds a run
    of another spec is refused (OutputError) unless `new_run`, which moves that run aside first.
    `address` is a Ray cluster's (default: $RAY_ADDRESS, else the local Ray of `spotbatch up`,
    else a private local Ray); `verbose` shows Ray's and vLLM's log lines here instead of in a
    file. Raises a UserError subclass for a bad spec, input, output or model before any engine
    starts, and EngineFailed when no engine could start.

    >>> summary = spotbatch.run(spec)  # doctest: +SKIP
    >>> summary.finished, summary.rows  # doctest: +SKIP
    (True, 3)

    A run that stops early (a budget, a deadline, a cancel) says why; the same call resumes it:

    >>> spotbatch.status(output)["stopped"]
    'deadline'
    """
    from pipelines.run import run as run_spec

    return run_spec(spec, address=address, new_run=new_run, verbose=verbose)


def start(spec: PipelineSpec, *, address: str | None = None, new_run: bool = False,
          verbose: bool | None = None) -> RunHandle:
    """Run `spec` on a thread of this process and return its handle at once (a notebook's kernel
    stays free): `handle.progress()` is its progress line, `handle.done()` whether it ended,
    `handle.cancel()` asks it to stop (the units in flight are committed), and
    `handle.result(timeout)` waits for its RunSummary, or raises its error. Arguments as run().

    >>> handle = spotbatch.start(spec)  # doctest: +SKIP
    >>> handle.cancel()  # doctest: +SKIP
    >>> handle.result(timeout=600).stopped  # doctest: +SKIP
    'cancelled'
    """
    from pipelines.background import start as start_spec

    return start_spec(spec, address=address, new_run=new_run, verbose=verbose)


def status(output: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """How far the run on `output` has come, as `spotbatch status --json` prints it: units
    planned, committed and failed, rows, tokens, errors by class, and why it stopped early.
    `storage_options` are fsspec's, for a remote output (credentials are never written down).
    Raises OutputError when `output` holds no spotbatch run.

    >>> s = spotbatch.status(output)
    >>> s["units_total"], s["units_committed"], s["rows_total"], s["rows_done"], s["finished"]
    (1, 0, 3, 0, False)
    >>> spotbatch.status(spec.input.paths[0])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    spotbatch.errors.OutputError: no spotbatch run at .../input (no _spotbatch/manifest.json)
    """
    from pipelines.store.status import run_status

    return run_status(output, storage_options).to_json()


def report(output: str, compare: str | None = None, plot: str | None = None,
           estimate: str | None = None) -> dict[str, Any]:
    """What the run on `output` cost, as `spotbatch report --json` prints it: the cost ledger's
    summary ($ total and split into load, useful, idle and wasted; $ per 1M tokens; a reference
    price's comparison), its status, tokens/s over time. With `compare` (another output), both,
    and how their specs differ; `plot` also draws the cost split and tokens/s to that PNG file;
    `estimate` (a file `spotbatch estimate --json` wrote before the run) adds, under "estimate",
    its tokens, seconds and $ against the actual ones, with the error of each.

    >>> cost = spotbatch.report(output)
    >>> cost["total_usd"], cost["input_tokens"], cost["status"]["units_committed"]
    (0, 0, 0)
    """
    from jobs.report import report_data

    return report_data(output, compare=compare, plot=plot, estimate=estimate)


def export(output: str, fmt: str, to: str, *, include_truncated: bool = False,
           storage_options: dict[str, Any] | None = None, overrides: list[str] | None = None,
           partial: bool = False) -> dict[str, int]:
    """Write the results on `output` to the file `to`, in `fmt`: "openai-batch" (with failed rows
    in `<to minus .jsonl>.errors.jsonl`), "anthropic-batch", "chat-jsonl" (training data) or
    "pairs-parquet". Returns counts: rows, written, errors, skipped. A file that exists is never
    overwritten (OutputError), and an unfinished run is refused unless `partial`.
    `overrides` are `--set KEY=VALUE` texts for credentials the output does not keep.

    >>> import tempfile
    >>> to = f"{tempfile.mkdtemp()}/train.jsonl"
    >>> spotbatch.export(output, "chat-jsonl", to)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    spotbatch.errors.OutputError: ... is not finished (1 of 1 units pending): ... export what is there with --partial
    >>> spotbatch.export(output, "chat-jsonl", to, partial=True)  # doctest: +SKIP
    {'rows': 0, 'written': 0, 'errors': 0, 'skipped': 0}
    """
    from pipelines.formats.export import ExportRequest
    from pipelines.formats.export import export as export_output

    return export_output(ExportRequest(output, fmt, to, include_truncated=include_truncated,
                                       storage_options=storage_options, overrides=list(overrides or []),
                                       partial=partial))


def cancel(output: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Ask every run working on `output` (in any process, on any machine) to stop, as `spotbatch
    cancel` does: each takes no new unit, commits the units in flight and ends with `stopped:
    cancelled`; running the same spec again resumes. Returns the ids of the runs asked (none:
    nothing was running). A run of this process started with start() can also be stopped with
    its handle's cancel().

    >>> spotbatch.cancel(output)
    []
    """
    from pipelines.stops.stopping import cancel as cancel_runs

    return cancel_runs(output, storage_options)


def release_engines() -> int:
    """Let this process's warm engines go now, instead of after `compute.keep_warm_seconds` with no
    work (an interactive Python keeps a run's engines for the next run); returns how many engine
    actors were released.

    >>> spotbatch.release_engines()
    0
    """
    from pipelines.run import release_engines as release

    return release()


def estimate(spec: PipelineSpec, *, by: str | None = None, references: list[str] | tuple[str, ...] = (),
             instance_types: list[str] | None = None, sample_rows: int = 20_000,
             calibrate: int | None = None, address: str | None = None) -> Estimate:
    """What running `spec` would take and cost, before any GPU is bought, as `spotbatch estimate`
    prints it: the work (rows, units, prompt tokens counted with the model's own tokenizer and
    chat template, duplicates the dedup answers, output tokens expected), each instance type of
    the price catalog in each market (engines, time, $ with load and spot waste, $ per 1M
    tokens), the `references`' batch prices on the same tokens, and the cheapest option that
    meets `by` (or compute.deadline). An input over `sample_rows` rows is sampled, and says so.
    Writes nothing to the output and starts no engine; with `calibrate=N`, first runs about N
    rows sampled over the input on one real engine (on the Ray cluster at `address`), apart from
    the output, so this model's measured speed and output length decide.

    >>> est = spotbatch.estimate(spec, references=["gpt-4o-mini"], by="3h")
    >>> est.work.rows, est.work.exact, est.work.prompt_tokens > 0
    (3, True, True)
    >>> est.recommendation.option is not None, est.references[0].price.provider
    (True, 'openai')
    >>> spotbatch.estimate(spec, references=["gpt-9"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    spotbatch.errors.PriceError: no batch price for reference model 'gpt-9'; known: ...
    """
    from pipelines.estimate import Ask
    from pipelines.estimate import estimate as estimate_spec

    return estimate_spec(spec, Ask(by=by, references=tuple(references), instance_types=tuple(instance_types or ()),
                                   sample_rows=sample_rows, calibrate_rows=calibrate, address=address))


def serve(config: str, store: str, *, port: int = 8000, host: str = "127.0.0.1", address: str | None = None) -> None:
    """Serve OpenAI's Files and Batches API (`spotbatch serve`) until interrupted: `config` is a
    serve.yaml (the model names requests use, and the spotbatch models that answer them), `store`
    a folder or an s3:// prefix where the files, the batches and their runs live. Listens on
    loopback unless `host` says otherwise; API keys as docs/guide/serve.md says.

    >>> spotbatch.serve("examples/serve.yaml", "serve-store/", port=8000)  # doctest: +SKIP
    """
    from server.app import serve as serve_api

    serve_api(config, store, port=port, host=host, address=address)
