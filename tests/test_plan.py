from pipelines.planning.inputs import list_shards
from pipelines.planning.units import Plan, Unit, fingerprint, fingerprint_parts, make_plan, plan_units, units_in_flight
from pipelines.spec import PipelineSpec
from tests.conftest import write_shards


def make_spec(path, **sampling) -> PipelineSpec:
    return PipelineSpec(input={"paths": str(path), "prompt_column": "text"}, output={"path": "o"},
                        sampling=sampling or {})


def test_units_cover_every_row_once_and_evenly(tmp_path):
    # distinct 200-byte prompts (identical ones would be dictionary-encoded to almost nothing)
    write_shards(tmp_path, [{"id": i, "text": f"{i:04d}" + "x" * 196} for i in range(1000)], shards=3)
    spec = make_spec(tmp_path, max_tokens=100)
    shards = list_shards(spec.input)
    units = plan_units(shards, tokens_per_unit=10_000, max_tokens=100)
    for shard in shards:
        mine = [u for u in units if u.path == shard.path]
        assert mine[0].start == 0 and mine[-1].stop == shard.num_rows
        assert all(a.stop == b.start for a, b in zip(mine, mine[1:]))
        assert max(u.rows for u in mine) - min(u.rows for u in mine) <= 1
    # ~50 prompt tokens + 100 completion per row: at most ~66 rows per 10k-token unit,
    # and 334 rows split evenly into 6 units of ~56
    assert 50 <= max(u.rows for u in units) <= 66
    assert len({u.unit_id for u in units}) == len(units)


def test_plan_is_deterministic_and_round_trips(tmp_path):
    write_shards(tmp_path, [{"id": i, "text": "hi"} for i in range(100)], shards=2)
    spec = make_spec(tmp_path)
    a = make_plan(spec, list_shards(spec.input))
    b = make_plan(spec, list_shards(spec.input))
    assert a.to_json() == b.to_json()
    assert Plan.from_json(a.to_json()) == a
    assert a.input_rows == 100


def test_fingerprint_names_what_changed(tmp_path):
    write_shards(tmp_path, [{"id": i, "text": "hi"} for i in range(10)], shards=1)
    spec = make_spec(tmp_path)
    shards = list_shards(spec.input)
    base = fingerprint_parts(spec, shards)
    changed = spec.model_copy(deep=True)
    changed.sampling.temperature = 0.7
    changed.input.system_prompt = "Be brief."
    other = fingerprint_parts(changed, shards)
    assert {k for k in base if base[k] != other[k]} == {"sampling", "system prompt"}
    assert fingerprint(base) != fingerprint(other)
    # compute settings do not change answers, so they do not change the fingerprint
    scaled = spec.model_copy(deep=True)
    scaled.compute.actors = 8
    assert fingerprint_parts(scaled, shards) == base


def test_a_changed_input_file_changes_the_fingerprint(tmp_path):
    write_shards(tmp_path, [{"id": i, "text": "hi"} for i in range(10)], shards=1)
    spec = make_spec(tmp_path)
    before = fingerprint_parts(spec, list_shards(spec.input))
    write_shards(tmp_path, [{"id": i, "text": "a longer prompt"} for i in range(10)], shards=1)
    after = fingerprint_parts(spec, list_shards(spec.input))
    assert before["input files"] != after["input files"]


def test_units_in_flight_fill_the_engine_running_set_twice():
    def units(*rows):
        return [Unit(f"u{i}", "p", 0, n) for i, n in enumerate(rows)]

    spec = PipelineSpec(input={"paths": "x", "prompt_column": "t"}, output={"path": "o"})
    assert units_in_flight(spec, units(5000, 5000, 7)) == 2  # default-size units: one feeds the next
    assert units_in_flight(spec, units(40, 40, 40, 3)) == 13  # 2 * 256 / 40, the small last unit ignored
    assert units_in_flight(spec, units(1, 1)) == 16  # capped: a lost node takes no more
    small_engine = PipelineSpec(input={"paths": "x", "prompt_column": "t"}, output={"path": "o"},
                                model={"engine_kwargs": {"max_num_seqs": 32}})
    assert units_in_flight(small_engine, units(40, 40)) == 2
    fixed = PipelineSpec(input={"paths": "x", "prompt_column": "t"}, output={"path": "o"},
                         compute={"units_in_flight": 3})
    assert units_in_flight(fixed, units(1, 1)) == 3
    budgeted = PipelineSpec(input={"paths": "x", "prompt_column": "t"}, output={"path": "o"},
                            cost={"max_cost_usd": 5.0})
    assert units_in_flight(budgeted, units(1, 1)) == 2  # a budget can only stop units not yet started


def test_rotating_a_credential_changes_no_fingerprint(tmp_path):
    write_shards(tmp_path / "in", [{"id": i, "text": f"t {i}"} for i in range(4)], shards=1)

    def parts(secret: str) -> dict:
        spec = PipelineSpec(input={"paths": str(tmp_path / "in"), "prompt_column": "text",
                                   "storage_options": {"auto_mkdir": True}},
                            model={"name": "tiny-random"},
                            cache={"storage_options": {"secret": secret}},
                            output={"path": str(tmp_path / "out"), "storage_options": {"secret": secret}})
        return fingerprint_parts(spec, list_shards(spec.input))

    assert parts("old-key") == parts("new-key")
