"""Two notices Ray gives when it is imported in a notebook that has no ipywidgets: tqdm's
"IProgress not found" warning and Ray's "Missing packages: ['ipywidgets']" line. Both are about
widget progress bars and rich reprs that spotbatch does not use (its progress is one plain line,
pipelines/progress.py), so they are quieted before Ray is first imported: the `cluster`
package calls this as it is imported, `pipelines` imports `cluster` first, and `jobs` calls it."""

from __future__ import annotations

import logging
import warnings


def quiet_widget_notices() -> None:
    warnings.filterwarnings("ignore", message="IProgress not found")
    logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
