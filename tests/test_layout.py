"""The layout the project set itself (issue 29), kept by a test rather than by memory.

Files of pipelines/, operators/ and cluster/ stay under about 300 lines, classes under 200,
functions under 60 lines and 5 parameters (self and cls not counted; what travels together
becomes a small frozen dataclass). Nothing outside the storage layer (pipelines/store/storage/)
names a local file system (LocalFileSystem, LocalStorage, their modules, under any alias),
compares a protocol with "file", or branches on a store's `.local`. Imports point one way: operators/
imports neither pipelines/ nor cluster/, and cluster/ does not import pipelines/
(the docs' design page). Errors live in spotbatch/errors.py, each saying "Raised when ...".

The ALLOWED_* lists name what is past a limit on purpose, each with why. A new offender fails
at once; an entry that is fixed fails too, until it is removed, so the lists only shrink.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import spotbatch.errors

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ("pipelines", "operators", "cluster")
EVERY_PACKAGE = (*MEASURED, "jobs", "spotbatch", "server")
STORAGE_LAYER = "pipelines/store/storage/"
MAX_FILE_LINES, MAX_CLASS_LINES, MAX_FUNCTION_LINES, MAX_PARAMS = 300, 200, 60, 5

# Past the limits on purpose, each with why. `run` is the public entry point: its keywords are
# what every caller (the API, the CLI, notebooks, tests) passes, so they stay as they are.
ALLOWED_LONG_FILES: dict[str, str] = {}
ALLOWED_LONG_CLASSES: dict[str, str] = {}
ALLOWED_LONG_FUNCTIONS: dict[str, str] = {}
ALLOWED_MANY_PARAMS = {
    "pipelines/run.py::run": "the public entry point's keyword arguments",
}
ALLOWED_LOCAL_BRANCHES: dict[str, str] = {}
# Exceptions that never reach a caller: raised and caught beside each other (spotbatch/errors.py says so).
INTERNAL_SIGNALS = {
    "pipelines/formats/json_text.py::NotJSON",
    "operators/engine.py::RowRejected",
    "pipelines/stream/unit_rows.py::InputChanged",
    "pipelines/unit/protocol.py::StorageFault",
    "server/objects.py::ApiError",  # becomes OpenAI's error body in the server's handler (server/app.py)
}


def modules(roots=MEASURED):
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            text = path.read_text()
            yield rel, text, ast.parse(text)


def definitions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every class and function, nested ones named by their parents."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from definitions(node, f"{name}.")
        else:
            yield from definitions(node, prefix)


def lines(node: ast.AST) -> int:
    return node.end_lineno - node.lineno + 1


def params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = node.args
    return len([x for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg not in ("self", "cls")])


def measure(roots=MEASURED) -> dict[str, dict[str, int]]:
    """Every offender against the limits, by kind: {kind: {where: size}}."""
    found: dict[str, dict[str, int]] = {"file": {}, "class": {}, "function": {}, "params": {}}
    for rel, text, tree in modules(roots):
        if text.count("\n") > MAX_FILE_LINES:
            found["file"][rel] = text.count("\n")
        for name, node in definitions(tree):
            where = f"{rel}::{name}"
            if isinstance(node, ast.ClassDef):
                if lines(node) > MAX_CLASS_LINES:
                    found["class"][where] = lines(node)
                continue
            if lines(node) > MAX_FUNCTION_LINES:
                found["function"][where] = lines(node)
            if params(node) > MAX_PARAMS:
                found["params"][where] = params(node)
    return found


ALLOWED = {"file": ALLOWED_LONG_FILES, "class": ALLOWED_LONG_CLASSES, "function": ALLOWED_LONG_FUNCTIONS,
           "params": ALLOWED_MANY_PARAMS}
LIMITS = {"file": f"{MAX_FILE_LINES} lines", "class": f"{MAX_CLASS_LINES} lines",
          "function": f"{MAX_FUNCTION_LINES} lines", "params": f"{MAX_PARAMS} parameters"}


def test_no_new_file_class_or_function_passes_the_limits():
    found = measure()
    new = [f"{where}: {size} (limit {LIMITS[kind]})" for kind, offenders in found.items()
           for where, size in offenders.items() if where not in ALLOWED[kind]]
    assert not new, "split these at their seams (a frozen dataclass for what travels together):\n  " + \
        "\n  ".join(new)


def test_the_entry_points_keep_the_size_limits_too():
    """jobs/ and spotbatch/ are thin (parse, call, print), so files, classes and functions keep
    the same sizes; their parameter lists are the commands' options and are not counted."""
    found = measure(("jobs", "spotbatch", "server"))
    big = [f"{where}: {size} (limit {LIMITS[kind]})" for kind in ("file", "class", "function")
           for where, size in found[kind].items()]
    assert not big, "split these at their seams:\n  " + "\n  ".join(big)


def test_the_allow_lists_hold_only_what_is_still_past_a_limit():
    found = measure()
    fixed = [f"{where} ({kind}: {why})" for kind, allowed in ALLOWED.items()
             for where, why in allowed.items() if where not in found[kind]]
    assert not fixed, "fixed: remove from tests/test_layout.py's ALLOWED_* lists:\n  " + "\n  ".join(fixed)


LOCAL_CLASSES = {"LocalFileSystem", "LocalStorage"}  # fsspec's local file system, and ours
LOCAL_MODULES = {"fsspec.implementations.local", "pipelines.store.storage.local"}
LOCAL_PROTOCOLS = {"file", "local", "file://", "local://"}


