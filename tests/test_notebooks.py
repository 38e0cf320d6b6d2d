"""The tutorial notebooks: in sync with their generator, committed with outputs, and running headless.

Each notebook is executed top to bottom in a fresh ``python3`` kernel (nbclient) in quick mode
(``RIID_FAST=1``), on the shipped checkpoints when they exist and on a tiny pipeline otherwise.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SHIPPED = ROOT / "checkpoints"
CELL_TIMEOUT = 300  # seconds; a quick-mode cell takes a few
MAX_BYTES = 1_500_000  # committed notebooks stay small enough to browse
# figures each notebook must show in quick mode (its plots, not counting widgets)
MIN_FIGURES = {"01_coordinates": 6, "02_training": 6, "03_latents": 8, "04_resolution_invariance": 8}


def _generator():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _figures(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


def _shipped_pipeline() -> bool:
    return all((SHIPPED / part / "model.safetensors").is_file() for part in ("autoencoder", "diffuser", "conditioner"))


@pytest.mark.parametrize("name", sorted(MIN_FIGURES))
def test_committed_notebook_matches_generator_and_has_outputs(name):
    """Editing a notebook by hand, or the generator without regenerating, fails here."""
    committed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    built = _generator().build(name)
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in built.cells], \
        f"{name}.ipynb is out of date: run python notebooks/build_notebooks.py --execute {name[:2]}"
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{name}.ipynb is committed without its outputs"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert _figures(committed) >= MIN_FIGURES[name]
    assert (NOTEBOOKS / f"{name}.ipynb").stat().st_size < MAX_BYTES


@pytest.fixture(scope="module")
def notebook_env(request, tmp_path_factory) -> dict:
    """Environment for the kernels: quick mode, a pipeline folder, and (when possible) a classifier."""
    env = {"RIID_FAST": "1"}
    env["RIID_CHECKPOINT"] = str(SHIPPED if _shipped_pipeline() else request.getfixturevalue("tiny_pipeline_dir"))
    if not (SHIPPED / "classifier" / "model.safetensors").is_file():
        try:  # an untrained classifier: enough to exercise notebook 04's on-the-fly evaluation
            from riid.checkpoint import save_model
            from riid.classifier import Classifier, ClassifierConfig

            env["RIID_CLASSIFIER"] = str(save_model(Classifier(ClassifierConfig()),
                                                    tmp_path_factory.mktemp("classifier")))
        except (ImportError, ValueError):
            pass  # the notebook then says that no evaluation is available
    return env


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MIN_FIGURES))
def test_notebook_runs_headless(name, notebook_env, tmp_path, monkeypatch):
    for key, value in {**notebook_env, "TMPDIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:  # run from a clean slate, not from the committed outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # the working directory is notebooks/, as when a user opens it in JupyterLab; the first cell finds the root
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()  # raises on the first failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert _figures(nb) >= MIN_FIGURES[name]
    assert not list(tmp_path.glob("riid_notebook_*")), "notebook 02 left its temporary training folder behind"
    if name == "04_resolution_invariance" and "RIID_CLASSIFIER" in notebook_env:
        notes = [o.get("data", {}).get("text/markdown", "") for c in code for o in c.outputs]
        assert not [n for n in notes if "No evaluation" in n], "the on-the-fly evaluation did not run"
