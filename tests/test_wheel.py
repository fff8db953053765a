"""The wheel a user installs (`pip install .`, a cluster image, a job's runtime env) holds every
module and data file of the tree, and they import from where it was installed, outside the
checkout, with no editable install to fall back on."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("operators", "pipelines", "cluster", "jobs")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    import shutil

    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: setuptools leaves a build/ folder that a later build would reuse
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("spotbatch-*.whl")
    return built


def tree_files() -> set[str]:
    files = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".yaml", ".crontab"):
                files.add(path.relative_to(ROOT).as_posix())
    return files


def test_the_wheel_holds_every_module_and_data_file_of_the_tree(wheel):
    held = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(tree_files() - held)
    assert not missing, f"the wheel lacks {missing}"


def test_every_module_imports_from_the_installed_wheel_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    modules = sorted(f[:-3].replace("/", ".").removesuffix(".__init__") for f in tree_files() if f.endswith(".py"))
    check = f"""
import importlib, sys
# The editable install of this checkout must not answer for what the wheel lacks.
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path = [p for p in sys.path if p.rstrip("/") != {str(ROOT)!r}]
for name in {modules!r}:
    module = importlib.import_module(name)
    assert module.__file__.startswith({str(target)!r}), (name, module.__file__)
from cluster.prices import CATALOG
assert CATALOG.exists(), CATALOG
print("imported", len({modules!r}))
"""
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"imported {len(modules)}"
