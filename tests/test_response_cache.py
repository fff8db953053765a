"""The response cache on its own: answers written by one reader are found by another, through
compaction, concurrent writers and a writer killed mid-write (local folder and loopback S3)."""

import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cache import compaction as cache_compaction
from pipelines.cache import runs as cache_runs
from pipelines.cache.compaction import compact_cache
from pipelines.cache.response_cache import ENTRIES, SHARDS, CacheFiles, ResponseCache, request_key, shard_of


def answer(text, tokens):
    return {"output": [text], "prompt_tokens": [3], "completion_tokens": [tokens], "finish_reason": ["stop"]}


def key(i: int) -> str:
    return request_key("m", f"prompt {i}", None, "chat", {"max_tokens": 4, "temperature": 0.0, "seed": 0})


def add(cache: ResponseCache, ids: list[int]) -> None:
    cache.add([key(i) for i in ids], {"output": [f"answer {i}" for i in ids], "prompt_tokens": [i for i in ids],
                                      "completion_tokens": [1] * len(ids), "finish_reason": ["stop"] * len(ids)})


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def cache_at(request, tmp_path) -> tuple[str, dict]:
    if request.param == "local":
        return str(tmp_path / "cache"), {}
    return f"s3://spotbatch/{uuid.uuid4().hex[:8]}/cache", request.getfixturevalue("s3_server")


def test_answers_are_shared_between_readers_and_files_are_never_rewritten(tmp_path):
    k1, k2 = key(1), key(2)
    writer, reader = ResponseCache(str(tmp_path / "c")), ResponseCache(str(tmp_path / "c"))
    assert reader.lookup([k1, k2, None]) == {}  # no cache folder yet: nothing, no error
    first = writer.add([k1], answer("uno", 2))
    assert reader.lookup([k1, k2]) == {k1: {"output": "uno", "prompt_tokens": 3, "completion_tokens": 2,
                                            "finish_reason": "stop", "choices": None, "logprobs": None,
                                            "stop_sequence": None, "tool_calls": None, "reasoning": None,
                                            "reasoning_tokens": None, "embedding": None}}
    writer.add([k2], answer("dos", 5))  # a new file; the reader sees it at its next lookup
    assert reader.lookup([k2])[k2]["output"] == "dos"
    assert len(list((tmp_path / "c" / "entries").iterdir())) == 2 and (tmp_path / "c" / "entries").exists()
    assert first.endswith(".parquet")


def test_a_lookup_reads_a_bounded_number_of_new_entries_files_and_the_rest_later(tmp_path, monkeypatch):
    """As a large fleet writes them faster than one actor looks: a few new files a look, never
    a wrong answer, and every answer found once the reader has caught up or compaction ran."""
    from pipelines.cache import response_cache

    monkeypatch.setattr(response_cache, "ENTRIES_READ_PER_LOOK", 4)
    path = str(tmp_path / "cache")
    writer = ResponseCache(path, compact_after=None)
    for unit in range(10):
        add(writer, list(range(unit * 5, unit * 5 + 5)))
    reader = ResponseCache(path, compact_after=None)
    opened = []
    real_read = CacheFiles.read
    monkeypatch.setattr(CacheFiles, "read", lambda self, p: opened.append(p) or real_read(self, p))
    everything = [key(i) for i in range(50)]
    found = reader.lookup(everything)
    entries_read = [p for p in opened if "/entries/" in p]
    assert len(set(entries_read)) <= 4 + len(found) // 5  # 4 new files looked at, then the hits' own files
    assert len(found) == 20 and all(v["output"] == f"answer {everything.index(k)}" for k, v in found.items())
    assert len(reader.lookup(everything)) == 40 and len(reader.lookup(everything)) == 50  # caught up
    compact_cache(path)
    assert len(ResponseCache(path, compact_after=None).lookup(everything)) == 50  # all in the shards now


