import json

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


def test_a_look_alike_of_our_folder_names_is_not_ours(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis_spotbatch").write_text("mine")
    (tmp_path / "out" / "notes.staging").write_text("mine too")
    with pytest.raises(OutputError, match="not a spotbatch run"):
        OutputStore(str(tmp_path / "out")).check_is_ours()


class IgnoresConditions(OutputStore):
    """A store that overwrites where it should refuse, as some S3-compatible stores do."""

    def _create(self, path, data):
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)


def test_a_store_that_ignores_conditional_writes_is_refused_by_name(tmp_path):
    OutputStore(str(tmp_path / "ok")).check_exclusive_create()  # a file system refuses: fine
    with pytest.raises(OutputError, match="did not refuse a second create"):
        IgnoresConditions(str(tmp_path / "bad")).check_exclusive_create()
    assert not list((tmp_path / "bad").rglob("*.*"))  # the probe's markers are gone


@pytest.mark.parametrize("error, expected", [
    ({"Code": "PreconditionFailed", "Condition": "If-None-Match"}, True),  # AWS
    ({"Code": "PreconditionFailed"}, True),  # a 412 without the Condition
    ({"Code": "ConditionalRequestConflict"}, True),  # 409
    ({"Code": "SlowDown"}, False),
    ({"Code": "InternalError"}, False),
])
def test_every_shape_of_already_exists_is_read_as_exists(error, expected):
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    from pipelines.store.output import already_exists

    status = {"ConditionalRequestConflict": 409, "PreconditionFailed": 412}.get(error["Code"], 503)
    boto = ClientError({"Error": {**error, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")
    assert already_exists(translate_boto_error(boto)) is expected  # as s3fs raises it


def test_an_interrupted_new_run_is_finished_by_the_next_one(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    store.create_manifest({"fingerprint": "old"})
    store.commit("u1", table(2, "old"), {})
    store.put("_spotbatch/superseding.json", b'{"dest": "_spotbatch/superseded/old-1"}')
    (tmp_path / "out" / "_spotbatch" / "superseded" / "old-1").mkdir(parents=True)  # the move had begun
    store.fs.mv(store._path("_spotbatch/manifest.json"), store._path("_spotbatch/superseded/old-1/manifest.json"))
    store.fs.rm(store._path("_spotbatch/fingerprint"))
    store.check_is_ours()  # the old run's parts without a manifest: a move under way, still ours
    assert store.finish_supersede().endswith("_spotbatch/superseded/old-1")
    assert store.committed_units() == set() and store.fingerprint() is None
    assert (tmp_path / "out" / "_spotbatch" / "superseded" / "old-1" / "part-u1.parquet").exists()


@pytest.mark.parametrize("unit_id", ["../../x", "a/b", "", "..", "x\\n"])
def test_a_tampered_manifest_is_refused_and_nothing_is_written_outside(tmp_path, unit_id):
    out = tmp_path / "deep" / "out"
    store = OutputStore(str(out))
    store.create_manifest({"fingerprint": "f", "units": [{"unit_id": "00000-ok"}]})
    manifest = (out / "_spotbatch" / "manifest.json")
    data = json.loads(manifest.read_text())
    data["units"].append({"unit_id": unit_id})
    manifest.write_text(json.dumps(data))
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(OutputError, match="manifest.json names a unit"):
        OutputStore(str(out)).read_manifest()
    with pytest.raises(OutputError, match="leads outside the output"):
        store.create("_spotbatch/attempts/../../../x.json", b"{}")
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_retry_failed_on_a_store_without_conditional_replace_is_refused_before_anything_runs():
    """run --retry-failed merges rows into committed results with put-if-version; a store that
    has none (here fsspec's memory store, as GCS without If-Match) is refused by name at once,
    not at the first merge mid-run."""
    import uuid

    from pipelines.retry import retry_failed

    url = f"memory://retry-{uuid.uuid4().hex[:8]}/out"
    OutputStore(url).create_manifest({"fingerprint": "fp", "spec": {"output": {"path": url}}, "units": []})
    with pytest.raises(OutputError, match="offers no conditional replace.*Nothing was run"):
        retry_failed(url)
