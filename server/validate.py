"""A batch's input file checked before it runs, line by line, as OpenAI's `validating` step:
each line is read by the same reader a run uses (pipelines/formats/openai.py, which names the
line and the field), plus what only the server knows: the batch's endpoint, the models it
serves, the requests a file may hold. Every bad line is reported (up to MAX_ERRORS), each in
`errors.data` with its line number, as OpenAI does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.formats import openai
from pipelines.formats.batch_files import read_line
from pipelines.formats.lines import parse_line, shown
from server.objects import error_entry
from server.request_checks import check_tools
from spotbatch.errors import BatchFileError

MAX_ERRORS = 100


@dataclass
class Checked:
    total: int = 0
    models: list[str] = field(default_factory=list)  # in the order the file first names them
    errors: list[dict[str, Any]] = field(default_factory=list)


def check_file(lines, endpoint: str, served: dict[str, Any], max_requests: int) -> Checked:
    """`lines`: the file's raw lines (bytes); `served`: serve.yaml's models (name -> ServedModel).
    Nothing is raised: what is wrong is in `errors`."""
    checked, seen = Checked(), set()
    for n, raw in enumerate(lines, 1):
        if len(checked.errors) >= MAX_ERRORS:
            break
        if not raw.strip():
            continue
        checked.total += 1
        if checked.total > max_requests:
            checked.errors.append(error_entry(f"the file holds more than {max_requests:,} requests, the most a "
                                              f"batch may hold; split it", n, "too_many_requests"))
            break
        problem = _check_line(raw, n, endpoint, served, seen)
        if isinstance(problem, dict):
            checked.errors.append(problem)
        elif problem not in checked.models:
            checked.models.append(problem)
    if not checked.total and not checked.errors:
        checked.errors.append(error_entry("the file holds no requests", None, "empty_file"))
    return checked


def _check_line(raw: bytes, n: int, endpoint: str, served: dict[str, Any], seen: set[str]) -> dict[str, Any] | str:
    """The model the line names, or its error entry."""
    where = f"line {n}"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return error_entry(f"{where}: not UTF-8 text (byte {err.start + 1} of the line)", n, "invalid_json_line")
    try:
        module, rows = read_line(openai, line, where, None)
        request = parse_line(line, where)
    except BatchFileError as err:
        text = str(err)
        return error_entry(text, n, "invalid_json_line" if "not JSON" in text else "invalid_request")
    if module.ENDPOINT != endpoint:
        return error_entry(f"{where}: url {module.ENDPOINT} is not the batch's endpoint {endpoint}", n,
                           "invalid_url", "url")
    model = request["body"].get("model")
    if model not in served:
        return error_entry(f"{where}: body.model {shown(model)} is not a model this server serves "
                           f"({', '.join(sorted(served))})", n, "model_not_found", "body.model")
    try:  # the run refuses the whole batch for it: told here, by line
        check_tools(rows, where, served, module)
    except BatchFileError as err:
        return error_entry(str(err), n, "invalid_request", "body.tools")
    if request["custom_id"] in seen:
        return error_entry(f"{where}: custom_id {shown(request['custom_id'])} is used by an earlier line; each "
                           f"request needs a custom_id of its own", n, "duplicate_custom_id", "custom_id")
    seen.add(request["custom_id"])
    return model
