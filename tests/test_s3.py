"""The commit protocol and input listing on a real S3 server on loopback (moto_server)."""

import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from pipelines.planning.inputs import list_shards
from pipelines.spec import InputSpec
from pipelines.store.output import OutputStore
from pipelines.store.records import Records

pytestmark = pytest.mark.s3


@pytest.fixture
def prefix(s3_server):
    return f"s3://spotbatch/{uuid.uuid4().hex[:8]}"


def test_a_unit_commits_at_most_once_on_s3(s3_server, prefix):
    store = OutputStore(f"{prefix}/out", s3_server)
    first = pa.table({"id": [1, 2], "output": ["first", "first"]})
    second = pa.table({"id": [1, 2], "output": ["second", "second"]})
    assert store.commit("00000-a", first, {"rows": 2}) is True
    assert store.commit("00000-a", second, {"rows": 2}) is False  # conditional put refused
    fs = s3fs.S3FileSystem(**s3_server)
    with fs.open(f"{prefix}/out/part-00000-a.parquet", "rb") as fh:
        assert pq.read_table(fh).column("output").to_pylist() == ["first", "first"]
    assert store.committed_units() == {"00000-a"}
    assert store.unit_stats("00000-a") == {"rows": 2}


def test_manifest_and_attempts_on_s3(s3_server, prefix):
    store = OutputStore(f"{prefix}/out", s3_server)
    assert store.create_manifest({"fingerprint": "a"})["fingerprint"] == "a"
    assert store.create_manifest({"fingerprint": "b"})["fingerprint"] == "a"
    records = Records(store)
    seen = records.unit_attempts("u1")
    attempt = records.claim_attempt("u1", seen, {"node": "n1"})
    assert records.claim_attempt("u1", seen, {"node": "n2"}) is None  # the same number: refused by S3
    assert records.claim_attempt("u1", records.unit_attempts("u1"), {"node": "n2"}) is not None
    records.end_attempt("u1", attempt, {"outcome": "committed"})
    tries = records.attempts()["u1"]
    assert len(tries) == 2 and sum("end" in t for t in tries.values()) == 1


def test_input_shards_are_listed_from_s3_with_etags(s3_server, prefix):
    fs = s3fs.S3FileSystem(**s3_server)
    for i in range(2):
        with fs.open(f"{prefix}/in/part-{i}.parquet", "wb") as fh:
            pq.write_table(pa.table({"id": [i], "text": ["hello"]}), fh)
    fs.pipe(f"{prefix}/in/_SUCCESS", b"")
    shards = list_shards(InputSpec(paths=f"{prefix}/in/", prompt_column="text", storage_options=s3_server))
    assert [s.path for s in shards] == [f"{prefix}/in/part-0.parquet", f"{prefix}/in/part-1.parquet"]
    assert all(s.version.strip('"') and s.num_rows == 1 for s in shards)


def test_a_new_runs_move_takes_nested_records_along(s3_server, prefix):
    """Attempts are folders of folders (attempts/<unit>/<n>.start.json): on S3 each object moves."""
    store = OutputStore(f"{prefix}/out", s3_server)
    store.create_manifest({"fingerprint": "fp"})
    records = Records(store)
    attempt = records.claim_attempt("u1", {}, {"run_id": "run"})
    records.end_attempt("u1", attempt, {"outcome": "committed"})
    records.run_record("run", {"ended_at": 1.0})
    moved = store.supersede("fp")
    assert Records(store).attempts() == {} and Records(store).runs() == {}
    fs = s3fs.S3FileSystem(**s3_server)
    assert fs.exists(f"{moved}/attempts/u1/000000.end.json") and fs.exists(f"{moved}/runs/run.json")


def test_an_export_to_s3_streams_its_upload_and_spools_nothing_to_local_disk(s3_server, prefix, monkeypatch):
    """An export is written once and never resent: it goes straight into an exclusive upload
    (nothing held in memory or on this machine's disk), lands whole when complete, and nothing
    lands when the writer fails. A second export to the name is refused."""
    import tempfile

    from pipelines.store.new_file import new_file

    def no_spool(*args, **kwargs):
        raise AssertionError("an export was spooled to local disk before its upload")
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", no_spool)
    fs = s3fs.S3FileSystem(**s3_server)
    path, failed = f"{prefix}/exports/answers.jsonl", f"{prefix}/exports/failed.jsonl"
    line = '{"id": 1, "answer": "' + "x" * 1000 + '"}\n'
    with new_file(fs, path) as fh:
        for _ in range(7000):  # 7 MB: past s3fs's first part, so the upload is in flight while written
            fh.write(line)
    with pytest.raises(RuntimeError):
        with new_file(fs, failed) as fh:
            fh.write(line * 6000)
            raise RuntimeError("the export died midway")
    with pytest.raises(FileExistsError):
        with new_file(fs, path) as fh:
            fh.write("another")
    assert fs.cat_file(path) == (line * 7000).encode() and not fs.exists(failed)
