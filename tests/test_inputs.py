"""Bad input is refused before any engine starts, with a message naming the problem."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.planning.inputs import InputError, check_unique_ids, list_shards
from pipelines.spec import InputSpec
from tests.conftest import write_shards

ROWS = [{"id": i, "text": f"prompt {i}"} for i in range(10)]


def spec(paths, **kw) -> InputSpec:
    return InputSpec(paths=paths, prompt_column=kw.pop("prompt_column", "text"), **kw)


def test_lists_sorted_shards_with_footer_facts(tmp_path):
    write_shards(tmp_path / "in", ROWS, shards=3)
    shards = list_shards(spec(str(tmp_path / "in")))
    assert [s.path.rsplit("/", 1)[-1] for s in shards] == [f"shard-00{i}.parquet" for i in range(3)]
    assert sum(s.num_rows for s in shards) == 10
    assert all(s.prompt_bytes > 0 and s.size > 0 and s.version for s in shards)


def test_glob_and_hidden_files(tmp_path):
    write_shards(tmp_path / "in", ROWS, shards=2)
    (tmp_path / "in" / "_SUCCESS").write_text("")
    (tmp_path / "in" / ".shard-000.parquet.crc").write_text("x")
    assert len(list_shards(spec(str(tmp_path / "in")))) == 2
    assert len(list_shards(spec(str(tmp_path / "in" / "*-001.parquet")))) == 1


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="input path does not exist: .*nowhere"):
        list_shards(spec(str(tmp_path / "nowhere")))


def test_no_parquet_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no Parquet files under .*empty"):
        list_shards(spec(str(tmp_path / "empty")))
    with pytest.raises(InputError, match="no Parquet files under"):
        list_shards(spec(str(tmp_path / "*.parquet")))


def test_non_parquet_file_among_shards(tmp_path):
    write_shards(tmp_path / "in", ROWS, shards=2)
    (tmp_path / "in" / "notes.csv").write_text("id,text\n1,a\n")
    with pytest.raises(InputError, match="not a Parquet file: .*notes.csv"):
        list_shards(spec(str(tmp_path / "in")))


def test_missing_id_column_lists_the_columns(tmp_path):
    write_shards(tmp_path / "in", ROWS, shards=1)
    with pytest.raises(InputError) as err:
        list_shards(spec(str(tmp_path / "in"), id_column="doc_id"))
    assert "no column 'doc_id'" in str(err.value) and "its columns are: id, text" in str(err.value)


def test_missing_prompt_and_template_columns(tmp_path):
    write_shards(tmp_path / "in", ROWS, shards=1)
    with pytest.raises(InputError, match="no column 'body'; its columns are: id, text"):
        list_shards(spec(str(tmp_path / "in"), prompt_column="body"))
    with pytest.raises(InputError, match="no column 'title'"):
        list_shards(InputSpec(paths=[str(tmp_path / "in")], template="{title}: {text}"))


def test_id_type_must_agree_across_shards(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "text": ["a", "b"]}), folder / "a.parquet")
    pq.write_table(pa.table({"id": ["3", "4"], "text": ["c", "d"]}), folder / "b.parquet")
    with pytest.raises(InputError, match="column 'id' is string in .*b.parquet but int64 in .*a.parquet"):
        list_shards(spec(str(folder)))


def test_duplicate_ids_across_shards(tmp_path):
    rows = ROWS + [{"id": 7, "text": "again"}]
    write_shards(tmp_path / "in", rows, shards=3)
    s = spec(str(tmp_path / "in"))
    with pytest.raises(InputError, match="duplicate id 7 in column 'id'"):
        check_unique_ids(s, list_shards(s))


def test_unique_string_ids_pass(tmp_path):
    write_shards(tmp_path / "in", [{"id": f"r{i}", "text": "x"} for i in range(50)], shards=4)
    s = spec(str(tmp_path / "in"))
    check_unique_ids(s, list_shards(s))


def test_null_ids_are_refused(tmp_path):
    write_shards(tmp_path / "in", [{"id": None, "text": "x"}, {"id": 1, "text": "y"}], shards=1,
                 schema=pa.schema([("id", pa.int64()), ("text", pa.string())]))
    s = spec(str(tmp_path / "in"))
    with pytest.raises(InputError, match="1 null ids"):
        check_unique_ids(s, list_shards(s))


def test_hidden_folders_below_the_input_path_are_never_read(tmp_path):
    """Spark's _temporary/ and our own _spotbatch/ hold Parquet too: any path part below the
    input path that starts with _ or . is skipped, as pyarrow's dataset reader does."""
    write_shards(tmp_path / "in", ROWS, shards=2)
    for hidden in ("_temporary/0/task_1", "_spotbatch/input", ".cache"):
        write_shards(tmp_path / "in" / hidden, ROWS, shards=1)
    shards = list_shards(spec(str(tmp_path / "in")))
    assert [s.path.rsplit("/", 1)[-1] for s in shards] == ["shard-000.parquet", "shard-001.parquet"]
    assert len(list_shards(spec(str(tmp_path / "in" / "*")))) == 2  # a glob too


