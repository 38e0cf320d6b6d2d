"""One resumable training loop (Accelerate, AdamW, warm-up + cosine, EMA, accumulation) for both
models; what differs between them (batches, loss, previews, export) lives in a task (riid.tasks).

Everything a run is given is checked before it writes anything: the settings (:func:`check_config`),
the output folder (writable, room for the state) and, with ``resume``, that ``state.pt`` belongs to
this model. A lock on the folder (POSIX flock) keeps a second run out of it."""
from __future__ import annotations

import copy
import fcntl
import math
import os
import time
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import atomic_write, checked_tensor, first_line, state_mismatch, write_json
from .validate import LIMITS, check_float, check_int, check_output_dir

STATE = "state.pt"
LOCK = "train.lock"
STATE_KEYS = ("model", "ema", "optimizer", "scheduler", "step", "history", "torch_rng", "data_rng")


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    grad_accum: int = 1
    grad_clip: float = 1.0
    seed: int = 0
    save_every_s: float = 120.0  # seconds between full-state saves
    save_every_steps: int = 0  # also save every this many steps (0: by time only)
    preview_every: int = 500  # steps between loss-curve and sample PNGs
    threads: int = 0  # torch CPU threads; 0 = torch's default


# each training command's defaults: the autoencoder's shipped recipe; for the diffuser, the recipe
# that learned fastest per minute from scratch in benchmarks/learning_speed.py
RECIPES = {"train-autoencoder": TrainConfig(steps=1800, batch_size=64, warmup=150),
           "train-diffuser": TrainConfig(steps=4800, batch_size=32, lr=1.6e-3, warmup=400,
                                         ema_decay=0.99975)}

# [low, high] of each TrainConfig field (int bounds for int fields); POSITIVE ones must also be > 0
RANGES = {"steps": (1, 10**9), "batch_size": (1, 65536), "lr": (0.0, 10.0),
          "min_lr_ratio": (0.0, 1.0), "warmup": (0, 10**9), "weight_decay": (0.0, 10.0),
          "ema_decay": (0.0, 1.0), "grad_accum": (1, 1024), "grad_clip": (0.0, 1e6),
          "seed": (0, LIMITS.seed), "save_every_s": (0.0, 1e9), "save_every_steps": (0, 10**9),
          "preview_every": (1, 10**9), "threads": (0, 1024)}
POSITIVE = ("lr", "grad_clip")


def check_config(config: TrainConfig) -> TrainConfig:
    """A checked copy of ``config``; a bad value is a one-line ValueError naming field and range."""
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    checked = {}
    for f in fields(TrainConfig):
        low, high = RANGES[f.name]
        check = check_int if f.type == "int" else check_float
        checked[f.name] = check(f.name, getattr(config, f.name), low, high)
        if f.name in POSITIVE and checked[f.name] == 0:
            raise ValueError(f"{f.name} must be a finite number in (0, {high}], got 0")
    return TrainConfig(**checked)


def lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


