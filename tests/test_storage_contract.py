"""Every promise of the storage interface (pipelines/store/storage/), on a local folder and on a
real S3 server on loopback, with faults injected where the stores differ: a write that fails,
a write that lands but whose answer is lost, and writers racing for one name."""

import os
import threading
import uuid

import pytest

from pipelines.store.storage import STAGED, open_storage

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def kind(request):
    return request.param


@pytest.fixture
def storage(kind, request, tmp_path):
    if kind == "local":
        return open_storage(str(tmp_path / "store"))
    options = request.getfixturevalue("s3_server")
    return open_storage(f"s3://spotbatch/contract-{uuid.uuid4().hex[:8]}", options)


class Lost(ConnectionError):
    """The connection dropped: the write may or may not have landed."""


def inject_put_fault(storage, monkeypatch, *, lands: bool):
    """Every write that makes a name exist fails once per call: before it lands (`lands` False)
    or after it landed, its answer lost (`lands` True). On a file system the write is the link
    or rename that makes the name; on S3 the PUT request."""
    if storage.fs.protocol == "file" or "file" in storage.fs.protocol:
        for name in ("link", "replace"):
            real = getattr(os, name)

            def fault(src, dst, real=real):
                if lands:
                    real(src, dst)
                raise Lost(f"{dst}: no answer")
            monkeypatch.setattr(os, name, fault)
        return
    real_sync, real_async = storage.fs.call_s3, storage.fs._call_s3

    def sync_fault(method, *args, **kwargs):
        if method == "put_object" and lands:
            real_sync(method, *args, **kwargs)
        if method == "put_object":
            raise Lost(f"{kwargs.get('Key')}: no answer")
        return real_sync(method, *args, **kwargs)

    async def async_fault(method, *args, **kwargs):
        if method == "put_object" and lands:
            await real_async(method, *args, **kwargs)
        if method == "put_object":
            raise Lost(f"{kwargs.get('Key')}: no answer")
        return await real_async(method, *args, **kwargs)
    monkeypatch.setattr(storage.fs, "call_s3", sync_fault)
    monkeypatch.setattr(storage.fs, "_call_s3", async_fault)


def leftovers(storage):
    return [p for p in storage.find(storage.root) if p.endswith(STAGED)]


# -- create-if-absent --------------------------------------------------------------------------
def test_create_makes_a_new_name_and_refuses_an_existing_one(storage):
    path = storage.path("a/one.json")
    storage.create(path, b"first")
    with pytest.raises(FileExistsError):
        storage.create(path, b"second")
    assert storage.read(path) == b"first"


def test_a_staged_create_lands_whole_on_leaving_and_refuses_an_existing_name(storage):
    path = storage.path("part-1.parquet")
    with storage.create_staged(path, stage_in=storage.path(".staging")) as fh:
        fh.write(b"x" * 1000)
        assert storage.read(path) is None  # not there until complete
    assert storage.read(path) == b"x" * 1000
    with pytest.raises(FileExistsError):
        with storage.create_staged(path, stage_in=storage.path(".staging")) as fh:
            fh.write(b"y")
    assert storage.read(path) == b"x" * 1000 and not leftovers(storage)


def test_a_staged_create_that_fails_midway_leaves_nothing(storage):
    path = storage.path("part-2.parquet")
    with pytest.raises(RuntimeError):
        with storage.create_staged(path) as fh:
            fh.write(b"half")
            raise RuntimeError("the writer died")
    assert storage.read(path) is None and not storage.exists(path) and not leftovers(storage)


def test_a_failed_create_leaves_nothing_and_raises_the_error(storage, monkeypatch):
    path = storage.path("a/failed.json")
    inject_put_fault(storage, monkeypatch, lands=False)
    with pytest.raises(Lost):
        storage.create(path, b"data")
    monkeypatch.undo()
    assert storage.read(path) is None and not leftovers(storage)
    storage.create(path, b"data")  # the name is still free
    assert storage.read(path) == b"data"


def test_a_create_whose_answer_was_lost_reads_as_exists_and_as_our_own_bytes(storage, monkeypatch):
    path = storage.path("a/landed.json")
    inject_put_fault(storage, monkeypatch, lands=True)
    try:
        storage.create(path, b"ours")
    except (FileExistsError, Lost):
        pass
    monkeypatch.undo()
    with pytest.raises(FileExistsError):  # the caller's retry
        storage.create(path, b"ours")
    assert storage.read(path) == b"ours"  # what tells the caller it was its own write


