"""The docs site: it builds with `mkdocs build --strict` (a broken link, a missing page or a
page left out of the nav fails), its spec reference is what the schema says today, and the
README stays a newcomer's page whose links lead somewhere."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference" / "spec.md"


def test_spec_reference_is_current():
    """docs/reference/spec.md is generated from pipelines.spec; regenerate it when the spec changes."""
    made = subprocess.run([sys.executable, "-m", "jobs.spec_reference"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    assert made == REFERENCE.read_text(), (
        "docs/reference/spec.md is stale: run `python -m jobs.spec_reference > docs/reference/spec.md`")


def test_spec_reference_names_every_field():
    from jobs.spec_reference import sections
    from pipelines.spec import PipelineSpec

    page = REFERENCE.read_text()
    for model, path in sections(PipelineSpec, "").items():
        for name, field in model.model_fields.items():
            assert f"`{path + '.' if path else ''}{name}" in page
            if field.description:
                assert field.description in page


def test_docs_build_strict(tmp_path):
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                            str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "spec" / "index.html").is_file()


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