class EMA:
    """Exponential moving average of a model's floating-point state."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # warm-up: early EMA not stuck at init
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach(), 1 - decay)
            else:
                self.shadow[k].copy_(v)

    def copy_of(self, model: torch.nn.Module) -> torch.nn.Module:
        ema_model = copy.deepcopy(model)
        ema_model.load_state_dict(self.shadow)
        return ema_model.eval()


class TrainingDiverged(FloatingPointError, ValueError):
    """The loss (or the weights) stopped being finite; a ValueError: the CLI says it in one line."""


def model_configs(model: torch.nn.Module) -> dict:
    """The config dataclasses in a model by module name ('' for itself): what makes it this one."""
    return {name: asdict(m.config) for name, m in model.named_modules()
            if is_dataclass(getattr(m, "config", None))}


def save_state(path: Path, model, ema: EMA, optimizer, scheduler, step: int, history: list,
               generator, meta: dict | None = None) -> None:
    state = {"model": model.state_dict(), "ema": ema.shadow, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step, "history": history,
             "torch_rng": torch.get_rng_state(), "data_rng": generator.get_state(),
             "meta": meta or {}}
    atomic_write(path, lambda p: torch.save(state, p))


def _refused(path: Path, why: str) -> ValueError:
    return ValueError(f"cannot resume from {path}: {why}")


def load_state(path: Path) -> dict:
    """A training state as written by :func:`save_state`; anything else is a one-line ValueError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary unpickling
    except Exception as err:  # noqa: BLE001 - any unreadable state is reported the same way
        reason = first_line(err, type(err).__name__)[:200]
        raise _refused(path, f"not a readable training state ({reason})") from None
    if not isinstance(state, dict):
        raise _refused(path, f"it holds a {type(state).__name__}, not a training state")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise _refused(path, f"not a complete training state (no {', '.join(missing)})")
    step, history = state["step"], state["history"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise _refused(path, f"its step is {step!r}, not a whole number >= 0")
    if not isinstance(history, list) or len(history) != step or not all(
            isinstance(h, dict) and isinstance(h.get("loss"), float) for h in history):
        raise _refused(path, f"its loss history does not match its step {step}")
    for key in ("model", "ema", "optimizer", "scheduler", "meta"):
        if not isinstance(state.get(key, {}), dict):
            raise _refused(path, f"its {key} is a {type(state[key]).__name__}, not a dict")
    return state


def _differences(saved: dict, ours: dict, limit: int = 4) -> str:
    """'dim 128 here 16, heads 4 here 2' between two model_configs() results, in one line."""
    diffs = []
    for module in sorted(set(saved) | set(ours)):
        a, b = saved.get(module), ours.get(module)
        prefix = f"{module}." if module else ""
        if not isinstance(a, dict) or b is None:
            diffs.append(f"{prefix or 'model'} {'missing' if a is None else 'not expected'}")
            continue
        diffs += [f"{prefix}{k} {a.get(k)!r} here {b.get(k)!r}" for k in sorted(set(a) | set(b))
                  if a.get(k) != b.get(k)]
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ", ".join(diffs[:limit]) + more


def _check_belongs(state: dict, path: Path, task, model, config: TrainConfig) -> None:
    """Refuse, in one line naming what differs, a state written by another task, model or seed."""
    meta = state["meta"]
    if meta.get("task") not in (None, task.name):
        raise _refused(path, f"it saved the training of the {meta['task']}, this run trains the "
                             f"{task.name}")
    saved, ours = meta.get("configs"), model_configs(model)
    if saved is not None and saved != ours:
        raise _refused(path, f"it was written for another model (state {_differences(saved, ours)}"
                             "); resume with the --preset and --init of the run that wrote it")
    for part in ("model", "ema"):
        mismatch = state_mismatch(model.state_dict(), state[part])
        if mismatch:
            raise _refused(path, f"its {part} weights do not fit this model ({mismatch})")
    if meta.get("seed") not in (None, config.seed):
        raise _refused(path, f"the run was seeded with {meta['seed']}, not {config.seed}; its "
                             "random state continues from the state, so give the same seed")
    if state["step"] > config.steps:
        raise _refused(path, f"it is at step {state['step']}, past steps={config.steps}")


def check_resumable(out_dir) -> Path:
    """The state file a resumed run continues from; ValueError if there is none."""
    path = Path(out_dir) / STATE
    if not path.is_file():
        raise ValueError(f"cannot resume: {out_dir} holds no {STATE} (start without resume for a "
                         "new run)")
    return path


class FolderLock:
    """An exclusive kernel lock (flock) on OUT/train.lock, which also holds the owner's PID for the
    message, so two runs never write one state.pt. The kernel drops it when its holder exits or is
    killed (SIGKILL included), so a lock left by a dead run is simply taken over."""

    def __init__(self, folder: Path):
        self.path, self.fd = Path(folder) / LOCK, None

    def __enter__(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"another training run (pid {holder}) is writing to {self.path.parent}; "
                "wait for it to end or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the lock; the file stays, harmless, for the next run to take


def _state_bytes(model: torch.nn.Module) -> int:
    """Disk a run needs at its peak: state.pt (model, EMA, two Adam moments) and its temporary copy,
    the export and its copy, and a few MiB of previews."""
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    return 10 * weights + 8 * 2**20


def plot_history(history: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(5, 3), dpi=100)
    ax = fig.subplots()
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], lw=0.8)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))


