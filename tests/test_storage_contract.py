"""Every promise of the storage interface (pipelines/store/storage/), on a local folder and on a
real S3 server on loopback, with faults injected where the stores differ: a write that fails,
a write that lands but whose answer is lost, and writers racing for one name."""

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.store.storage import STAGED, open_storage
from pipelines.store.storage.local_version import LOCK, NONCE, side_path

ROOT = Path(__file__).resolve().parent.parent

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


def inject_put_fault(storage, monkeypatch, *, lands):
    """Every write that makes a name exist fails: before it lands (`lands` None), after it
    landed with its answer lost ("ours"), or after another writer's bytes took the name ("theirs").
    On a file system the write is the link or rename that makes the name; on S3 the PUT."""
    if "file" in (storage.fs.protocol if isinstance(storage.fs.protocol, tuple) else (storage.fs.protocol,)):
        for name in ("link", "replace"):
            real = getattr(os, name)

            def fault(src, dst, real=real):
                if lands == "ours":
                    real(src, dst)
                elif lands == "theirs":
                    with open(dst, "wb") as fh:
                        fh.write(b"theirs")
                raise Lost(f"{dst}: no answer")
            monkeypatch.setattr(os, name, fault)
        return
    real_sync, real_async = storage.fs.call_s3, storage.fs._call_s3

    def landed(kwargs):
        return {**kwargs, "Body": b"theirs"} if lands == "theirs" else kwargs

    def sync_fault(method, *args, **kwargs):
        if method != "put_object":
            return real_sync(method, *args, **kwargs)
        if lands:
            real_sync(method, *args, **landed(kwargs))
        raise Lost(f"{kwargs.get('Key')}: no answer")

    async def async_fault(method, *args, **kwargs):
        if method != "put_object":
            return await real_async(method, *args, **kwargs)
        if lands:
            await real_async(method, *args, **landed(kwargs))
        raise Lost(f"{kwargs.get('Key')}: no answer")
    monkeypatch.setattr(storage.fs, "call_s3", sync_fault)
    monkeypatch.setattr(storage.fs, "_call_s3", async_fault)


def create_either_way(storage, path, data, staged):
    """`create`, or the staged create a commit uses."""
    if not staged:
        storage.create(path, data)
        return
    with storage.create_staged(path, stage_in=storage.path(".staging")) as fh:
        fh.write(data)


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


@pytest.mark.parametrize("staged", [False, True], ids=["create", "create_staged"])
def test_a_failed_create_leaves_nothing_and_raises_the_error(storage, monkeypatch, staged):
    path = storage.path("a/failed.json")
    inject_put_fault(storage, monkeypatch, lands=None)
    with pytest.raises(Lost):
        create_either_way(storage, path, b"data", staged)
    monkeypatch.undo()
    assert storage.read(path) is None and not leftovers(storage)
    create_either_way(storage, path, b"data", staged)  # the name is still free
    assert storage.read(path) == b"data"


@pytest.mark.parametrize("staged", [False, True], ids=["create", "create_staged"])
def test_a_create_whose_answer_was_lost_after_it_landed_succeeded(storage, monkeypatch, staged):
    """Our own write, found there with our bytes, is a create that succeeded: a claim is ours,
    a commit counts as ours; never "another writer has it"."""
    path = storage.path("a/landed.json")
    inject_put_fault(storage, monkeypatch, lands="ours")
    create_either_way(storage, path, b"ours", staged)  # returns: no FileExistsError, no Lost
    monkeypatch.undo()
    assert storage.read(path) == b"ours" and not leftovers(storage)
    with pytest.raises(FileExistsError):  # another writer is still refused
        create_either_way(storage, path, b"another", staged)


@pytest.mark.parametrize("staged", [False, True], ids=["create", "create_staged"])
def test_a_create_that_failed_where_another_writer_landed_reads_as_exists(storage, monkeypatch, staged):
    path = storage.path("a/theirs.json")
    inject_put_fault(storage, monkeypatch, lands="theirs")
    with pytest.raises(FileExistsError):
        create_either_way(storage, path, b"ours", staged)
    monkeypatch.undo()
    assert storage.read(path) == b"theirs" and not leftovers(storage)


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


def test_a_failed_put_from_keeps_the_old_bytes_and_a_lost_answer_is_finished_by_repeating(storage, monkeypatch,
                                                                                        tmp_path):
    source = tmp_path / "artifact.so"
    source.write_bytes(b"new" * 1000)
    path = storage.path("inductor/cd/artifact.so")
    storage.put(path, b"old")
    inject_put_fault(storage, monkeypatch, lands=None)
    with pytest.raises(Lost):
        storage.put_from(path, str(source))
    monkeypatch.undo()
    assert storage.read(path) == b"old" and not leftovers(storage) and storage.leftovers(storage.root) == []
    inject_put_fault(storage, monkeypatch, lands="ours")
    with pytest.raises(Lost):  # landed, but nobody was told: the caller sees an error ...
        storage.put_from(path, str(source))
    monkeypatch.undo()
    storage.put_from(path, str(source))  # ... and its retry puts the same bytes again
    assert storage.read(path) == b"new" * 1000 and not leftovers(storage)


