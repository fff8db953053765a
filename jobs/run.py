"""Entry point for `ray job submit ... -- python -m jobs.run SPEC.yaml [options]`.

The same as `spotbatch run`; under `ray job submit` it joins the cluster through the
RAY_ADDRESS the job runs with, and re-submitting the same job resumes it.
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
