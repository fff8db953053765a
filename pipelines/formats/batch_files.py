"""Provider batch JSONL files read into Parquet shards in the output folder (a folder of its own
under _spotbatch/input/ for each version of the files, which _spotbatch/batch_source.json names
with the files' endpoint), in the endpoint's columns (for chat: custom_id, messages (JSON),
sampling (JSON: the request's own sampling fields), model); the run then reads those like any
input. The files of one run hold one endpoint's requests, as a file does at OpenAI. They are
read again only when the files change, and then the run refuses to mix answers, as for any
changed input. Every request line is checked
(by its provider's module, pipelines/formats/), and every custom_id for being used once, before
anything is written.

A request's sampling means what it means at its provider: what the request leaves out is the
provider's default (OpenAI and Anthropic sample at temperature 1.0), unless the spec's
`sampling` sets that field, which then is the default for the whole file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from operators.engine_args import redact_url
from pipelines.formats.lines import parse_line
from pipelines.formats.request_checks import RequestModels, check_request_rows
from pipelines.formats.request_models import check_adapters
from pipelines.planning.inputs import InputError, expand_paths, file_version, first_repeat, hash_values, repeated_hashes
from pipelines.planning.start_over import refuse_while_running
from pipelines.spec.embed import embedding_models
from pipelines.store.output import OutputError, OutputStore
from pipelines.store.records import new_id
from spotbatch.errors import BatchFileError, SpecError

if TYPE_CHECKING:
    from pipelines.spec import InputSpec

INPUT_DIR = "_spotbatch/input"
SOURCE = "_spotbatch/batch_source.json"  # beside, not inside, the folder read as input
CONVERSION = 2  # what the Parquet holds; a folder made by another conversion is made again
ROWS_PER_SHARD = 50_000
CHAT = "/v1/chat/completions"  # the endpoint of outputs read before the endpoint was written down


def _listing(paths: list[str], storage_options: dict[str, Any]) -> list[dict[str, Any]]:
    files = []
    for path in paths:
        fs, fpath = url_to_fs(path, **storage_options)
        for m in sorted(expand_paths(fs, fpath)):
            info = fs.info(m)
            files.append({"path": fs.unstrip_protocol(m), "size": info.get("size"), "version": file_version(info)})
    if not files:
        raise InputError(f"no batch files at {', '.join(paths)}")
    return files


def read_line(provider, line: str, where: str, models: list[str] | None) -> tuple[ModuleType, list[dict[str, Any]]]:
    """One request line of a provider's file: its endpoint's module and the rows it becomes, or a
    BatchFileError naming `where` (the file and line) and the field, whatever the line holds."""
    return provider.read_request(parse_line(line, where), where, models)


def endpoint_of(store: OutputStore) -> str | None:
    """The endpoint of the batch files an output's run read (None: its input was not batch files)."""
    source = store.read(SOURCE)
    if source is None:
        return None
    found = json.loads(source)
    return found.get("endpoint", CHAT) if isinstance(found, dict) else CHAT


def read_batch_files(provider, source: InputSpec, store: OutputStore, new_run: bool = False,
                     models: RequestModels | None = None) -> tuple[str, str]:
    """Read the JSONL files (`source.paths`, with `source.storage_options`) into Parquet under the
    output (once per version of the files); returns the folder to read as input, and the files'
    endpoint. Files that changed under an output holding a run are refused before anything is
    rewritten (with `new_run`, read again once no run works on the output: that run is moved aside). `models`:
    the spec's models and sampling (RequestModels; None: one model, the spec's defaults)."""
    models = models or RequestModels()
    storage_options = source.storage_options
    listing = {"conversion": CONVERSION, "provider": provider.NAME, "files": _listing(source.paths, storage_options)}
    previous = store.read(SOURCE)
    old = None if previous is None else json.loads(previous)
    if isinstance(old, dict) and {k: v for k, v in old.items() if k not in ("folder", "endpoint")} == listing:
        return store._path(old.get("folder", INPUT_DIR)), old.get("endpoint", CHAT)
    if not new_run and store.read_manifest() is not None:  # a run planned on other files, or on no batch files
        raise OutputError(_changed(store, old, listing, provider))
    # A bad line, or a custom_id used twice, refuses the run and leaves the output as it was.
    endpoint = _check_requests(provider, listing["files"], storage_options, models)
    if new_run:
        refuse_while_running(store)  # the input of a run still working stays as it is
    folder = _convert(provider, listing["files"], storage_options, store, (endpoint, models.names))
    # The switch: runs read the new folder from here on; until here, the one before (a crash
    # while converting leaves a folder nothing names).
    store.put(SOURCE, json.dumps({**listing, "folder": folder, "endpoint": endpoint.ENDPOINT}).encode())
    if old is not None:
        _remove_conversion(store, old.get("folder", INPUT_DIR) if isinstance(old, dict) else INPUT_DIR)
    return store._path(folder), endpoint.ENDPOINT


