"""Model folders: ``config.json`` (a config dataclass) beside ``model.safetensors``; no pickles."""
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
from .validate import check_float, check_int

# model_type in config.json → (module class, config dataclass); see register_model
MODEL_TYPES = {"riae": (RIAE, RIAEConfig), "r2id": (R2ID, R2IDConfig),
               "label_conditioner": (LabelConditioner, ConditionerConfig)}


def register_model(name: str, cls, config_cls) -> None:
    """Let save_model/load_model handle a model type defined outside the core (the classifier)."""
    MODEL_TYPES[name] = (cls, config_cls)


def _type_name(model: torch.nn.Module) -> str:
    for name, (cls, _) in MODEL_TYPES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"cannot save a {type(model).__name__}: not one of {sorted(MODEL_TYPES)}")


# The largest value of a config field, by the last word of its name (encoder_blocks → blocks),
# checked before anything is built: a stranger's config.json with 10⁶ blocks or a width of 2²⁰ is
# refused in one line instead of hanging or exhausting memory. Other int fields: CONFIG_INT_MAX.
CONFIG_MAX = {"blocks": 64, "layers": 64, "heads": 64, "dim": 4096, "channels": 1024,
              "tokens": 1024, "ratio": 16, "classes": 100_000, "clouds": 16_384, "reduction": 256}
CONFIG_INT_MAX = 65_536
CONFIG_FLOAT_MAX = 1e6
MAX_PARAMETERS = 2**30  # 4 GiB of float32: far above any preset, far below what hangs a machine


def check_config(config: dict, config_cls) -> dict:
    """Each value of a config.json has its field's type (that of its default) and a sane size."""
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
    for name, value in config.items():
        if name not in defaults:
            raise ValueError(f"unknown field {name!r} for a {config_cls.__name__}")
        default = defaults[name]
        if isinstance(default, tuple):  # e.g. the classifier's conv widths
            if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= CONFIG_MAX["blocks"]:
                raise ValueError(f"{name} must be a list of 1 to {CONFIG_MAX['blocks']} integers, "
                                 f"got {value!r}")
            for v in value:
                check_int(name, v, 1, CONFIG_MAX["channels"])
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        elif isinstance(default, int):
            word = name.rsplit("_", 1)[-1]
            low = 0 if word in ("blocks", "layers") else 1
            check_int(name, value, low, CONFIG_MAX.get(word, CONFIG_INT_MAX))
        elif isinstance(default, float):
            check_float(name, value, 0.0, CONFIG_FLOAT_MAX)
    return config


def _check_device(device) -> torch.device:
    """A device this machine has (CUDA on a CPU-only host is said so, not called bad weights)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be e.g. 'cpu' or 'cuda', got {device!r}: {err}") from None
    mps = getattr(torch.backends, "mps", None)
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": mps is not None and mps.is_available()}
    if not available.get(device.type, False):
        raise ValueError(f"device {str(device)!r} is not available on this machine; "
                         "use device='cpu'")
    index = device.index
    if device.type == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} is not available: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file then rename, so a kill mid-write never leaves a broken file;
    a write that fails (a full disk) removes its temporary file and leaves the old one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    """``data`` as indented JSON, written atomically."""
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


def first_line(err: BaseException, default: str = "") -> str:
    """The first line of an error's message (or ``default``), for one-line errors."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else default


def save_model(model: torch.nn.Module, folder) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": _type_name(model), **dataclasses.asdict(model.config)}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda p: save_file(state, str(p)))
    write_json(folder / "config.json", config)
    return folder


def load_model(folder, expected_type: str | None = None, device="cpu") -> torch.nn.Module:
    """Rebuild a model from its folder; a missing, malformed or mismatched file is a ValueError."""
    if not isinstance(folder, (str, os.PathLike)) or isinstance(folder, bytes):
        raise ValueError(f"model folder must be a path, got {type(folder).__name__}")
    device = _check_device(device)
    folder = Path(folder)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ValueError(f"missing checkpoint file: {path}")
    try:
        config = json.loads(config_path.read_text())
        if not isinstance(config, dict) or config.get("model_type") not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {', '.join(sorted(MODEL_TYPES))}")
        model_type = config.pop("model_type")
        cls, config_cls = MODEL_TYPES[model_type]
        # shapes only: a huge config costs no memory before the weights are checked
        with torch.device("meta"):
            model = cls(config_cls(**check_config(config, config_cls)))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, RuntimeError,
            ZeroDivisionError, UnicodeDecodeError) as err:
        raise ValueError(f"malformed config {config_path}: {first_line(err, repr(err))}") from None
    if expected_type is not None and model_type != expected_type:
        raise ValueError(f"{config_path} holds a {model_type}, expected a {expected_type}")
    expected = model.state_dict()
    parameters = sum(v.numel() for v in expected.values())
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"malformed config {config_path}: {parameters:,} parameters, above the "
                         f"limit of {MAX_PARAMETERS:,}")
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"corrupted weights {weights_path}: {err}") from None
    mismatch = state_mismatch(expected, state)
    if mismatch:
        raise ValueError(f"weights {weights_path} do not match {config_path}: {mismatch}")
    for key, value in state.items():
        state[key] = checked_tensor(f"weights {weights_path}: tensor {key!r}", value,
                                    expected[key].dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def state_mismatch(expected: dict, got: dict) -> str:
    """What differs between two state dicts' keys and shapes, in one line; '' when they match."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    not_tensors = [k for k in expected if k in got and not isinstance(got[k], torch.Tensor)]
    shapes = [k for k in expected
              if k in got and k not in not_tensors and got[k].shape != expected[k].shape]
    parts = [f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in (
        (missing, "tensor(s) missing"), (unexpected, "unexpected"), (not_tensors, "not tensors"))
        if keys]
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k}: {list(got[k].shape)} instead of "
                     f"{list(expected[k].shape)})")
    return ", ".join(parts)


def checked_tensor(name: str, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A stored tensor in the dtype its model expects: other float widths are converted, anything
    else (integers for floats, NaN or infinite values) is refused by name."""
    if dtype.is_floating_point:
        if not value.dtype.is_floating_point:
            raise ValueError(f"{name} is {value.dtype}, expected floating point")
        value = value.to(dtype)
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    elif value.dtype != dtype:
        raise ValueError(f"{name} is {value.dtype}, expected {dtype}")
    return value
