"""Shared fixtures: one tiny pipeline folder per session, built in well under a second."""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest
import torch

from riid import R2ID, RIAE, LabelConditioner, Pipeline, load_pipeline
from riid.presets import AUTOENCODER_PRESETS, DIFFUSER_PRESETS

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent


def tiny_models(seed: int = 0, randomise_heads: bool = True):
    """Untrained tiny autoencoder, diffuser and conditioner (the CLI's tiny presets, wired together).

    The diffuser's zero-initialised output layers make an untrained model predict zero noise
    whatever the digit or guidance; ``randomise_heads`` gives them small random weights so that
    digit, guidance and sampler settings all change the output, as they do after training.
    """
    torch.manual_seed(seed)
    autoencoder = RIAE(AUTOENCODER_PRESETS["tiny"])
    diffuser_config, cond_config = DIFFUSER_PRESETS["tiny"]
    diffuser_config = dataclasses.replace(diffuser_config, latent_channels=autoencoder.config.latent_channels,
                                          cond_dim=cond_config.dim)
    diffuser = R2ID(diffuser_config)
    if randomise_heads:
        with torch.no_grad():
            for name, p in diffuser.named_parameters():
                if "modulation" in name or name.startswith("head"):
                    p.normal_(0, 0.05)
    return autoencoder, diffuser, LabelConditioner(cond_config)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_pipeline")
    Pipeline(*tiny_models()).save(folder)
    return folder


@pytest.fixture
def tiny_pipeline(tiny_pipeline_dir) -> Pipeline:
    return load_pipeline(tiny_pipeline_dir)


@pytest.fixture(scope="session")
def subprocess_env() -> dict:
    """Environment for ``python -m riid.cli`` children: one thread, the repo importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable
