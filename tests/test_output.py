import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from pipelines.store.output import OutputError, OutputStore


def table(n: int, tag: str) -> pa.Table:
    return pa.table({"id": list(range(n)), "output": [tag] * n})


def test_a_unit_commits_at_most_once(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    assert store.commit("00000-a", table(3, "first"), {"rows": 3}) is True
    assert store.commit("00000-a", table(3, "second"), {"rows": 3}) is False
    assert ds.dataset(tmp_path / "out").to_table().column("output").to_pylist() == ["first"] * 3
    assert store.committed_units() == {"00000-a"}
    assert store.unit_stats("00000-a") == {"rows": 3}
    assert not list((tmp_path / "out" / ".staging").iterdir())


def test_readers_see_committed_units_only(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    store.create_manifest({"fingerprint": "f"})
    store.commit("u1", table(2, "x"), {})
    (tmp_path / "out" / ".staging").mkdir(exist_ok=True)
    (tmp_path / "out" / ".staging" / "u2-partial.parquet").write_bytes(b"half a file")
    assert ds.dataset(str(tmp_path / "out")).count_rows() == 2


def test_manifest_is_created_once(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    assert store.create_manifest({"fingerprint": "first"})["fingerprint"] == "first"
    assert store.create_manifest({"fingerprint": "second"})["fingerprint"] == "first"


def test_refuses_a_folder_that_is_not_a_spotbatch_run(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "my-results.parquet").write_bytes(b"mine")
    with pytest.raises(OutputError, match="already holds files that are not a spotbatch run"):
        OutputStore(str(tmp_path / "out")).check_is_ours()
    assert (tmp_path / "out" / "my-results.parquet").read_bytes() == b"mine"


def test_refuses_a_file_as_output(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        OutputStore(str(tmp_path / "out")).check_is_ours()


def test_new_and_empty_folders_are_fine(tmp_path):
    OutputStore(str(tmp_path / "new")).check_is_ours()
    (tmp_path / "empty").mkdir()
    OutputStore(str(tmp_path / "empty")).check_is_ours()


def test_a_folder_left_by_an_interrupted_new_run_is_still_ours(tmp_path):
    (tmp_path / "out" / "_spotbatch" / "superseded" / "f-1").mkdir(parents=True)
    OutputStore(str(tmp_path / "out")).check_is_ours()


def test_a_record_being_written_is_not_listed(tmp_path):
    # a status read during a run must not see a half-written record under a name no record has
    store = OutputStore(str(tmp_path / "out"))
    store.create("_spotbatch/attempts/u1/a1.start.json", b"{}")
    (tmp_path / "out" / "_spotbatch" / "attempts" / "u1" / "a1.end.json.5f3a.tmp").write_bytes(b'{"outc')
    assert store.find("_spotbatch/attempts") == ["_spotbatch/attempts/u1/a1.start.json"]