def test_of_two_racing_creates_exactly_one_wins(storage):
    path = storage.path("race/claim.json")
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def claim(who: str):
        barrier.wait()
        try:
            storage.create(path, who.encode())
            outcomes.append(who)
        except FileExistsError:
            outcomes.append("refused")
    threads = [threading.Thread(target=claim, args=(w,)) for w in ("a", "b")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1 and outcomes.count("refused") == 1
    assert storage.read(path) == winners[0].encode()


# -- put, versions ----------------------------------------------------------------------------
def test_put_replaces_whole_and_a_failed_put_keeps_the_old_bytes(storage, monkeypatch):
    path = storage.path("rec/beat.json")
    storage.put(path, b"one")
    storage.put(path, b"two")
    assert storage.read(path) == b"two"
    inject_put_fault(storage, monkeypatch, lands=False)
    with pytest.raises(Lost):
        storage.put(path, b"three")
    monkeypatch.undo()
    assert storage.read(path) == b"two" and not leftovers(storage)


def test_read_versioned_and_put_if_version(storage):
    path = storage.path("v/unit.bin")
    assert storage.read_versioned(path) is None
    storage.put(path, b"v1")
    data, version = storage.read_versioned(path)
    assert data == b"v1"
    assert storage.put_if_version(path, b"v2", version) is True
    assert storage.put_if_version(path, b"v3", version) is False  # changed since it was read
    data, newer = storage.read_versioned(path)
    assert data == b"v2" and newer != version


def test_of_two_racing_conditional_puts_exactly_one_wins(storage):
    path = storage.path("v/raced.bin")
    storage.put(path, b"base")
    _, version = storage.read_versioned(path)
    won: list[bytes] = []
    barrier = threading.Barrier(2)

    def replace(data: bytes):
        barrier.wait()
        if storage.put_if_version(path, data, version):
            won.append(data)
    threads = [threading.Thread(target=replace, args=(d,)) for d in (b"left", b"right")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(won) == 1 and storage.read(path) == won[0]


# -- listing, moving, removing ----------------------------------------------------------------
def test_list_find_sizes_and_read_many_see_what_was_just_written(storage):
    assert storage.list(storage.path("l")) == [] and storage.find(storage.path("l")) == []
    storage.create(storage.path("l/a.json"), b"a")
    storage.put(storage.path("l/sub/b.json"), b"bb")
    assert storage.list(storage.path("l")) == ["a.json", "sub"]
    found = storage.find(storage.path("l"))
    assert found == [storage.path("l/a.json"), storage.path("l/sub/b.json")]
    assert storage.sizes(storage.path("l")) == {found[0]: 1, found[1]: 2}
    many = storage.read_many(found + [storage.path("l/absent.json")])
    assert {k.rsplit("/", 1)[-1]: v for k, v in many.items()} == {"a.json": b"a", "b.json": b"bb"}
    assert storage.modified(found[0]) > 0 and storage.modified(storage.path("l/absent.json")) is None
    with storage.open(found[1]) as fh:
        assert fh.read() == b"bb"


def test_move_takes_a_file_or_a_folder_and_a_repeated_move_finishes_it(storage):
    storage.put(storage.path("m/f.json"), b"f")
    storage.put(storage.path("m/dir/x/1.json"), b"1")
    storage.put(storage.path("m/dir/2.json"), b"2")
    storage.move(storage.path("m/f.json"), storage.path("moved/f.json"))
    storage.move(storage.path("m/dir"), storage.path("moved/dir"))
    storage.move(storage.path("m/dir"), storage.path("moved/dir"))  # done already: nothing to do
    assert storage.find(storage.path("m")) == []
    assert storage.read(storage.path("moved/f.json")) == b"f"
    assert storage.read(storage.path("moved/dir/x/1.json")) == b"1"
    assert storage.read(storage.path("moved/dir/2.json")) == b"2"


def test_delete_removes_a_file_or_a_folder_and_tolerates_one_gone(storage):
    storage.put(storage.path("d/a.json"), b"a")
    storage.put(storage.path("d/sub/b.json"), b"b")
    storage.delete(storage.path("d/a.json"))
    storage.delete(storage.path("d/a.json"))
    assert not storage.exists(storage.path("d/a.json"))
    storage.delete(storage.path("d/sub"), recursive=True)
    assert storage.find(storage.path("d")) == []


def test_put_from_uploads_a_local_file_whole(storage, tmp_path):
    source = tmp_path / "artifact.so"
    source.write_bytes(b"z" * 3000)
    path = storage.path("inductor/ab/artifact.so")
    storage.put_from(path, str(source))
    storage.put_from(path, str(source))  # a second node's copy of the same content
    assert storage.read(path) == b"z" * 3000 and not leftovers(storage) and storage.leftovers(storage.root) == []


@pytest.mark.s3
@pytest.mark.parametrize("other_lands", [False, True])
def test_a_409_conflict_is_looked_at_then_tried_again_or_read_as_exists(s3_server, monkeypatch, other_lands):
    """S3 answers 409 ConditionalRequestConflict while another conditional write to the name is
    in flight: when that one did not land, the create is sent again; when it did, exists."""
    from botocore.exceptions import ClientError

    storage = open_storage(f"s3://spotbatch/contract-{uuid.uuid4().hex[:8]}", s3_server)
    path = storage.path("conflict.json")
    real = storage.fs.call_s3
    conflicts = []

    def conflict_once(method, *args, **kwargs):
        if method == "put_object" and not conflicts:
            conflicts.append(1)
            if other_lands:
                real(method, *args, **{**kwargs, "Body": b"other"})
            raise ClientError({"Error": {"Code": "ConditionalRequestConflict"},
                               "ResponseMetadata": {"HTTPStatusCode": 409}}, "PutObject")
        return real(method, *args, **kwargs)
    monkeypatch.setattr(storage.fs, "call_s3", conflict_once)
    if other_lands:
        with pytest.raises(FileExistsError):
            storage.create(path, b"mine")
    else:
        storage.create(path, b"mine")
    assert conflicts and storage.read(path) == (b"other" if other_lands else b"mine")
