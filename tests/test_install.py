"""A non-editable install carries its weights: `riid sample` works from any folder, outside the checkout.

The project is built and installed (``pip install --no-deps --no-build-isolation .``) into a fresh
virtual environment that sees this interpreter's packages (torch, pip and setuptools are not
reinstalled, and nothing is downloaded), from a copy of the source so that the checkout gains no build/ folder.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BUDGET_S = 120  # venv, build, install and one 32 px sample: 20 s on an idle 2-core CPU, 50 s when busy
LEFT_OUT = ("*.egg-info", "__pycache__", ".git", ".ipynb_checkpoints", "build", "data", "dist", "notebooks",
            "results", "runs", "test-artifacts", "tests", ".venv")


def run(argv, deadline, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()),
                            **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, argv))}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.timeout(2 * BUDGET_S)
def test_installed_package_samples_with_its_own_weights(tmp_path):
    if not all((REPO / "checkpoints" / m / "model.safetensors").is_file()
               for m in ("autoencoder", "diffuser", "conditioner")):
        pytest.skip("no shipped checkpoints in this checkout")
    deadline = time.monotonic() + BUDGET_S
    source, venv, elsewhere = tmp_path / "source", tmp_path / "venv", tmp_path / "elsewhere"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*LEFT_OUT))
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RIID_CHECKPOINTS", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")

    # without its own pip (and the old setuptools ensurepip brings): this interpreter's pip and setuptools
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], deadline, env=env)
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", source], deadline,
        env=env, cwd=elsewhere)
    shutil.rmtree(source)  # nothing may still point into the source tree

    origin = run([python, "-c", "import importlib.util; print(importlib.util.find_spec('riid').origin)"],
                 deadline, env=env, cwd=elsewhere).stdout.strip()
    package = Path(origin).resolve().parent
    assert package.is_relative_to(venv.resolve()), origin  # the installed copy, not the checkout
    for model in ("autoencoder", "diffuser", "conditioner"):  # where riid.pipeline.default_checkpoint() looks
        for name in ("model.safetensors", "config.json"):
            assert (package / "checkpoints" / model / name).is_file(), (
                f"the installed package lacks checkpoints/{model}/{name}: pyproject.toml must list "
                "riid.checkpoints in its packages (mapped to checkpoints/ with its package-data)")
    assert not (package.parent / "checkpoints").exists()  # nothing spilled into site-packages

    out = elsewhere / "out"
    run([venv / "bin" / "riid", "sample", "--digit", "3", "--height", "32", "--width", "32", "--out", out],
        deadline, env=env, cwd=elsewhere)
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["3_0000.png"]
    with Image.open(pngs[0]) as image:
        assert image.format == "PNG" and image.mode == "L" and image.size == (32, 32)
        assert image.getextrema()[1] > 128  # ink drawn by the shipped weights, not a blank canvas
