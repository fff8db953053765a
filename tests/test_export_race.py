"""Exports land whole or not at all, never over anything, and not from an unfinished run
(no engine: the output's results are committed by hand)."""

import threading

import pytest

from pipelines.run import prepare
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputError
from spotbatch import export
from tests.conftest import commit_by_hand, write_shards


def finished_output(tmp_path, rows: int = 40, commit: bool = True) -> str:
    write_shards(tmp_path / "in", [{"id": i, "text": f"q {i}"} for i in range(rows)], shards=1)
    spec = PipelineSpec(input={"paths": str(tmp_path / "in"), "prompt_column": "text"},
                        model={"name": "tiny-random"}, compute={"tokens_per_unit": 2000},
                        output={"path": str(tmp_path / "out")})
    store, plan = prepare(spec)
    assert len(plan.units) > 1
    commit_by_hand(store, plan, plan.units if commit else plan.units[1:])
    return str(tmp_path / "out")


def test_two_exports_racing_to_one_name_leave_one_whole_file_and_one_clear_error(tmp_path):
    out = finished_output(tmp_path)
    target = tmp_path / "train.jsonl"
    results: list = []
    start = threading.Barrier(2)

    def one():
        start.wait()
        try:
            results.append(export(out, "chat-jsonl", str(target)))
        except OutputError as err:
            results.append(err)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in results if isinstance(r, OutputError)]
    assert len(errors) == 1 and "never overwrites" in str(errors[0])
    assert len(target.read_text().splitlines()) == 40  # whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("train")] == ["train.jsonl"]  # no leftovers


def test_an_unfinished_run_is_exported_only_with_partial(tmp_path):
    out = finished_output(tmp_path, commit=False)
    with pytest.raises(OutputError, match="not finished .*--partial"):
        export(out, "chat-jsonl", str(tmp_path / "t.jsonl"))
    assert not (tmp_path / "t.jsonl").exists()
    counts = export(out, "chat-jsonl", str(tmp_path / "t.jsonl"), partial=True)
    assert 0 < counts["written"] < 40