def train(task, config: TrainConfig, out_dir, resume: bool = False) -> dict:
    """Train ``task.model`` and export its EMA into ``out_dir``; returns a summary dict.

    The full state (model, EMA, optimiser, scheduler, step, RNG, loss history) is written to
    ``out_dir/state.pt`` every ``save_every_s`` seconds (and every ``save_every_steps`` steps) and
    at the end; ``resume`` continues from it bit for bit, applying the settings given now (lr,
    weight decay, EMA decay, steps, ...) from the saved step on, except the seed, which the saved
    random state replaces: a different one is refused."""
    config = check_config(config)
    out_dir = check_output_dir("output folder", out_dir, _state_bytes(task.model))
    if resume:
        check_resumable(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(out_dir):
        return _train(task, task.model, config, out_dir, out_dir / STATE, resume)


def _train(task, model, config: TrainConfig, out_dir: Path, state_path: Path, resume: bool) -> dict:
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    from accelerate import Accelerator  # imported here: inference never needs it
    use_gpu = torch.cuda.is_available()
    bf16 = use_gpu and torch.cuda.is_bf16_supported()  # CPUs without bf16 units run it ~500× slower
    accelerator = Accelerator(cpu=not use_gpu, mixed_precision="bf16" if bf16 else "no",
                              gradient_accumulation_steps=config.grad_accum)
    trainable = [p for p in model.parameters() if p.requires_grad]  # frozen parts (tasks) stay out
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    ema = EMA(model, config.ema_decay)
    step, history, saved_step = 0, [], None
    if resume:
        state = load_state(state_path)
        _check_belongs(state, state_path, task, model, config)
        step, history = _restore(state, state_path, model, ema, optimizer, scheduler, generator,
                                 config)
        saved_step = step
    meta = {"task": task.name, "configs": model_configs(model), "seed": config.seed}
    write_json(out_dir / "train_config.json", asdict(config))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    raw_model = accelerator.unwrap_model(model)

    def diverged(what: str) -> TrainingDiverged:
        kept = ("this run saved no state yet" if saved_step is None
                else f"the last good state (step {saved_step}) is kept in {state_path}")
        return TrainingDiverged(f"{task.name}: {what} at step {step}; {kept}; lower the learning "
                                "rate (lr) and start again or resume")

    def checkpoint():
        nonlocal saved_step
        tensors = (*raw_model.state_dict().values(), *ema.shadow.values())
        if not all(torch.isfinite(v).all() for v in tensors if v.dtype.is_floating_point):
            raise diverged("the weights became NaN or infinite")
        save_state(state_path, raw_model, ema, optimizer, scheduler, step, history, generator, meta)
        task.export(ema.copy_of(raw_model), out_dir)
        saved_step = step

    last_save, seen, t0 = time.time(), 0, time.time()
    bar = tqdm(total=config.steps, initial=step, desc=task.name,
               disable=not accelerator.is_main_process)
    model.train()
    try:
        while step < config.steps:
            for _ in range(config.grad_accum):
                batch = task.batch(generator, accelerator.device)
                with accelerator.accumulate(model), accelerator.autocast():
                    loss, logs = task.loss(model, batch)
                    if not torch.isfinite(loss):
                        raise diverged(f"the loss became {loss.item()}")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(trainable, config.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                seen += batch["size"]
            ema.update(raw_model, step)
            step += 1
            rate = seen / max(1e-9, time.time() - t0)
            history.append({"step": step, "loss": float(loss.item()), **logs})
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.0f}")
            bar.update(1)
            if accelerator.is_main_process:
                if step % config.preview_every == 0 or step == config.steps:
                    plot_history(history, out_dir / "loss.png")
                    task.preview(ema.copy_of(raw_model), out_dir, history)
                by_steps = config.save_every_steps and step % config.save_every_steps == 0
                due = time.time() - last_save > config.save_every_s or step == config.steps
                if by_steps or due:
                    checkpoint()
                    last_save = time.time()
    finally:
        bar.close()
    tail = history[-min(100, len(history)):] or [{"loss": float("nan")}]
    summary = {"steps": step, "final_loss": sum(h["loss"] for h in tail) / len(tail),
               "wall_s_this_run": time.time() - t0}
    write_json(out_dir / "summary.json", summary)
    return summary


def _restore(state: dict, path: Path, model, ema: EMA, optimizer, scheduler, generator,
             config: TrainConfig) -> tuple[int, list]:
    """Load a checked state into the run's objects; this run's settings apply from its step on."""
    try:
        expected = model.state_dict()
        model.load_state_dict({k: checked_tensor(f"{path}: model tensor {k!r}", v,
                                                 expected[k].dtype)
                               for k, v in state["model"].items()})
        ema.shadow = {k: checked_tensor(f"{path}: EMA tensor {k!r}", v, expected[k].dtype).clone()
                      for k, v in state["ema"].items()}
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        generator.set_state(state["data_rng"])
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise ValueError(f"cannot resume from {err}") from None
        raise _refused(path, first_line(err)) from None
    except (RuntimeError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise _refused(path, f"a damaged or foreign state ({type(err).__name__}: "
                             f"{first_line(err)[:200]})") from None
    # the settings given now apply from here on: the schedule's base rate, the optimiser's settings
    scheduler.base_lrs = [config.lr] * len(optimizer.param_groups)
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr
        group["weight_decay"] = config.weight_decay
        group["lr"] = config.lr * lr_factor(scheduler.last_epoch, config)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return state["step"], list(state["history"])
