"""Model folders: ``config.json`` (a config dataclass) beside ``model.safetensors``; nothing is unpickled."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .autoencoder import RIAE, RIAEConfig
from .diffuser import R2ID, ConditionerConfig, LabelConditioner, R2IDConfig

MODEL_TYPES = {  # model_type in config.json → (module class, config dataclass); see register_model
    "riae": (RIAE, RIAEConfig),
    "r2id": (R2ID, R2IDConfig),
    "label_conditioner": (LabelConditioner, ConditionerConfig),
}


def register_model(name: str, cls, config_cls) -> None:
    """Let save_model/load_model handle a model type defined outside the core (e.g. the eval classifier)."""
    MODEL_TYPES[name] = (cls, config_cls)


def _type_name(model: torch.nn.Module) -> str:
    for name, (cls, _) in MODEL_TYPES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"cannot save a {type(model).__name__}: not one of {sorted(MODEL_TYPES)}")


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file then rename, so a kill mid-write never leaves a broken file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_model(model: torch.nn.Module, folder) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": _type_name(model), **dataclasses.asdict(model.config)}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda p: save_file(state, str(p)))
    atomic_write(folder / "config.json", lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    return folder


def load_model(folder, expected_type: str | None = None, device="cpu") -> torch.nn.Module:
    """Rebuild a model from its folder; any missing, malformed or mismatched file is a clear ValueError."""
    folder = Path(folder)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ValueError(f"missing checkpoint file: {path}")
    try:
        config = json.loads(config_path.read_text())
        model_type = config.pop("model_type")
        cls, config_cls = MODEL_TYPES[model_type]
        with torch.device("meta"):  # shapes only: a huge config costs no memory before the weights are checked
            model = cls(config_cls(**config))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, RuntimeError,
            ZeroDivisionError) as err:
        raise ValueError(f"malformed config {config_path}: {err}") from None
    if expected_type is not None and model_type != expected_type:
        raise ValueError(f"{config_path} holds a {model_type}, expected a {expected_type}")
    try:
        state = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"corrupted weights {weights_path}: {err}") from None
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(f"weights {weights_path} do not match {config_path}: {first[0] if first else err}") from None
    return model.to(device).eval()