def test_compaction_moves_answers_into_shards_and_a_lookup_reads_only_their_shards(cache_at, monkeypatch):
    monkeypatch.setattr(cache_compaction, "ENTRIES_PER_PASS", 16)  # several passes
    writer = ResponseCache(*cache_at, compact_after=None)
    for unit in range(40):
        add(writer, list(range(unit * 25, unit * 25 + 25)))
    reader = ResponseCache(*cache_at, compact_after=None)
    everything = [key(i) for i in range(1000)]
    before = reader.lookup(everything)
    assert len(before) == 1000 and reader.memory_keys() == 1000

    done = compact_cache(*cache_at)
    assert done.entries_files == 40 and done.answers == 1000 and done.skipped is None
    files = CacheFiles(*cache_at)
    assert files.parquet_files(ENTRIES) == []
    shard_files = files.parquet_files(SHARDS)
    assert {f.rsplit("/", 2)[-2] for f in shard_files} == {shard_of(k) for k in everything}
    for f in shard_files[:5]:  # sorted by key, each file its shard's keys only
        with files.open(f) as fh:
            keys = pq.read_table(fh, columns=["key"]).column(0).to_pylist()
        assert keys == sorted(keys) and {shard_of(k) for k in keys} == {f.rsplit("/", 2)[-2]}

    assert reader.lookup(everything) == before  # the same answers, now from the shards
    assert reader.memory_keys() == 0  # nothing left in memory but row-group key ranges

    opened = []
    real_open = CacheFiles.open
    monkeypatch.setattr(CacheFiles, "open", lambda self, path: opened.append(path) or real_open(self, path))
    asked = [key(7), key(500)]
    assert {k: v["output"] for k, v in ResponseCache(*cache_at).lookup(asked + [key(5000)]).items()} == {
        key(7): "answer 7", key(500): "answer 500"}
    wanted_shards = {shard_of(k) for k in asked + [key(5000)]}
    assert opened and {p.rsplit("/", 2)[-2] for p in opened} <= wanted_shards


def test_a_reader_keeps_footers_up_to_its_budget_and_reads_the_rest_again(tmp_path, monkeypatch):
    from pipelines.cache import response_cache

    path = str(tmp_path / "cache")
    add(ResponseCache(path, compact_after=None), list(range(2000)))
    compact_cache(path)
    everything = [key(i) for i in range(2000)]
    unbounded = ResponseCache(path)
    assert len(unbounded.lookup(everything)) == 2000
    one_footer = max(f.nbytes for f in unbounded._footers.values())
    assert len(unbounded._footers) == len(CacheFiles(path).parquet_files(SHARDS)) > 100
    assert unbounded.footer_bytes() > 10 * one_footer

    monkeypatch.setattr(response_cache, "FOOTER_BYTES_KEPT", 10 * one_footer)
    bounded = ResponseCache(path)
    for _ in range(2):  # the second time round, most footers were let go and are read again
        found = bounded.lookup(everything)
        assert {k: v["output"] for k, v in found.items()} == {key(i): f"answer {i}" for i in range(2000)}
        assert bounded.footer_bytes() <= 10 * one_footer and len(bounded._footers) <= 10


def few_shards(monkeypatch) -> None:
    """16 shards, not 256: the same code, with fewer files for a test to write."""
    from pipelines.cache import response_cache

    monkeypatch.setattr(response_cache, "SHARD_DIGITS", 1)
    monkeypatch.setattr(cache_compaction, "SHARD_DIGITS", 1)


def test_shard_files_merge_by_size_so_their_number_grows_with_the_log_of_the_cache(tmp_path, monkeypatch):
    few_shards(monkeypatch)
    path = str(tmp_path / "cache")
    writer = ResponseCache(path, compact_after=None)
    for cycle in range(24):  # a compaction after every unit: the worst case for small files
        add(writer, list(range(cycle * 512, cycle * 512 + 512)))
        compact_cache(path)
    files = CacheFiles(path)
    per_shard: dict[str, int] = {}
    for f in files.parquet_files(SHARDS):
        per_shard[f.rsplit("/", 2)[-2]] = per_shard.get(f.rsplit("/", 2)[-2], 0) + 1
    assert max(per_shard.values()) <= 6, per_shard  # 24 without merging
    found = ResponseCache(path).lookup([key(i) for i in range(24 * 512)])
    assert len(found) == 24 * 512 and found[key(12_000)]["output"] == "answer 12000"


