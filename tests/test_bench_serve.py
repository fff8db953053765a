"""`spotbatch bench --serve` (jobs/bench/serve.py) without an engine: its flags reach the bench,
and the medians, the difference per batch and the report are what the rounds measured. The
figures themselves come from a real run of it (docs/benchmarks.md, Serving)."""

import json

import pytest

from jobs.bench import serve
from jobs.cli import main


def round_of(run: float, server: float) -> dict:
    steps = {"upload": 0.01, "create": 0.01, "validate_and_queue": 0.02, "run": run + 0.1,
             "finalize_and_poll": server - run - 0.15, "download": 0.01}
    return {"run": {"seconds": run, "model_loads": 0}, "server": {"seconds": server, "model_loads": 0, "steps": steps}}


def in_a_row(batches: int) -> dict:
    memory = {"at_start": {"rss_mb": 400.0, "peak_rss_mb": 400.0}, "peak_reset": True,
              "after_10": {"rss_mb": 410.0, "peak_rss_mb": 420.0},
              f"after_{batches}": {"rss_mb": 411.0, "peak_rss_mb": 441.0}}
    return {"batches": batches, "lines_each": 4, "model_loads": 0, "median_batch_seconds": 1.0, "memory": memory,
            "peak_ratio_last_to_10": 441.0 / 420.0}


def test_bench_serve_takes_its_flags_and_writes_the_figures_it_prints(tmp_path, monkeypatch, capsys):
    seen = []

    def measured(args):  # the engine's part: rounds of A and B as a real bench returns them
        seen.append(args)
        rounds = [round_of(10.0, 11.5), round_of(12.0, 12.5), round_of(11.0, 14.0)]
        return {"side_by_side": {"lines": args.lines, "poll_seconds": args.poll, "rounds": rounds,
                                 **serve.compare(rounds)}, "in_a_row": in_a_row(args.batches)}

    monkeypatch.setattr(serve, "bench", measured)
    out = tmp_path / "serve.json"
    assert main(["bench", "--serve", "--lines", "6", "--rounds", "3", "--batches", "12", "--poll", "0.25",
                 "--out", str(out)]) == 0
    (args,) = seen
    assert (args.lines, args.rounds, args.batches, args.small_lines, args.poll) == (6, 3, 12, 4, 0.25)
    figures = json.loads(out.read_text())
    side = figures["side_by_side"]
    # medians of each column, and the median of the per-round differences (1.5, 0.5, 3.0), not their difference
    assert (side["run_seconds"], side["server_seconds"], side["added_seconds"]) == (11.0, 12.5, 1.5)
    assert side["server_steps"]["upload"] == 0.01 and side["goal_seconds"] == 2.0
    assert side["outside_run_seconds"] == pytest.approx(1.4)  # B's seconds minus its run (1.4, 0.4, 2.9): median
    printed = capsys.readouterr().out
    assert "spotbatch run 11.00 s" in printed and "+1.50 s per batch (goal <= 2 s: met)" in printed
    assert "outside its run 1.40 s" in printed
    assert "12 batches of 4 lines in a row: 0 model loads" in printed
    assert "RSS after 10 410 MB (peak 420), after 12 411 MB (peak 441): peak x1.050" in printed


def test_bench_serve_defaults_are_the_issues_sizes():
    args = serve.parse([])
    assert (args.lines, args.batches, args.small_lines, args.out) == (48, 50, 4, "spotbatch-bench-serve.json")


def test_the_served_spec_and_the_runs_spec_are_one_engine(tmp_path):
    """A (`spotbatch run`) runs the spec the server builds for the same file: the same model,
    sampling and compute, so both use the one warm engine and the comparison is of the server."""
    from pipelines.spec import PipelineSpec

    config = serve.serve_config()
    jsonl = serve.write_jsonl(tmp_path / "b.jsonl", serve.chat_lines(3, 8, "t"))
    spec = serve.run_spec(config, jsonl, tmp_path / "out")
    assert isinstance(spec, PipelineSpec) and spec.input.kind == "openai_batch"
    assert spec.compute.keep_warm_seconds == config.keep_warm_seconds and spec.compute.actors == 1
    assert [json.loads(line)["body"]["max_completion_tokens"] for line in jsonl.read_text().splitlines()] == [8] * 3
