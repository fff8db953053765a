"""spotbatch's lines go through the `spotbatch` logger (pipelines/log.py): a user's handler gets
them, setLevel(WARNING) silences them, and with nothing configured a script or a notebook sees
them as the CLI shows them. No print is left in the library but the programs' own output."""

import ast
import logging
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.log import NAME, ConsoleHandler

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("spotbatch", "operators", "pipelines", "cluster", "jobs", "server")
# Program output, printed on stdout: what a command was asked for, never a status line.
PROGRAM_OUTPUT = {
    "jobs/cli.py": {"format_summary(summary)", "json.dumps(status.to_json(), indent=1) if args.json else "
                    "format_status(status)", "f'{name}: {fetch(name, revision=args.revision)}'",
                    "json.dumps(est.to_json(), indent=1) if args.json else format_estimate(est)",
                    "key_hash(sys.stdin.readline().strip())"},
}
PROGRAMS = {  # whole programs whose output is what they were run for
    "jobs/report.py": "`spotbatch report`: the report",
    "jobs/demo.py": "`spotbatch demo`: its answers and the run's summary",
    "jobs/bench_plan.py": "a benchmark: its figures",
    "jobs/spec_reference.py": "the spec reference page it generates",
    "jobs/bench/": "the benchmarks (`spotbatch bench`): their figures and the steps they time",
}


def library_files():
    for folder in LIBRARY:
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if not any(name == p or (p.endswith("/") and name.startswith(p)) for p in PROGRAMS):
                yield name, ast.parse(path.read_text(), name)


def test_no_print_or_direct_write_is_left_in_the_library_but_program_output():
    found = []
    for name, tree in library_files():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Name) and node.func.id == "print":
                said = ast.unparse(node.args[0]) if node.args else ""
                if said not in PROGRAM_OUTPUT.get(name, set()):
                    found.append(f"{name}:{node.lineno}: print({said})")
            elif (isinstance(node.func, ast.Attribute) and node.func.attr == "write"
                  and ast.unparse(node.func.value) in ("sys.stdout", "sys.stderr")):
                found.append(f"{name}:{node.lineno}: {ast.unparse(node.func)}")
    assert not found, "use logging.getLogger('spotbatch.<part>') (pipelines/log.py):\n" + "\n".join(found)