def test_concurrent_writers_and_compactions_while_readers_read_lose_no_answer(cache_at, monkeypatch):
    few_shards(monkeypatch)
    small_files(monkeypatch, 8)  # folds into runs happen often too
    monkeypatch.setattr(cache_compaction, "ENTRIES_PER_PASS", 8)
    monkeypatch.setattr(cache_compaction, "MERGE_FANIN", 2)  # merges happen often
    written: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []

    def writer(n: int) -> None:
        cache = ResponseCache(*cache_at, compact_after=None)
        for unit in range(15):
            ids = list(range(n * 10_000 + unit * 10, n * 10_000 + unit * 10 + 10))
            add(cache, ids)
            with lock:
                written.extend(ids)

    def compactor() -> None:
        while not stop.is_set():
            compact_cache(*cache_at)

    def reader() -> None:
        cache = ResponseCache(*cache_at, compact_after=None)
        while not stop.is_set():
            with lock:
                ids = random.sample(written, min(30, len(written)))
            found = cache.lookup([key(i) for i in ids])
            missing = [i for i in ids if found.get(key(i), {}).get("output") != f"answer {i}"]
            if missing:
                failures.append(f"answers written before the lookup not found: {missing[:5]}")

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    others = [threading.Thread(target=compactor), threading.Thread(target=compactor),
              threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in workers + others:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    for t in others:
        t.join()
    assert not failures, failures[:3]
    compact_cache(*cache_at)
    found = ResponseCache(*cache_at).lookup([key(i) for i in written])
    assert len(written) == 450 and len(found) == 450


WRITER = textwrap.dedent("""
    import sys
    from pipelines.cache.response_cache import ResponseCache, request_key
    cache = ResponseCache(sys.argv[1], compact_after=None)
    n = 0
    while True:  # big files, so a kill lands mid-write
        keys = [request_key("m", f"p {n} {i}", None, "chat", {"max_tokens": 4, "temperature": 0.0, "seed": 0})
                for i in range(2000)]
        cache.add(keys, {"output": ["x" * 2000] * 2000})
        n += 1
        print(n, flush=True)
""")


def test_a_writer_killed_mid_write_leaves_nothing_half_visible(tmp_path, monkeypatch):
    path = str(tmp_path / "cache")
    rng = random.Random(3)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # one file written whole
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    files = CacheFiles(path)
    entries = files.parquet_files(ENTRIES)
    for f in entries:  # every file a reader takes is whole
        assert pq.read_table(f).num_rows == 2000
    reader = ResponseCache(path, compact_after=None)
    some = pq.read_table(entries[0], columns=["key"]).column(0).to_pylist()[:10]
    assert len(reader.lookup(some)) == 10
    monkeypatch.setattr(cache_compaction, "ORPHAN_SECONDS", 0.0)
    compact_cache(path)  # moves the whole files, and clears what the killed writers left
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".parquet"]
    assert leftovers == []
    assert len(reader.lookup(some)) == 10



FOLDER = textwrap.dedent("""
    import sys
    import threading
    from pipelines.cache import compaction as cache_compaction, response_cache
    from pipelines.cache.response_cache import ResponseCache, request_key
    for module in (response_cache, cache_compaction):  # runs of many files from a few thousand answers
        module.SHARD_DIGITS, module.MAX_FILE_ROWS = 1, 100
    fold = cache_compaction.fold_into_run
    lock = threading.Lock()

    def announced(*args):  # so the test can kill it mid-fold (shards fold on several threads)
        with lock:
            print("fold", flush=True)
        return fold(*args)

    cache_compaction.fold_into_run = announced
    cache = ResponseCache(sys.argv[1], compact_after=None)
    n = int(sys.argv[2])
    while True:
        ids = range(n * 400, n * 400 + 400)
        cache.add([request_key("m", f"p {i}", None, "chat", {"max_tokens": 4, "temperature": 0.0, "seed": 0})
                   for i in ids], {"output": [f"answer {i}" for i in ids]})
        print(n, flush=True)  # these answers are written: every later reader must find them
        cache_compaction.compact_cache(sys.argv[1], lease_seconds=0.0)  # a killed one's lease is stale at once
        n += 1
""")


