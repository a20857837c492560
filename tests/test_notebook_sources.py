"""The committed notebooks are what notebooks/make_notebooks.py writes (cells, not outputs), and every install cell
and badge, in them and in the README, names the one install source: pyproject.toml's Repository URL."""

import importlib.util
import pathlib
import re

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def made():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "notebooks" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # builds the notebooks in memory; main() alone writes or executes
    return module


def test_every_committed_notebook_is_what_the_script_writes(made):
    committed = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert committed == sorted(made.NOTEBOOKS)
    for name, nb in made.NOTEBOOKS.items():
        saved = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        ours = [(c.cell_type, c.source) for c in nb.cells]
        theirs = [(c.cell_type, c.source) for c in saved.cells]
        assert theirs == ours, f"notebooks/{name}.ipynb differs from its source: python notebooks/make_notebooks.py"


def test_one_install_source_for_notebooks_and_readme(made):
    repo = made.repository()
    assert repo == made.REPO and re.fullmatch(r"[\w.-]+/[\w.-]+", repo)
    for name, nb in made.NOTEBOOKS.items():
        text = "\n".join(c.source for c in nb.cells)
        assert f"git+https://github.com/{repo}" in text, name  # the Colab install cell
        assert f"colab.research.google.com/github/{repo}/blob/main/notebooks/{name}.ipynb" in text, name
        assert f"mybinder.org/v2/gh/{repo}/main" in text, name
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?:git\+https://github\.com/|colab\.research\.google\.com/github/|"
                           r"mybinder\.org/v2/gh/)([\w.-]+/[\w.-]+?)(?:/|\)|\"|$)", readme))
    assert named <= {repo}, named  # (links that cite other projects are not install sources)