def python(code: str) -> subprocess.CompletedProcess:
    """A fresh interpreter, as a script or a notebook starts: nothing configured logging."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_importing_the_library_configures_no_logging():
    done = python("import logging, pipelines.run, pipelines.formats.export, jobs.cli\n"
                  "ours = logging.getLogger('spotbatch')\n"
                  "print(logging.getLogger().handlers, [type(h).__name__ for h in ours.handlers], ours.level)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "['NullHandler']", "0"]


def test_with_nothing_configured_a_run_shows_its_lines_as_the_cli_does_and_warning_level_hides_them():
    show = ("import logging\nfrom pipelines.log import console\n{before}console()\n"
            "logging.getLogger('spotbatch.run').info('the earlier run moved')\n"
            "logging.getLogger('spotbatch.progress').info('3/4 rows')\n"
            "logging.getLogger('spotbatch.unit').warning('unit u: could not record it')\n")
    shown = python(show.format(before=""))
    assert shown.stdout == "spotbatch: the earlier run moved\nspotbatch progress: 3/4 rows\n", shown.stderr
    assert shown.stderr == "spotbatch: unit u: could not record it\n"
    quiet = python(show.format(before="logging.getLogger('spotbatch').setLevel(logging.WARNING)\n"))
    assert quiet.stdout == "" and quiet.stderr == "spotbatch: unit u: could not record it\n"


def test_a_users_own_configuration_is_left_as_it_is():
    done = python("import logging\n"
                  "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s %(message)s')\n"
                  "from pipelines.log import console\nconsole()\n"
                  "logging.getLogger('spotbatch.run').info('the earlier run moved')\n")
    assert done.stdout == "" and done.stderr == "INFO spotbatch.run the earlier run moved\n"  # once, in its format


def test_a_line_while_a_progress_bar_is_drawn_clears_it_and_draws_it_again(capsys):
    from tqdm import tqdm

    logger = logging.getLogger("spotbatch.test")
    handler = ConsoleHandler()
    logger.addHandler(handler)
    try:
        bar = tqdm(total=10, file=sys.stderr, ascii=True, bar_format="{n}/{total}")
        bar.update(3)
        capsys.readouterr()
        logger.warning("a line")
        err = capsys.readouterr().err
        bar.close()
    finally:
        logger.removeHandler(handler)
    # cleared (a carriage return and blanks), the line, then the bar drawn again after it
    assert err.index("\r") < err.index("spotbatch: a line\n") < err.rindex("3/10")


# --- through a real run ---------------------------------------------------------------------

ROWS = 48


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def said(self, logger: str) -> list[str]:
        return [r.getMessage() for r in self.records if r.name == logger]


def spec(tmp_path: Path, name: str):
    from pipelines.spec import PipelineSpec

    if not (tmp_path / "in.parquet").exists():
        pq.write_table(pa.table({"id": list(range(ROWS)), "text": [f"prompt {i}" for i in range(ROWS)]}),
                       tmp_path / "in.parquet")
        entries = tmp_path / "cache" / "entries"
        entries.mkdir(parents=True)
        (entries / "0000-not-parquet.parquet").write_text("not parquet")  # each actor warns that it skips it
    return PipelineSpec.model_validate({
        "input": {"paths": str(tmp_path / "in.parquet"), "prompt_column": "text"},
        "model": {"name": "tiny-random", "max_model_len": 256, "enforce_eager": True},
        "sampling": {"max_tokens": 16},
        "cache": {"path": str(tmp_path / "cache")},
        "compute": {"keep_warm_seconds": 60, "tokens_per_unit": 40},  # the next test's run finds it warm
        "output": {"path": str(tmp_path / name)}})


@contextmanager
def logging_as_a_user_left_it(level: int = logging.NOTSET, handler: logging.Handler | None = None):
    """For the body: the root logger has no handler (pytest's own are set aside) and
    "spotbatch" only the NullHandler, `level` and `handler`; all as it was afterwards."""
    root, ours = logging.getLogger(), logging.getLogger(NAME)
    saved = root.handlers[:], ours.handlers[:], ours.level
    root.handlers.clear()
    ours.handlers[:] = [h for h in ours.handlers if isinstance(h, logging.NullHandler)] + ([handler] if handler else [])
    ours.setLevel(level)
    try:
        yield
    finally:
        root.handlers[:], ours.handlers[:] = saved[0], saved[1]
        ours.setLevel(saved[2])


@pytest.fixture(scope="module")
def warm_engines():
    from pipelines.run import release_engines

    yield
    release_engines()


@pytest.mark.engine
def test_a_users_handler_gets_the_runs_lines_and_its_actors_lines(tmp_path, ray_cluster, tiny_model,
                                                                   warm_engines, capsys):
    from pipelines.run import run

    lines = Lines()
    with logging_as_a_user_left_it(logging.INFO, lines):
        summary = run(spec(tmp_path, "first"), interactive=False)
    assert summary.finished
    assert any(m.startswith(f"{ROWS}/{ROWS} rows") for m in lines.said("spotbatch.progress")), lines.records
    assert any(m.startswith("Ray's and vLLM's logs: ") for m in lines.said("spotbatch.console"))
    # written by an engine actor in its Ray worker, logged again in this driver
    assert any("0000-not-parquet.parquet cannot be read, skipped" in m for m in lines.said("spotbatch.worker"))
    shown = capsys.readouterr()
    assert "spotbatch: " not in shown.out + shown.err  # the user's handler is where they go, not the console
    assert "spotbatch progress" not in shown.out + shown.err


@pytest.mark.engine
def test_with_nothing_configured_a_run_shows_its_lines_and_warning_level_silences_them(
        tmp_path, ray_cluster, tiny_model, warm_engines, capsys):
    from pipelines.run import run

    with logging_as_a_user_left_it():
        assert run(spec(tmp_path, "shown"), interactive=False).finished
    shown = capsys.readouterr()
    assert f"spotbatch progress: {ROWS}/{ROWS} rows" in shown.out
    assert "spotbatch: Ray's and vLLM's logs: " in shown.out
    with logging_as_a_user_left_it(logging.WARNING):
        assert run(spec(tmp_path, "silenced"), interactive=False).finished
    quiet = capsys.readouterr()
    assert "spotbatch progress" not in quiet.out + quiet.err and "logs: " not in quiet.out + quiet.err