def _changed(store: OutputStore, old: Any, listing: dict[str, Any], provider) -> str:
    """Why the batch files differ from those the output's run was planned on."""
    before = {f["path"]: f for f in (old.get("files", []) if isinstance(old, dict) else old or [])}
    changed = [f["path"] for f in listing["files"] if before.get(f["path"]) != f] or sorted(before)
    if old is None:
        changed = ["its run was planned on no batch files"]
    elif not isinstance(old, dict) or old.get("conversion") != CONVERSION:
        changed = ["read by an earlier spotbatch, which kept fewer of each request's fields"]
    elif old.get("provider") != provider.NAME:
        changed = [f"read as {old.get('provider')}'s format, now {provider.NAME}'s"]
    return (f"output path {store.url} holds a run of other batch files; what differs from it: input files "
            f"({', '.join(changed[:3])}). Use a new output path, or --new-run to move its results aside "
            f"and start over.")


def _check_requests(provider, files: list[dict[str, Any]], storage_options: dict[str, Any],
                    models: RequestModels) -> ModuleType:
    """Every request line checked, one endpoint in all, and every custom_id used once across the
    files, reading them twice at most and keeping 8 bytes a line (pipelines/planning/inputs.py:
    check_unique_ids); returns the endpoint's module."""
    endpoint: list[ModuleType] = []
    hashes = [hash_values(ids) for ids, _ in _id_chunks(provider, files, storage_options, models, endpoint)]
    repeated = repeated_hashes(hashes)
    found = first_repeat(_id_chunks(provider, files, storage_options, models.names), repeated) if repeated else None
    if found is not None:
        custom_id, first, second = found
        raise BatchFileError(f"{second}: custom_id {custom_id!r} is used already, at {first}; each request "
                         f"needs a custom_id of its own (its answer is found by it)")
    if not endpoint:  # no request lines: the provider's first endpoint, as a line without a url
        from pipelines.formats import ENDPOINTS

        return ENDPOINTS[provider.ENDPOINT]
    return endpoint[0]


def _id_chunks(provider, files: list[dict[str, Any]], storage_options: dict[str, Any],
               models: RequestModels | list[str] | None,
               endpoint: list | None = None) -> Iterator[tuple[list[str], list[str]]]:
    """The custom_ids of the checked request lines, and where each is, a shard's worth at a time;
    `endpoint` gets the files' endpoint module; with RequestModels, tools a request's model cannot
    parse are refused."""
    ids: list[str] = []
    wheres: list[str] = []
    rules = models if isinstance(models, RequestModels) else None
    for where, request, module, rows in _requests(provider, files, storage_options, rules.names if rules else models):
        if endpoint is not None and not endpoint:
            endpoint.append(module)
        if rules is not None:
            check_request_rows(rows, where, module, rules)
            check_adapters(rows, where, rules, getattr(provider, "MODEL_FIELD", "body.model"))
        ids.append(request)
        wheres.append(where)
        if len(ids) >= ROWS_PER_SHARD:
            yield ids, wheres
            ids, wheres = [], []
    if ids:
        yield ids, wheres


def _convert(provider, files: list[dict[str, Any]], storage_options: dict[str, Any], store: OutputStore,
             read_as: tuple[ModuleType, list[str] | None]) -> str:
    """The request lines written as Parquet into a new folder, in the columns of `read_as`'s
    endpoint (and its models); returns the folder's name. A failure on the way removes what was
    written."""
    folder = f"{INPUT_DIR}/{new_id()}"
    shard, rows = 0, []
    endpoint, models = read_as

    def flush() -> None:
        nonlocal shard, rows
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=endpoint.SCHEMA), buf)
        store.put(f"{folder}/part-{shard:05d}.parquet", buf.getvalue())
        shard, rows = shard + 1, []

    try:
        for _, _, _, request_rows in _requests(provider, files, storage_options, models):
            rows.extend(request_rows)
            if len(rows) >= ROWS_PER_SHARD:
                flush()
        if rows or shard == 0:
            flush()
    except BaseException:
        _remove_conversion(store, folder)
        raise
    return folder


