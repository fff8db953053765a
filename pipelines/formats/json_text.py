"""JSON a user wrote (a batch file's request line, a row's own sampling), read so that whatever
it holds gives a value every later step can take, or says what is wrong and where: JSON's own
numbers only (Python's json also reads NaN, Infinity and 1e400 as a float nobody can send on),
text that is Unicode (no lone surrogate, which no file can store), and nesting no deeper than
MAX_DEPTH (so repr, json.dumps and pydantic never run out of stack on it).

A text that is not JSON at all raises json.JSONDecodeError, as json.loads does; everything
else raises NotJSON, whose message names the field.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # far past any real request (a JSON schema nests a handful of levels)


class NotJSON(ValueError):
    """Raised when a value is not plain JSON, or is nested past MAX_DEPTH; the message names the field.
    Caught where it is checked, and said as a BatchFileError or a row's error."""


def _refuse_constant(name: str) -> Any:
    raise NotJSON(f"{name} is not a JSON number")


def load_json(text: str) -> Any:
    """The value `text` holds, checked by `check_json_value`.

    >>> load_json('{"a": [1, "x"]}')
    {'a': [1, 'x']}
    >>> load_json('{"t": NaN}')
    Traceback (most recent call last):
    pipelines.formats.json_text.NotJSON: NaN is not a JSON number
    >>> load_json('{"t": [1e400]}')
    Traceback (most recent call last):
    pipelines.formats.json_text.NotJSON: field t[0]: a number past a float's range (inf)
    """
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise NotJSON(f"nested deeper than {MAX_DEPTH} levels") from None
    except (json.JSONDecodeError, NotJSON):
        raise
    except ValueError:  # int() refuses a number of more digits than sys.get_int_max_str_digits()
        raise NotJSON("a number has too many digits to read") from None
    check_json_value(value)
    return value


def check_json_value(value: Any) -> None:
    """Raise NotJSON, naming the field, for a part of `value` that is not plain JSON: a number
    that is not finite, text with a lone surrogate, nesting past MAX_DEPTH, or a value of
    another type (bytes, a date: what a Parquet struct may hold). Walks without recursion.

    >>> check_json_value({"a": [{"b": "\\ud800"}]})
    Traceback (most recent call last):
    pipelines.formats.json_text.NotJSON: field a[0].b: text that is not Unicode (a lone surrogate '\\ud800')
    """
    todo: list[tuple[Any, str, int]] = [(value, "", 0)]
    while todo:
        item, path, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise NotJSON(f"field {path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, float) and not math.isfinite(item):
            what = "NaN is not a JSON number" if math.isnan(item) else f"a number past a float's range ({item})"
            raise NotJSON(f"field {path or 'value'}: {what}")
        elif isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise NotJSON(f"field {path or 'value'}: a key of type {type(key).__name__} is not JSON")
                _check_text(key, path)
                todo.append((inner, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(item, list):
            todo.extend((inner, f"{path}[{i}]", depth + 1) for i, inner in enumerate(item))
        elif not (item is None or isinstance(item, (int, float))):  # bool is an int
            raise NotJSON(f"field {path or 'value'}: a {type(item).__name__} is not a JSON value")


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise NotJSON(f"field {path or 'value'}: text that is not Unicode (a lone surrogate "
                      f"{ascii(text[err.start])})") from None