def local_branches(tree: ast.AST) -> list[int]:
    """Lines that tell local from remote: that import or name a local file system's class or
    module (under any alias: the import or the assignment that makes one is named), compare a
    protocol with "file" or "local", or test a `.local` attribute (if, while, a conditional
    expression, a comprehension's if)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in LOCAL_CLASSES \
                or isinstance(node, ast.Attribute) and node.attr in LOCAL_CLASSES \
                or isinstance(node, ast.ImportFrom) and _imports_local(node) \
                or isinstance(node, ast.Import) and any(a.name in LOCAL_MODULES for a in node.names) \
                or isinstance(node, ast.Compare) and _compares_protocol_with_local(node):
            found.append(node.lineno)
        tests = [node.test] if isinstance(node, (ast.If, ast.IfExp, ast.While)) else \
            node.ifs if isinstance(node, ast.comprehension) else []
        found += [sub.lineno for test in tests for sub in ast.walk(test)
                  if isinstance(sub, ast.Attribute) and sub.attr == "local"]
    return sorted(set(found))


def _imports_local(node: ast.ImportFrom) -> bool:
    module = node.module or ""
    return module in LOCAL_MODULES or any(
        a.name in LOCAL_CLASSES or f"{module}.{a.name}" in LOCAL_MODULES for a in node.names)


def _compares_protocol_with_local(node: ast.Compare) -> bool:
    """`fs.protocol == "file"`, `"file" in fs.protocol`, `protocol in ("file", "local")`, ..."""
    parts = [node.left, *node.comparators]
    names = {n.id if isinstance(n, ast.Name) else n.attr for part in parts for n in ast.walk(part)
             if isinstance(n, (ast.Name, ast.Attribute))}
    strings = {n.value for part in parts for n in ast.walk(part)
               if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return any("protocol" in name for name in names) and bool(strings & LOCAL_PROTOCOLS)


def test_only_the_storage_layer_tells_local_from_remote():
    where = {rel: local_branches(tree) for rel, _, tree in modules(EVERY_PACKAGE) if not rel.startswith(STORAGE_LAYER)}
    new = [f"{rel}, lines {found}" for rel, found in where.items() if found and rel not in ALLOWED_LOCAL_BRANCHES]
    assert not new, f"local versus remote is {STORAGE_LAYER}'s to tell:\n  " + "\n  ".join(new)
    fixed = [rel for rel in ALLOWED_LOCAL_BRANCHES if not where.get(rel)]
    assert not fixed, f"fixed: remove from ALLOWED_LOCAL_BRANCHES: {fixed}"


def test_the_check_finds_a_local_branch_and_a_long_signature():
    """The checks above see what they look for (else an empty allow-list would prove nothing)."""
    tree = ast.parse("from fsspec.implementations.local import LocalFileSystem\n"
                     "def f(store, a, b, c, d, e):\n    return 1 if store.local else 2\n")
    assert local_branches(tree) == [1, 3]
    assert local_branches(ast.parse(
        "from fsspec.implementations.local import LocalFileSystem as Disk\n"  # an alias
        "from fsspec.implementations import local\n"
        "import fsspec.implementations.local as lfs\n"
        "on_disk = isinstance(fs, lfs.LocalFileSystem)\n"
        "if fs.protocol == 'file':\n    pass\n"
        "local_ = 'file' in fs.protocol\n"
        "here = get_protocol(url) in ('file', 'local')\n"
        "s3 = fs.protocol == 's3'\n")) == [1, 2, 3, 4, 5, 7, 8]
    assert [params(node) for _, node in definitions(tree)] == [6]


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import, at the top or inside a function."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_imports_point_one_way():
    refused = {"operators": ("pipelines", "cluster", "server"), "cluster": ("pipelines", "server"),
               "pipelines": ("server",)}
    wrong = [f"{rel}:{line} imports {module}" for rel, _, tree in modules(tuple(refused))
             for line, module in imported(tree) if module.split(".")[0] in refused[rel.split("/")[0]]]
    assert not wrong, "jobs -> pipelines -> operators, and cluster is used by pipelines:\n  " + "\n  ".join(wrong)


def test_errors_live_in_one_module_and_say_when_they_are_raised():
    ours = {name for name, value in vars(spotbatch.errors).items()
            if isinstance(value, type) and issubclass(value, BaseException)}
    undocumented = [name for name in sorted(ours)
                    if not (getattr(spotbatch.errors, name).__doc__ or "").startswith("Raised ")]
    assert not undocumented, f"say 'Raised when ...' first: {undocumented}"
    elsewhere, seen = [], set()
    for rel, _, tree in modules(EVERY_PACKAGE):
        for name, node in definitions(tree):
            bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in getattr(node, "bases", [])]
            builtin = [b for b in bases if isinstance(getattr(builtins, b, None), type)
                       and issubclass(getattr(builtins, b), BaseException)]
            if rel == "spotbatch/errors.py" or not builtin or set(bases) & ours:
                continue
            seen.add(f"{rel}::{name}")
            if f"{rel}::{name}" not in INTERNAL_SIGNALS:
                elsewhere.append(f"{rel}::{name}")
    assert not elsewhere, ("an error a caller may see belongs in spotbatch/errors.py (or derives from one "
                           f"there); a signal caught beside it goes in INTERNAL_SIGNALS: {elsewhere}")
    assert seen == INTERNAL_SIGNALS, f"INTERNAL_SIGNALS names classes that are gone: {INTERNAL_SIGNALS - seen}"
