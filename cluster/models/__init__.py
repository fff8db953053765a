"""Model sources: getting a model's weights onto a node is node set-up, not a batch operator.

A spec's `model.name` takes one of four forms, one module each:
1. a built-in name (`builtin.py`): built on the node from a pinned package;
2. a local folder (`local.py`): pinned by its files' sizes and content hashes;
3. a hub repo id `org/name` with `model.revision` (`hub.py`): pinned to a commit;
4. an fsspec URL of a folder, `s3://...` (`url.py`): pinned by its listing, downloaded once
   per node.

`identify` runs at planning, before anything is written: it finds the model or names what is
wrong, and returns the pin. `resolve` runs in each engine actor: it puts exactly the pinned
weights on the node and returns the folder vLLM loads.

>>> kind_of("tiny-random"), kind_of("Qwen/Qwen2.5-7B-Instruct"), kind_of("s3://models/llama/")
('builtin', 'hub', 'url')
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from cluster.models import builtin, hub, local, url
from cluster.models.errors import ModelChangedError, ModelNotFoundError
from cluster.models.node_cache import models_dir
from cluster.models.source import ModelSource, describe_change
from operators.engine_args import redact_url

__all__ = ["ModelChangedError", "ModelNotFoundError", "ModelSource", "describe_change", "identify", "kind_of",
           "models_dir", "resolve"]


def kind_of(name: str) -> str:
    """builtin, url, local or hub; a name of none of these forms is refused, naming the forms."""
    if name in builtin.BUILDERS:
        return "builtin"
    if "://" in name and not name.startswith("file://"):
        return "url"
    path = Path(name.removeprefix("file://")).expanduser()
    if path.is_dir() or name.startswith(("/", ".", "~", "file://")):
        return "local"  # a folder that exists wins over a repo id of the same spelling, as in transformers
    if hub.is_repo_id(name):
        return "hub"
    close = difflib.get_close_matches(name, builtin.BUILDERS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ModelNotFoundError(
        f"model {name!r} is none of: a built-in name ({', '.join(sorted(builtin.BUILDERS))}), a folder "
        f"(no folder at {path.resolve()}), a hub repo id (org/name), or a URL (s3://bucket/prefix/).{hint}")


def identify(model: Any, where: str | None = None, marker: str = "config.json", field: str = "model") -> ModelSource:
    """Find the spec's model (a ModelSpec) and pin its weights; raises ModelNotFoundError.
    `where` is the name as it may be written down (by default, with a URL's userinfo redacted);
    `marker` the file that makes the folder what it is (a LoRA adapter's: adapter_config.json);
    `field` the spec's section it is written in (an adapter's: model.adapters.<name>)."""
    kind = kind_of(model.name)
    shown = where or redact_url(model.name)  # as written down: a URL's userinfo is a credential
    if model.revision is not None and kind != "hub":
        raise ModelNotFoundError(f"model {shown!r}: {field}.revision is for hub repo ids only")
    if model.storage_options and kind != "url":
        raise ModelNotFoundError(f"model {shown!r}: {field}.storage_options is for URL folders only")
    if kind == "builtin" and marker != "config.json":
        raise ModelNotFoundError(f"{model.name!r} is a built-in model, not a folder holding {marker}")
    if kind == "builtin":
        return ModelSource("builtin", model.name, {"recipe": builtin.BUILTIN_RECIPES[model.name]})
    if kind == "local":
        return local.identify(model.name.removeprefix("file://"), marker)
    if kind == "hub":
        try:
            return hub.identify(model.name, model.revision, marker)
        except ModelNotFoundError as err:  # `org/name` may have been meant as a relative folder
            raise ModelNotFoundError(f"{err} (and there is no local folder {Path(model.name).resolve()})") from None
    return url.identify(model.name, model.storage_options, shown, marker)


def resolve(model: Any, source: ModelSource, marker: str = "config.json") -> tuple[Path, dict[str, Any]]:
    """The folder holding exactly the pinned weights on this node, and how it got there."""
    if source.kind == "builtin":
        folder = models_dir() / model.name
        built = not (folder / "config.json").exists()
        return builtin.prepare_model(model.name), {"kind": "builtin", "built": built}
    if source.kind == "local":
        return local.resolve(source, marker), {"kind": "local"}
    if source.kind == "hub":
        return hub.resolve(source), {"kind": "hub", "commit": source.pin["commit"]}
    folder, downloaded = url.resolve(source, model.name, model.storage_options, marker)
    return folder, {"kind": "url", "downloaded": downloaded}


def fetch(name: str, revision: str | None = None, storage_options: dict[str, Any] | None = None) -> Path:
    """A model folder on this node for any of the four forms (for the bench and tools)."""
    from types import SimpleNamespace

    model = SimpleNamespace(name=name, revision=revision, storage_options=storage_options or {})
    return resolve(model, identify(model))[0]
