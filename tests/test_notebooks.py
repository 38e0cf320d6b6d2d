"""The tutorial notebooks: in sync with their generator, committed with outputs, and running headless.

Each notebook is executed top to bottom in a fresh ``python3`` kernel (nbclient) in quick mode
(``RIID_FAST=1``), on the shipped checkpoints when they exist and on a tiny pipeline otherwise
(named by ``$RIID_CHECKPOINTS``, as a user would). Run them with OMP_NUM_THREADS=1 on a shared CPU.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from riid.pipeline import CHECKPOINT_ENV

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SHIPPED = ROOT / "checkpoints"
CELL_TIMEOUT = 300  # seconds; a quick-mode cell takes a few
NOTEBOOK_TIMEOUT = 900  # seconds for a whole notebook: 15-70 s each with one thread on a busy 2-core CPU
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


def _has(folder: Path, *parts: str) -> bool:
    return all((folder / part / "model.safetensors").is_file() for part in parts)


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
def notebook_env(request) -> dict:
    """Environment for the kernels: quick mode and a pipeline folder."""
    shipped = _has(SHIPPED, "autoencoder", "diffuser", "conditioner")
    return {"RIID_FAST": "1",
            CHECKPOINT_ENV: str(SHIPPED if shipped else request.getfixturevalue("tiny_pipeline_dir"))}


def test_training_notebook_trains_each_model_into_its_own_folder():
    """Notebook 02's closing commands: the diffuser never writes into the autoencoder's run (its state.pt)."""
    text = "\n".join(c.source for c in _generator().build("02_training").cells if c.cell_type == "markdown")
    ae_out = re.search(r"riid train-autoencoder --out (\S+)", text).group(1)
    diffuser = re.search(r"riid train-diffuser --out (\S+) --autoencoder (\S+)", text)
    assert diffuser.group(2) == f"{ae_out}/autoencoder"
    assert diffuser.group(1) != ae_out and not diffuser.group(1).startswith(ae_out + "/")
    assert "TRAIN_MINUTES" not in text and "RUN_MINUTES" not in text, "the measured time is not filled in"


@pytest.mark.slow
@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
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
    if name == "04_resolution_invariance":  # quick mode evaluates on the fly, where the judges are shipped
        notes = " ".join(o.get("data", {}).get("text/markdown", "") for c in code for o in c.outputs)
        judged = _has(Path(notebook_env[CHECKPOINT_ENV]), "classifier", "realism")
        assert ("Computed here" in notes) == judged and ("No evaluation" in notes) != judged, notes
