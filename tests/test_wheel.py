"""The wheel a user installs (`pip install .`, a cluster image, a job's runtime env) holds every
module and data file of the tree, and they import from where it was installed, outside the
checkout, with no editable install to fall back on."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("spotbatch", "operators", "pipelines", "cluster", "jobs", "server")


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


def install(wheel: Path, tmp_path: Path) -> Path:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return target


def installed_env(target: Path, home: Path) -> dict[str, str]:
    """The installed wheel first on the path, this checkout nowhere: the editable install's finder
    comes after the path, and the working directory is outside the checkout."""
    return {"PYTHONPATH": str(target), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home),
            "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}


def test_every_module_imports_from_the_installed_wheel_outside_the_checkout(wheel, tmp_path):
    target = install(wheel, tmp_path)
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


def test_the_installed_wheel_answers_import_spotbatch_and_the_command(wheel, tmp_path):
    target = install(wheel, tmp_path)
    env = installed_env(target, tmp_path)
    check = f"""
import spotbatch, pipelines
assert spotbatch.__file__.startswith({str(target)!r}) and pipelines.__file__.startswith({str(target)!r})
print(len(spotbatch.__all__))
"""
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().isdigit(), done.stderr[-3000:]
    command = subprocess.run([str(target / "bin" / "spotbatch"), "--help"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert command.returncode == 0 and "usage: spotbatch" in command.stdout, command.stderr[-3000:]


@pytest.mark.engine
def test_the_installed_wheel_runs_a_batch_to_its_end_outside_the_checkout(wheel, tmp_path, tiny_model):
    """The installed command, from a folder outside the checkout, with the code only in the wheel:
    the driver and Ray's workers and engine actors import it from there."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    target = install(wheel, tmp_path)
    work = tmp_path / "work"
    (work / "in").mkdir(parents=True)
    pq.write_table(pa.table({"id": list(range(4)), "text": [f"say {i}" for i in range(4)]}), work / "in" / "p.parquet")
    (work / "spec.yaml").write_text(yaml.safe_dump({
        "input": {"paths": "in/", "prompt_column": "text"},
        "model": {"name": str(tiny_model), "max_model_len": 256, "enforce_eager": True},
        "sampling": {"max_tokens": 4}, "compute": {"actors": 1}, "output": {"path": "out/"}}))
    env = {**installed_env(target, tmp_path), "SPOTBATCH_LOG_DIR": str(tmp_path / "logs")}
    done = subprocess.run([str(target / "bin" / "spotbatch"), "run", "spec.yaml"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    shown = "import json, spotbatch; print(json.dumps(spotbatch.status('out/')))"
    status = subprocess.run([sys.executable, "-c", shown],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr[-3000:]
    figures = json.loads(status.stdout)
    assert figures["finished"] and figures["rows_done"] == 4, figures
