"""The scale simulation (jobs/bench/scale.py) at a small size: what should stay flat as a run or
its cache grows does, asserted as ratios of counts, never absolute times. The full sizes (100k
units, 1,000 actors, 10M answers) are a benchmark: `spotbatch bench --scale --full`."""

import re

import pytest

from jobs.bench.s3_requests import S3RequestCounter, moto_server, storage_options
from jobs.bench.scale import S3Target, Sizes, marginal_requests, report_lines, scale_bench
from pipelines.cache.response_cache import FOOTER_BYTES_KEPT
from pipelines.stream.unit_blocks import block_sizes

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    work = tmp_path_factory.mktemp("scale")
    with moto_server() as endpoint, S3RequestCounter(endpoint) as counter:
        # Sizes that read the ratios in about two minutes; the figures' own sizes are a benchmark.
        sizes = Sizes(units=[300], actors=[10], cache_sizes=[10_000, 100_000], s3_units=[100, 200],
                      ray_data_units=[300], ray_data_baseline=False)
        figures = scale_bench(sizes, work, S3Target(storage_options(counter.endpoint), counter))
    print("\n".join(report_lines(figures)))
    return figures


def test_every_simulated_unit_is_committed_and_read_back(figures):
    (run,) = figures["units"]
    assert run["units"] == 300 and run["failed"] == 0, run["errors"]
    (plan,) = figures["plan"]
    assert plan["units"] == 300
    assert figures["ray_data"][0]["units"] == 300


def test_storage_requests_per_unit_do_not_grow_with_the_run(figures):
    small, large = figures["s3"]
    assert large["units"] == 2 * small["units"] and small["failed"] == large["failed"] == 0
    assert 0.8 <= large["requests_per_unit"] / small["requests_per_unit"] <= 1.2, (small, large)
    for kind in ("LIST", "GET", "PUT", "HEAD"):
        a, b = small["requests"].get(kind, 0) / small["units"], large["requests"].get(kind, 0) / large["units"]
        assert b <= 1.2 * a + 0.1, (kind, a, b)


def test_a_units_requests_once_the_fleet_has_started_are_the_difference_of_two_runs(figures):
    (m,) = figures["s3_marginal"]
    small, large = figures["s3"]
    assert (m["from_units"], m["to_units"]) == (small["units"], large["units"])
    assert 0 < m["requests_per_unit"] <= 1.2 * large["requests_per_unit"], (m, large)
    runs = [{"actors": 100, "units": 200, "requests": {"GET": 2600}},
            {"actors": 100, "units": 400, "requests": {"GET": 4600}}]
    (m,) = marginal_requests(runs)  # 10 a unit, and 600 for the fleet's start
    assert m["requests_per_unit"] == 10 and m["fleet_start_requests"] == 600


def test_a_lookup_reads_what_its_keys_need_not_what_the_cache_holds(figures):
    small, large = figures["cache"]
    assert large["answers"] == 10 * small["answers"]
    assert large["warm_files_opened"] <= 1.2 * small["warm_files_opened"]
    assert large["keys_in_memory"] == small["keys_in_memory"] == 0
    assert 0 < large["footer_bytes"] <= FOOTER_BYTES_KEPT


def test_ray_datas_blocks_grow_with_the_fleet_not_the_units():
    slots = 20
    counts = {n: len(block_sizes(n, slots)) for n in (10_000, 100_000, 1_000_000)}
    assert counts[1_000_000] <= 1.2 * counts[10_000], counts
    assert len(block_sizes(100_000, 2000)) > 5 * counts[100_000]  # a bigger fleet: more, smaller blocks


def test_a_fleets_beats_stay_at_a_fixed_rate_and_requests_are_priced(figures):
    rates = {b["actors"]: b["puts_per_second"] for b in figures["beats"]}
    assert rates[10] == 2 and rates[1000] <= 20, rates  # 1,000 actors at 5 s would be 200 PUT/s
    assert all(s["usd_per_1k_units"] > 0 for s in figures["s3"]) and figures["s3_prices"]["as_of"]


def test_a_run_without_options_is_small_and_the_full_sizes_say_how_long_they_take():
    """`spotbatch bench --scale` alone ran 28 minutes at the sizes of the scaling guide; now it takes the
    small ones, and the full ones are asked for by name, their time in the help."""
    from jobs.bench.scale import SIZES, parse
    from tests.helpers import spotbatch

    small, full = parse([]), parse(["--full"])
    assert (small.units, small.actors, small.cache_sizes) == (SIZES["small"]["units"], SIZES["small"]["actors"],
                                                             SIZES["small"]["cache_sizes"])
    assert max(small.units) <= 1000 and max(small.actors) <= 30 and max(small.cache_sizes) <= 100_000
    assert max(full.units) == 100 * max(small.units) and max(full.cache_sizes) == 100 * max(small.cache_sizes)
    assert parse(["--full", "--units", "50"]).units == [50]  # a size given outright wins
    shown = " ".join(spotbatch("bench", "--scale", "--help").stdout.split())
    assert "--full the sizes of docs/guide/scaling.md" in shown
    assert "about 3 hours on a 2-core machine, estimated" in shown


def test_each_step_is_said_as_it_starts_and_timed_when_it_ends():
    import io

    from jobs.bench.steps import Steps

    out = io.StringIO()
    steps = Steps("scale", out)
    with steps("plan: 1,000 units"):
        assert out.getvalue() == "scale: plan: 1,000 units ..."  # said before the work
    with pytest.raises(RuntimeError), steps("units: 1,000 units, 10 actors"):
        raise RuntimeError("a probe failed")
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"scale: plan: 1,000 units \.\.\. \d+\.\d s", lines[0])
    assert re.fullmatch(r"scale: units: 1,000 units, 10 actors \.\.\. failed after \d+\.\d s", lines[1])
    assert steps.done == 1


def test_the_simulation_prints_a_line_per_step_with_its_size_and_time(tmp_path):
    from tests.helpers import spotbatch

    proc = spotbatch("bench", "--scale", "--units", "20", "--actors", "2", "--cache-sizes", "",
                     "--ray-data-units", "", "--work", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("scale: units [20], actors [2], cache sizes []") and "--full" in lines[0]
    timed = [re.fullmatch(r"scale: (.+) \.\.\. \d+\.\d s", line) for line in lines[1:7]]
    assert [m.group(1) for m in timed if m] == [
        "input: 20 one-row units", "plan: 20 units", "units: 20 units, 2 actors", "status: 20 units' records",
        "ledger: 20 units' records", "report: 20 units' records"]
    assert lines[7].startswith("scale: 6 steps in ") and lines[8].startswith("plan            20 units")