def test_a_unit_reads_only_the_version_it_was_planned_on(tmp_path):
    from pipelines.planning.units import make_plan
    from pipelines.spec import PipelineSpec
    from pipelines.stream.unit_rows import (
        ERROR,
        INPUT_CHANGED_ROWS,
        UNIT_ROWS,
        UNITS,
        InputChanged,
        read_units,
        unit_rows,
    )

    write_shards(tmp_path / "in", ROWS, shards=1)
    full = PipelineSpec(input={"paths": str(tmp_path / "in"), "prompt_column": "text"},
                        model={"name": "tiny-random"}, output={"path": str(tmp_path / "out")})
    (unit,) = make_plan(full, list_shards(full.input)).units
    assert unit_rows(unit.descriptor(), full).num_rows == 10
    write_shards(tmp_path / "in", [{**r, "text": "replaced"} for r in ROWS], shards=1)  # same name, new content
    with pytest.raises(InputChanged, match="input_changed: .*shard-000.parquet changed since the run was planned"):
        unit_rows(unit.descriptor(), full)
    marker = read_units(pa.Table.from_pylist([{UNITS: [unit.descriptor()]}]), full.model_dump(mode="json"))
    assert marker.column(UNIT_ROWS).to_pylist() == [INPUT_CHANGED_ROWS]
    assert "changed since" in marker.column(ERROR)[0].as_py()


def test_a_unit_whose_rows_cannot_be_read_becomes_a_marker_not_a_failed_run(tmp_path, monkeypatch):
    from pipelines.planning.units import make_plan
    from pipelines.spec import PipelineSpec
    from pipelines.stream import unit_rows as stage
    from pipelines.stream.unit_rows import UNITS

    monkeypatch.setattr(stage, "READ_BACKOFF_SECONDS", 0.0)
    write_shards(tmp_path / "in", ROWS, shards=1)
    full = PipelineSpec(input={"paths": str(tmp_path / "in"), "prompt_column": "text"},
                        model={"name": "tiny-random"}, output={"path": str(tmp_path / "out")})
    (unit,) = make_plan(full, list_shards(full.input)).units
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) < 3:
            raise OSError("503 Service Unavailable")
        return real(*args)

    real = stage.read_unit_rows
    monkeypatch.setattr(stage, "read_unit_rows", flaky)
    rows = stage.read_units(pa.Table.from_pylist([{UNITS: [unit.descriptor()]}]), full.model_dump(mode="json"))
    assert rows.num_rows == 10 and len(calls) == 3  # read again until it worked
    monkeypatch.setattr(stage, "read_unit_rows", lambda *a: (_ for _ in ()).throw(OSError("503 for good")))
    marker = stage.read_units(pa.Table.from_pylist([{UNITS: [unit.descriptor()]}]), full.model_dump(mode="json"))
    assert marker.column(stage.UNIT_ROWS).to_pylist() == [-1]
    assert marker.column(stage.ERROR)[0].as_py().startswith("storage_error while reading")