def _remove_conversion(store: OutputStore, folder: str) -> None:
    """Remove a folder of converted input; the first conversions wrote theirs straight into
    INPUT_DIR, beside the folders of later ones."""
    if not store.exists(folder):
        return
    if folder != INPUT_DIR:
        store.remove(folder, recursive=True)
        return
    for name in store.find(INPUT_DIR):
        if name.rsplit("/", 1)[0] == INPUT_DIR and name.endswith(".parquet"):
            store.remove(name)


def _requests(provider, listing: list[dict[str, Any]], storage_options: dict[str, Any],
              models: list[str] | None) -> Iterator[tuple[str, str, ModuleType, list[dict[str, Any]]]]:
    """Where each request line of the listed files is, its custom_id, its endpoint's module and
    its rows, in order. A line of another endpoint than the first line's is refused."""
    first: tuple[ModuleType, str] | None = None
    for f in listing:
        fs, fpath = url_to_fs(f["path"], **storage_options)
        with fs.open(fpath, "rb") as fh:  # JSON Lines are UTF-8, whatever this machine's locale
            for n, raw in enumerate(fh, 1):
                where = f"{f['path']} line {n}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise BatchFileError(f"{where}: not UTF-8 text (byte {err.start + 1} of the line)") from None
                if not line.strip():
                    continue
                request = parse_line(line, where)
                endpoint, rows = provider.read_request(request, where, models)
                first = first or (endpoint, where)
                if endpoint is not first[0]:
                    raise BatchFileError(f"{where}: url {endpoint.ENDPOINT} differs from {first[1]}'s "
                                         f"{first[0].ENDPOINT}: a batch holds one endpoint's requests, as at "
                                         f"OpenAI; put each endpoint's requests in a batch (and an output) of "
                                         f"their own")
                yield where, request["custom_id"], endpoint, rows


def first_request(source: InputSpec, models: list[str] | None,
                  asks: Callable[[dict[str, Any]], bool]) -> tuple[str, dict[str, Any]] | None:
    """Where the first request line of the batch files is one of whose rows `asks`, and that row."""
    from pipelines.formats import PROVIDERS

    files = _listing(source.paths, source.storage_options)
    for where, _, _, rows in _requests(PROVIDERS[source.kind], files, source.storage_options, models):
        for row in rows:
            if asks(row):
                return where, row
    return None


def resolve_input(spec, new_run: bool = False):
    """For a spec whose input is a provider's batch files, the same spec reading the Parquet made
    from them, each row with its request's own sampling over the provider's defaults (and the
    spec's `sampling` fields that are set, which stand in for the provider's)."""
    from pipelines.formats import ENDPOINTS, PROVIDERS

    provider = PROVIDERS.get(spec.input.kind)
    if provider is None:
        return spec
    store = OutputStore(spec.output.path, spec.output.storage_options)
    store.check_is_ours()  # never write into a folder that holds someone else's files
    written = spec.sampling.model_dump(mode="json", include=spec.sampling.model_fields_set)
    models = RequestModels(sorted(spec.models) if spec.routed else None,
                           dict(spec.models) if spec.routed else {None: spec.model}, written,
                           [] if spec.routed else sorted(spec.model.adapters),
                           None if spec.routed else redact_url(spec.model.name))
    folder, url = read_batch_files(provider, spec.input, store, new_run, models)
    endpoint = ENDPOINTS[url]
    data = spec.model_dump(mode="json")
    if spec.model.adapters:  # a request's model picks its adapter (pipelines/formats/request_models.py checked each)
        data["input"]["adapter_column"] = "model"
    data["input"].update(kind="parquet", paths=[store.fs.unstrip_protocol(folder)],
                         storage_options=spec.output.storage_options, prompt_column=endpoint.PROMPT_COLUMN,
                         format=endpoint.FORMAT)
    data.update(getattr(endpoint, "SPEC", {}))  # what the endpoint's rows need of the rest of the spec
    data["sampling"] = {**data["sampling"], **endpoint.DEFAULT_SAMPLING, **written}
    task = getattr(endpoint, "TASK", "generate")  # the endpoint decides: /v1/embeddings embeds
    if "task" in spec.model_fields_set and spec.task != task:
        raise SpecError(f"task is {spec.task}, but the batch files' requests are {url} requests, which "
                        f"{'embed' if task == 'embed' else 'generate'}: remove task from the spec")
    data["task"] = task
    if task == "embed":
        embedding_models(spec, data)  # pipelines/spec/embed.py
    return type(spec).model_validate(data)
