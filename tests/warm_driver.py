"""A driver that stays up (as a notebook does) for tests/test_warm_engines.py: runs the spec at
argv[1] into argv[2], says so in argv[2]/../first.done, waits for argv[2]/../go, then runs it
into argv[3]. Ray is the cluster at RAY_ADDRESS."""

import json
import sys
import time
from pathlib import Path

import ray

from pipelines.run import run
from pipelines.spec import load_spec


def main() -> None:
    spec_path, first, second = sys.argv[1:4]
    here = Path(first).parent
    ray.init()
    spec = load_spec(spec_path)
    one = run(spec.model_copy(update={"output": spec.output.model_copy(update={"path": first})}), interactive=False)
    (here / "first.done").write_text(json.dumps({"finished": one.finished}))
    while not (here / "go").exists():
        time.sleep(0.2)
    two = run(spec.model_copy(update={"output": spec.output.model_copy(update={"path": second})}), interactive=False)
    (here / "second.done").write_text(json.dumps({"finished": two.finished, "rows": two.rows}))


if __name__ == "__main__":
    main()
