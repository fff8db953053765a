"""The shared compile cache (pipelines/engine/compile_cache.py) on real folders: a node's vLLM entries and
inductor artifacts published, a new node taking them, a copy still being written never taken,
two copies never mixed, a node's own entry never overwritten, and a folder that fails costing
only time. The engine's own use of it: tests/test_compile_cache_engine.py."""

from pathlib import Path

import pytest

from pipelines.engine.compile_cache import (
    AOT,
    CacheReport,
    SharedCompileCache,
    around_engine_start,
    inductor_files,
    local_entries,
)
from pipelines.spec import PipelineSpec, SpecError

FILES = {"rank_0_0/backbone/computation_graph.py": "graph", "inductor_cache/ab/kernel.py": "kernel",
         "rank_0_0/backbone/vllm_compile_cache.py": "index"}
NOTHING = (set(), set())


def write(folder: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def node(tmp_path: Path, name: str, shared: Path) -> SharedCompileCache:
    """A node's caches: vLLM's and inductor's, in folders of its own."""
    return SharedCompileCache(str(shared), cache=tmp_path / name / "vllm", inductor=tmp_path / name / "inductor")


def test_what_one_node_compiled_is_taken_whole_by_another(tmp_path):
    shared = tmp_path / "shared"
    a, b = node(tmp_path, "a", shared), node(tmp_path, "b", shared)
    write(a.cache / "0123456789", FILES)
    write(a.cache / AOT / "fedcba9876", {"model": "aot"})
    write(a.inductor, {"gs/cgs3f.main.so": "kernel build", "gs/cgs3f.main.cpp": "kernel source",
                       "locks/cgs3f.lock": "", "fxgraph/xy/tmpabc": "half written"})
    report = CacheReport(str(shared))
    a.publish(NOTHING, report)
    assert report.published == ["0123456789", f"{AOT}/fedcba9876"] and report.published_files == 2
    markers = sorted(p.relative_to(shared).as_posix() for p in shared.rglob("*.complete"))
    assert [m.rsplit("/", 1)[0] for m in markers] == ["vllm/0123456789", f"vllm/{AOT}/fedcba9876"]
    assert tree(shared / "inductor") == {"gs/cgs3f.main.so": "kernel build", "gs/cgs3f.main.cpp": "kernel source"}

    taken = CacheReport(str(shared))
    b.fetch(taken)
    assert taken.fetched == ["0123456789", f"{AOT}/fedcba9876"] and taken.fetched_files == 2
    assert tree(b.cache / "0123456789") == FILES and tree(b.cache / AOT / "fedcba9876") == {"model": "aot"}
    assert local_entries(b.cache) == {"0123456789", f"{AOT}/fedcba9876"}
    assert inductor_files(b.inductor) == {"gs/cgs3f.main.so", "gs/cgs3f.main.cpp"}
    assert not [p for p in (tmp_path / "b").rglob("*") if ".staging-" in p.name or ".partial-" in p.name]


def test_a_copy_still_being_written_is_not_taken(tmp_path):
    shared = tmp_path / "shared"
    write(shared / "vllm" / "0123456789" / "20260101T000000Z-aaaaaaaa", FILES)  # its files, no marker yet
    write(shared / "inductor", {"gs/cgs3f.so.partial-1a2b3c4d": "half uploaded"})
    b = node(tmp_path, "b", shared)
    report = CacheReport(str(shared))
    b.fetch(report)
    assert report.fetched == [] and report.fetched_files == 0
    assert not (b.cache / "0123456789").exists() and not inductor_files(b.inductor)


def test_two_copies_of_an_entry_are_never_mixed(tmp_path):
    shared = tmp_path / "shared"
    first = {"rank_0_0/graph.py": "first", "only_in_first.py": "1"}
    second = {"rank_0_0/graph.py": "second", "only_in_second.py": "2"}
    for copy, files in (("20260101T000000Z-aaaaaaaa", first), ("20260102T000000Z-bbbbbbbb", second)):
        write(shared / "vllm" / "0123456789" / copy, files)
        (shared / "vllm" / "0123456789" / f"{copy}.complete").write_text("{}")
    b = node(tmp_path, "b", shared)
    b.fetch(CacheReport(str(shared)))
    assert tree(b.cache / "0123456789") == first  # the first complete copy by name, nothing of the other


def test_a_nodes_own_entry_is_never_overwritten_and_a_published_one_never_again(tmp_path):
    shared = tmp_path / "shared"
    a, b = node(tmp_path, "a", shared), node(tmp_path, "b", shared)
    write(a.cache / "0123456789", FILES)
    a.publish(NOTHING, CacheReport(str(shared)))
    write(b.cache / "0123456789", {"own.py": "compiled here"})
    report = CacheReport(str(shared))
    b.fetch(report)
    assert report.fetched == [] and tree(b.cache / "0123456789") == {"own.py": "compiled here"}
    b.publish(NOTHING, report)  # the folder has a whole copy: no second one
    assert report.published == [] and len(list((shared / "vllm" / "0123456789").glob("*.complete"))) == 1


def test_an_engine_start_publishes_only_what_it_made(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    cache = tmp_path / "vllm" / "torch_compile_cache"
    write(cache / "old0000000", {"x": "compiled by an earlier run, for another model"})
    write(tmp_path / "inductor", {"ol/old.so": "an earlier run's kernel"})
    shared = tmp_path / "shared"
    elsewhere = node(tmp_path, "elsewhere", shared)
    write(elsewhere.cache / "fetched000", {"y": "from another node"})
    elsewhere.publish(NOTHING, CacheReport(""))
    with around_engine_start(str(shared), {}, compiles=True) as report:
        assert report.fetched == ["fetched000"]
        write(cache / "new0000000", {"z": "what this engine compiled"})  # the engine's start
        write(tmp_path / "inductor", {"ne/new.so": "its kernel"})
    assert report.published == ["new0000000"] and report.published_files == 1 and report.error is None
    assert sorted(p.name for p in (shared / "vllm").iterdir()) == ["fetched000", "new0000000"]
    assert tree(shared / "inductor") == {"ne/new.so": "its kernel"}
    with around_engine_start(str(shared), {}, compiles=False) as eager:  # an eager engine compiles nothing
        assert eager is None


def test_a_folder_that_fails_costs_only_time_and_names_no_secret(tmp_path, monkeypatch, cli_console, capsys):
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with around_engine_start(f"file://{blocked}/cache", {"secret": "s3cr3t-value-0123"}, compiles=True) as report:
        write(tmp_path / "vllm" / "torch_compile_cache" / "new0000000", {"z": "compiled"})
    assert report.error and report.error.startswith("publish: ") and report.published == []
    said = capsys.readouterr().err  # a warning
    assert "compile cache" in said and "the engine compiles what it cannot load" in said
    assert "s3cr3t" not in said + str(report.to_json())


def test_planning_refuses_a_cache_folder_it_cannot_reach(tmp_path):
    from pipelines.planning.plan_run import check_compile_cache

    def model(compile_cache):
        return PipelineSpec.model_validate({"input": {"paths": "x.parquet", "prompt_column": "p"},
                                            "output": {"path": "out"},
                                            "model": {"name": "tiny-random", "compile_cache": compile_cache}}).model

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    unreachable = model(str(blocked / "cache"))
    assert unreachable.compile_cache.path == str(blocked / "cache")  # a URL alone is the folder
    with pytest.raises(SpecError, match=r"model.compile_cache.path: cannot list"):
        check_compile_cache(unreachable, "model")
    check_compile_cache(unreachable.model_copy(update={"enforce_eager": True}), "model")  # never used: not asked
    # Not there yet: made by the first engine that publishes.
    check_compile_cache(model({"path": str(tmp_path / "new" / "cache"), "storage_options": {}}), "model")