def test_a_compaction_killed_mid_fold_loses_no_answer_and_leaves_nothing_half_read(tmp_path, monkeypatch):
    few_shards(monkeypatch)
    small_files(monkeypatch, 100)
    path = str(tmp_path / "cache")
    rng = random.Random(5)
    cycles = 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", FOLDER, path, str(cycles)], stdout=subprocess.PIPE, text=True)
        folds_to_pass = rng.randint(8, 24)  # past the first folds, which have no run to lose yet
        for line in proc.stdout:
            if line.strip() == "fold":
                if folds_to_pass == 0:
                    break
                folds_to_pass -= 1
            else:
                cycles = int(line) + 1
        time.sleep(rng.uniform(0.0, 0.05))  # in that fold, or the next step
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cycles = max([cycles] + [int(line) + 1 for line in proc.stdout.read().split() if line != "fold"])
        ids = list(range(cycles * 400))
        found = ResponseCache(path, compact_after=None).lookup(
            [request_key("m", f"p {i}", None, "chat", {"max_tokens": 4, "temperature": 0.0, "seed": 0}) for i in ids])
        assert sorted(v["output"] for v in found.values()) == sorted(f"answer {i}" for i in ids)
    assert any(cache_runs.parse(f) for f in CacheFiles(path).parquet_files(SHARDS))


def test_a_staged_file_renamed_into_place_while_orphans_are_cleared_is_no_error(tmp_path, monkeypatch):
    path = str(tmp_path / "cache")
    add(ResponseCache(path, compact_after=None), [1, 2])
    staged = tmp_path / "cache" / ENTRIES / "x.parquet.abc.tmp"
    staged.write_bytes(b"half")
    files = CacheFiles(path)
    real_modified = files.fs.modified

    def renamed_after_the_listing(f):  # its writer's os.replace lands between the listing and the stat
        if f.endswith(".tmp"):
            staged.rename(staged.with_name("x.parquet"))
        return real_modified(f)

    monkeypatch.setattr(files.fs, "modified", renamed_after_the_listing)
    monkeypatch.setattr(cache_compaction, "ORPHAN_SECONDS", 0.0)
    assert cache_compaction._remove_orphans(files) == 0
    assert (tmp_path / "cache" / ENTRIES / "x.parquet").exists()


def small_files(monkeypatch, rows: int) -> None:
    """Shard files of at most `rows` answers: runs of several files from a few thousand answers."""
    from pipelines.cache import response_cache

    for module in (response_cache, cache_compaction):
        monkeypatch.setattr(module, "MAX_FILE_ROWS", rows)


def test_a_shards_large_part_is_one_run_of_capped_files_with_disjoint_key_ranges(tmp_path, monkeypatch):
    few_shards(monkeypatch)
    small_files(monkeypatch, 100)
    path = str(tmp_path / "cache")
    writer = ResponseCache(path, compact_after=None)
    files = CacheFiles(path)
    for cycle in range(12):  # 6,000 answers: 375 a shard, a run of several files each
        add(writer, list(range(cycle * 500, cycle * 500 + 500)))
        compact_cache(path)
        for run_files in cache_runs.by_shard(files.parquet_files(SHARDS)).values():
            whole, partial = cache_runs.generations(run_files)
            assert len(whole) == 1 and partial == []  # a fold deletes the generation it read
    rows, in_runs = {}, 0
    for f in files.parquet_files(SHARDS):
        with files.open(f) as fh:
            keys = pq.read_table(fh, columns=["key"]).column(0).to_pylist()
        rows[f] = keys
        in_runs += len(keys) if cache_runs.parse(f) else 0
    assert max(len(k) for k in rows.values()) <= 100 and sum(len(k) for k in rows.values()) == 6000
    assert in_runs >= 4000  # most answers sit in the runs
    for shard, run_files in cache_runs.by_shard(list(rows)).items():
        run = cache_runs.generations(run_files)[0][0]
        assert len(run) >= 2 and run[0].lo == shard
        for a, b in zip(run, run[1:]):  # in key order, each file's keys within its fences
            assert rows[a.path] == sorted(rows[a.path]) and a.lo <= rows[a.path][0]
            assert rows[a.path][-1] < b.lo <= rows[b.path][0]

    opened = []
    real_open = CacheFiles.open
    monkeypatch.setattr(CacheFiles, "open", lambda self, p: opened.append(p) or real_open(self, p))
    reader = ResponseCache(path)
    for i in (5, 2500, 5999):  # one key: one file of its shard's run, whatever the run's length
        opened.clear()
        assert reader.lookup([key(i)])[key(i)]["output"] == f"answer {i}"
        assert len({p for p in opened if cache_runs.parse(p)}) == 1, opened
    found = ResponseCache(path).lookup([key(i) for i in range(6000)])
    assert len(found) == 6000 and found[key(4321)]["output"] == "answer 4321"