@pytest.mark.s3
def test_an_s3_move_stopped_between_copy_and_delete_is_finished_by_moving_again(s3_server, monkeypatch):
    """S3 has no rename: a move copies, then deletes. Stopped in between, both names hold the
    file; the same move again leaves it only under the new one."""
    storage = open_storage(f"s3://spotbatch/contract-{uuid.uuid4().hex[:8]}", s3_server)
    storage.put(storage.path("m/f.json"), b"f")
    storage.put(storage.path("m/dir/1.json"), b"1")
    storage.put(storage.path("m/dir/2.json"), b"2")
    real_rm = storage.fs.rm

    def stopped(path, *args, **kwargs):
        raise Lost(f"{path}: the mover died before deleting")
    for src, dest in (("m/f.json", "moved/f.json"), ("m/dir", "moved/dir")):
        monkeypatch.setattr(storage.fs, "rm", stopped)
        with pytest.raises(Lost):
            storage.move(storage.path(src), storage.path(dest))
        monkeypatch.setattr(storage.fs, "rm", real_rm)
        assert storage.find(storage.path(dest))  # copied, not deleted
        storage.move(storage.path(src), storage.path(dest))
    assert storage.find(storage.path("m")) == []
    assert {p.rsplit("moved/", 1)[1]: storage.read(p) for p in storage.find(storage.path("moved"))} == {
        "f.json": b"f", "dir/1.json": b"1", "dir/2.json": b"2"}


# -- durability, and the local version lock -----------------------------------------------------
def count_fsyncs(monkeypatch) -> list[int]:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    return synced


def test_only_a_durable_write_is_synced_and_then_with_its_folder(tmp_path, monkeypatch):
    """Records, cache entries and beats are rewritten or rebuilt: syncing each costs much on a
    network file system. The commit, the merge and the manifest sync the file and its folder
    (without the folder the new name itself may be lost)."""
    storage = open_storage(str(tmp_path / "store"))
    synced = count_fsyncs(monkeypatch)
    storage.put(storage.path("rec/beat.json"), b"beat")
    storage.create(storage.path("rec/claim.json"), b"claim")
    with storage.create_staged(storage.path("cache/entry.bin")) as fh:
        fh.write(b"entry")
    assert synced == []
    with storage.create_staged(storage.path("part-1.parquet"), durable=True) as fh:
        fh.write(b"unit")
    assert len(synced) == 2  # the file, then its folder
    data, version = storage.read_versioned(storage.path("part-1.parquet"))
    assert storage.put_if_version(storage.path("part-1.parquet"), b"merged", version)
    assert len(synced) == 4


def test_a_merge_slower_than_a_minute_keeps_its_lock_and_the_second_merger_loses(tmp_path, monkeypatch):
    """A merge writes and syncs a whole unit under the lock: a second merger that broke the
    lock after a minute would pass the compare too, and one merge's rows would be lost. The
    lock stays hidden in .staging/ (the sweep's), never in the folder readers list."""
    storage = open_storage(str(tmp_path / "store"))
    path = storage.path("part-u.parquet")
    storage.put(path, b"base")
    _, version = storage.read_versioned(path)
    writing, finish = threading.Event(), threading.Event()
    real_put = type(storage).put

    def slow_put(self, p, data, *args, **kwargs):
        if data == b"slow":
            writing.set()
            finish.wait(10)
        return real_put(self, p, data, *args, **kwargs)
    monkeypatch.setattr(type(storage), "put", slow_put)
    won: dict[bytes, bool] = {}

    def merge(data):
        won[data] = storage.put_if_version(path, data, version)
    slow = threading.Thread(target=merge, args=(b"slow",))
    slow.start()
    assert writing.wait(10)
    assert set(os.listdir(storage.root)) <= {".staging", "part-u.parquet"}
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 300)  # five minutes into the write
    fast = threading.Thread(target=merge, args=(b"fast",))
    fast.start()
    fast.join(0.5)
    assert fast.is_alive()  # waiting for the lock, not breaking it
    finish.set()
    slow.join(10)
    fast.join(10)
    assert won == {b"slow": True, b"fast": False} and storage.read(path) == b"slow"


def test_a_merger_killed_holding_the_lock_does_not_hold_up_the_next(tmp_path):
    """The lock is the kernel's (flock): a merger that dies holding it lets go as it dies, so
    the next merge goes ahead at once, with no stale limit to wait out or to misjudge."""
    storage = open_storage(str(tmp_path / "store"))
    path = storage.path("part-d.parquet")
    storage.put(path, b"base")
    _, version = storage.read_versioned(path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from pipelines.store.storage.local_version import locked\n"
        f"with locked({path!r}):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        blocked = threading.Thread(target=lambda: storage.put_if_version(path, b"merged", version), daemon=True)
        blocked.start()
        blocked.join(0.5)
        assert blocked.is_alive()  # held by a live process: the merge waits
    finally:
        holder.kill()
        holder.wait()
    blocked.join(10)
    assert not blocked.is_alive() and storage.read(path) == b"merged"
    assert sorted(os.listdir(os.path.dirname(side_path(path, LOCK)))) == [
        os.path.basename(path) + LOCK, os.path.basename(path) + NONCE]


def test_a_local_version_is_never_repeated_by_a_reused_inode_of_the_same_time_and_size(tmp_path, monkeypatch):
    storage = open_storage(str(tmp_path / "store"))
    path = storage.path("part-v.parquet")
    storage.put(path, b"aaaa")
    fake = SimpleNamespace(st_ino=7, st_mtime_ns=1, st_ctime_ns=1, st_size=4, st_mtime=1.0)
    real_stat, real_fstat = os.stat, os.fstat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: fake if p == path else real_stat(p, *a, **k))
    monkeypatch.setattr(os, "fstat", lambda fd: fake if real_fstat(fd).st_ino == real_stat(path).st_ino
                        else real_fstat(fd))
    _, first = storage.read_versioned(path)
    assert storage.put_if_version(path, b"bbbb", first)
    _, second = storage.read_versioned(path)  # the same inode, time and size as the first
    assert second != first
    assert storage.put_if_version(path, b"cccc", first) is False and storage.read(path) == b"bbbb"
