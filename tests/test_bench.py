"""`spotbatch bench` runs end to end (tiny model, a few prompts): each runner's figures and the
JSON last line. Not a timing test: the figures themselves come from a full `spotbatch bench`."""

import json

import pytest

from tests.helpers import spotbatch

pytestmark = pytest.mark.engine


def test_bench_prints_figures_and_ends_with_its_json(tmp_path, tiny_model):
    out = tmp_path / "bench.json"
    # long_tail only: the tiny model's 512-token vocabulary makes the shared system prompt
    # longer than its context (SmolLM2, the real benchmark's model, reads it in ~600 tokens).
    proc = spotbatch("bench", "--prompts", "6", "--sets", "long_tail",
                     "--runners", "plain_vllm", "spotbatch", "--model", str(tiny_model), "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last == json.loads(out.read_text())
    for name in ("long_tail",):
        entry = last["sets"][name]
        plain, ours = entry["runners"]["plain_vllm"], entry["runners"]["spotbatch"]
        assert plain["requests"] == ours["requests"] == 6
        assert plain["output_tokens"] > 0 and ours["output_tokens"] > 0
        assert 0 < ours["busy_fraction"] <= 1.0
        assert ours["startup_seconds"] > 0 and ours["generate_seconds"] > 0
        assert entry["ratios"]["spotbatch"]["steady_state"] > 0 and len(entry["rounds"]) == 1
    assert "steady state x" in proc.stdout


def test_adhoc_bench_times_each_batch_against_plain_vllm(tmp_path, tiny_model):
    out = tmp_path / "adhoc.json"
    proc = spotbatch("bench", "--adhoc", "--model", str(tiny_model), "--batches", "2", "--prompts", "2",
                     "--max-tokens", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert [b["batch"] for b in figures["batches"]] == [1, 2]
    first, second = figures["batches"]
    assert first["goal_seconds"] == 2.0 and second["goal_seconds"] == 1.5  # start-up + generate, then warm
    assert first["plain_vllm_seconds"] == figures["plain_vllm"]["first_batch_from_start"]
    assert second["plain_vllm_seconds"] == figures["plain_vllm"]["batch_seconds"][1]
    for b in (first, second):
        assert b["spotbatch_seconds"] > 0 and b["gap_seconds"] == b["spotbatch_seconds"] - b["plain_vllm_seconds"]
    # the second batch ran on the first one's engine: far faster than the first, which loaded it
    assert second["spotbatch_seconds"] < first["spotbatch_seconds"] / 2
    assert "batch 2: spotbatch" in proc.stdout and "warm generate" in proc.stdout
    # The default a user gets: two short prompts run eager, and plain vLLM was given the same.
    assert figures["enforce_eager"] is True and figures["compile_choice"].startswith("eager: about")
    # The first batch again, Ray up and the engines released: a new engine loads, Ray does not start.
    again = figures["first_batch_ray_up"]
    assert again["ray_already_up"] and again["plain_vllm_seconds"] == first["plain_vllm_seconds"]
    assert not again["startup"]["warm_engine"] and again["startup"]["model_load"] > 0
    assert again["startup"]["ray"] < first["startup"]["ray"]
    # And in a fresh process that joins a Ray kept by `spotbatch up`: it connects, not starts.
    kept = figures["first_batch_kept_ray"]
    assert kept["kept_ray"] and kept["plain_vllm_seconds"] == first["plain_vllm_seconds"]
    assert not kept["startup"]["warm_engine"] and kept["startup"]["model_load"] > 0
    assert kept["startup"]["ray"] < first["startup"]["ray"]
    assert "joining a kept Ray" in proc.stdout


def test_bench_engine_settings_carry_no_cpu_assumption(monkeypatch):
    """On a GPU the runners get no CPU thread settings: the same code, another environment."""
    import torch

    from jobs.bench.common import cpu_env

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "OMP_NUM_THREADS" not in cpu_env() and "VLLM_CPU_KVCACHE_SPACE" not in cpu_env()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cpu_env()["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_rounds_report_the_median_ratio_of_neighbouring_runs():
    from jobs.bench.main import median_ratios, ratios

    def runner(steady, e2e):
        return {"tokens_per_second_steady": steady, "tokens_per_second_end_to_end": e2e}

    rounds = [ratios({"plain_vllm": runner(100, 80), "spotbatch": runner(95, 76)}),
              ratios({"plain_vllm": runner(90, 70), "spotbatch": runner(81, 70)}),
              ratios({"plain_vllm": runner(110, 90), "spotbatch": runner(99, 81)}),
              ratios({"plain_vllm": {"error": "x"}, "spotbatch": runner(1, 1)})]  # a failed round has no ratio
    assert [sorted(r) for r in rounds] == [["spotbatch"]] * 3 + [[]]
    median = median_ratios(rounds)
    assert median["spotbatch"]["steady_state"] == pytest.approx(0.9)
    assert median["spotbatch"]["end_to_end"] == pytest.approx(0.95)


def test_ray_start_bench_times_rays_own_steps_and_the_cpu_of_each_process():
    """It reads Ray's start through Node's methods: a Ray that renamed them would time nothing."""
    import subprocess
    import sys

    from jobs.bench.ray_start import STEPS

    # in a process of its own, as the bench runs each round: this one may be a Ray driver already
    out = subprocess.run([sys.executable, "-m", "jobs.bench.ray_start", "--one", "--settle", "0.5"],
                         capture_output=True, text=True, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert set(figures["steps"]) == {*STEPS, "connect"}
    starts = [figures["steps"][s][0] for s in (*STEPS, "connect")]
    assert starts == sorted(starts) and figures["init_seconds"] >= figures["steps"]["connect"][1] - 0.01
    assert "raylet" in figures["cpu_seconds"] and figures["cpu_seconds_total"] > 0