def test_a_fold_that_died_mid_write_is_never_read_and_is_cleared_later(tmp_path, monkeypatch):
    few_shards(monkeypatch)
    small_files(monkeypatch, 100)
    path = str(tmp_path / "cache")
    writer = ResponseCache(path, compact_after=None)
    add(writer, list(range(3000)))
    compact_cache(path)
    files = CacheFiles(path)
    run_file = next(r for f in files.parquet_files(SHARDS) if (r := cache_runs.parse(f)))
    shard = run_file.path.rsplit("/", 2)[-2]
    with files.open(run_file.path) as fh:
        table = pq.read_table(fh)
    dead = cache_runs.new_generation()  # its first file written, the rest never: no last file
    wrong = table.set_column(1, "output", pa.array(["a wrong answer"] * table.num_rows))
    files.write(f"{SHARDS}/{shard}/{cache_runs.run_name(dead, 0, False, shard)}", wrong, key_filter=True)
    found = ResponseCache(path).lookup([key(i) for i in range(3000)])
    assert {v["output"] for v in found.values()} == {f"answer {i}" for i in range(3000)}
    compact_cache(path)
    assert any(cache_runs.parse(f).generation == dead for f in files.parquet_files(SHARDS) if cache_runs.parse(f))
    monkeypatch.setattr(cache_compaction, "ORPHAN_SECONDS", 0.0)
    compact_cache(path)  # a generation not whole after ORPHAN_SECONDS belongs to a dead fold
    assert not any(cache_runs.parse(f).generation == dead for f in files.parquet_files(SHARDS) if cache_runs.parse(f))
    assert len(ResponseCache(path).lookup([key(i) for i in range(3000)])) == 3000


def test_a_second_compaction_waits_for_the_lease_and_a_stale_lease_is_taken(tmp_path):
    path = str(tmp_path / "cache")
    add(ResponseCache(path, compact_after=None), [1])
    files = CacheFiles(path)
    files.create(cache_compaction.LEASE, b'{"holder": "other", "time": %f}' % time.time())
    assert compact_cache(path).skipped == "another compaction holds the lease"
    assert len(files.parquet_files(ENTRIES)) == 1
    done = compact_cache(path, lease_seconds=-1.0)  # the holder died long ago
    assert done.entries_files == 1 and not (tmp_path / "cache" / cache_compaction.LEASE).exists()


def test_actors_compact_in_the_background_when_entries_pile_up(tmp_path):
    path = str(tmp_path / "cache")
    cache = ResponseCache(path, compact_after=5)
    for unit in range(6):
        add(cache, [unit])
        cache.lookup([key(unit)])  # a unit's lookup comes before its add: it counts the entries
    cache._compacting.join(30)
    assert len(CacheFiles(path).parquet_files(ENTRIES)) <= 1
    assert len(ResponseCache(path).lookup([key(i) for i in range(6)])) == 6


def test_spotbatch_compact_compacts_a_shared_cache(tmp_path):
    from tests.helpers import spotbatch

    path = str(tmp_path / "cache")
    add(ResponseCache(path, compact_after=None), [1, 2, 3])
    done = spotbatch("compact", "--cache", path)
    assert done.returncode == 0, done.stderr
    assert "1 entries file(s) (3 answers) moved into shards" in done.stdout
    assert CacheFiles(path).parquet_files(ENTRIES) == [] and len(ResponseCache(path).lookup([key(1)])) == 1
    assert spotbatch("compact").returncode != 0  # neither an output nor a cache: said, not guessed


@pytest.mark.s3
def test_the_request_counting_proxy_passes_s3_through_unchanged(s3_server):
    """The scale bench counts S3 requests through a proxy (jobs/bench/s3_requests.py); what
    goes through it must work as without it (a HEAD's size once came back as 0)."""
    from jobs.bench.s3_requests import S3RequestCounter, storage_options

    with S3RequestCounter(s3_server["client_kwargs"]["endpoint_url"]) as counter:
        path = f"s3://spotbatch/{uuid.uuid4().hex[:8]}/cache"
        add(ResponseCache(path, storage_options(counter.endpoint), compact_after=None), [1, 2])
        found = ResponseCache(path, storage_options(counter.endpoint)).lookup([key(1), key(3)])
        counts = counter.take()
    assert {k: v["output"] for k, v in found.items()} == {key(1): "answer 1"}
    assert counts["PUT"] >= 1 and counts["LIST"] >= 1 and counts["GET"] >= 1 and counts["HEAD"] >= 1
