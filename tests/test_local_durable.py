"""A durable write on a local store survives a power loss with its whole path: the file's bytes,
its name in its folder, and the name of every folder made for it in the folder above (fsync of
a file leaves a new folder's name to chance). What the server's batch records point at (files,
results, a Message Batch's requests) is written so, before the record."""

from __future__ import annotations

import pytest

from pipelines.store.storage import local


@pytest.mark.parametrize("how", ["put", "put_from", "create"])
def test_a_durable_write_syncs_every_folder_it_made(tmp_path, monkeypatch, how):
    synced = []
    monkeypatch.setattr(local, "_sync_folder", lambda folder: synced.append(folder))
    store = local.LocalStorage(str(tmp_path))
    (tmp_path / "src").write_bytes(b"x")
    target = str(tmp_path / "a" / "b" / "f.json")
    {"put": lambda: store.put(target, b"x", durable=True),
     "put_from": lambda: store.put_from(target, str(tmp_path / "src"), durable=True),
     "create": lambda: store.create(target, b"x", durable=True)}[how]()
    assert synced[:2] == [str(tmp_path), str(tmp_path / "a")]  # the new folders' names
    assert synced[-1] == str(tmp_path / "a" / "b")  # the file's name
    synced.clear()
    store.put(str(tmp_path / "a" / "b" / "g.json"), b"y")  # not durable: nothing synced
    assert synced == []
