"""One resumable training loop (Accelerate, AdamW, warm-up + cosine, EMA, accumulation) for both models.

What differs between the autoencoder and the diffuser lives in a task object (riid.tasks):
how to draw a batch, the loss, the preview images and the slim export.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import atomic_write


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
    preview_every: int = 500  # steps between loss-curve and sample PNGs
    threads: int = 0  # torch CPU threads; 0 = torch's default


def lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a model's floating-point state."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # short warm-up so early EMA is not stuck at init
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach(), 1 - decay)
            else:
                self.shadow[k].copy_(v)

    def copy_of(self, model: torch.nn.Module) -> torch.nn.Module:
        ema_model = copy.deepcopy(model)
        ema_model.load_state_dict(self.shadow)
        return ema_model.eval()


def _accelerator(grad_accum: int):
    from accelerate import Accelerator  # imported here: inference never needs it

    use_gpu = torch.cuda.is_available()
    bf16 = use_gpu and torch.cuda.is_bf16_supported()  # CPUs without bf16 units run it ~500× slower
    return Accelerator(cpu=not use_gpu, mixed_precision="bf16" if bf16 else "no",
                       gradient_accumulation_steps=grad_accum)


def save_state(path: Path, model, ema: EMA, optimizer, scheduler, step: int, history: list, generator) -> None:
    state = {"model": model.state_dict(), "ema": ema.shadow, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step, "history": history,
             "torch_rng": torch.get_rng_state(), "data_rng": generator.get_state()}
    atomic_write(path, lambda p: torch.save(state, p))


def load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary unpickling
    except Exception as err:  # noqa: BLE001 - any unreadable state is reported the same way
        raise ValueError(f"cannot resume from {path}: {err}") from None


def plot_history(history: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's (e.g. a notebook's) backend alone

    steps = [h["step"] for h in history]
    fig = Figure(figsize=(5, 3), dpi=100)
    ax = fig.subplots()
    ax.plot(steps, [h["loss"] for h in history], lw=0.8)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))


def train(task, config: TrainConfig, out_dir, resume: bool = False) -> dict:
    """Train ``task.model`` and export its EMA into ``out_dir``; returns a summary dict.

    The full state (model, EMA, optimiser, scheduler, step, RNG, loss history) is written to
    ``out_dir/state.pt`` every ``save_every_s`` seconds and at the end; ``resume`` continues from it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    accelerator = _accelerator(config.grad_accum)
    model = task.model
    trainable = [p for p in model.parameters() if p.requires_grad]  # a frozen part (see tasks) is left out
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    ema = EMA(model, config.ema_decay)
    step, history = 0, []
    state_path = out_dir / "state.pt"
    if resume and state_path.exists():
        state = load_state(state_path)
        model.load_state_dict(state["model"])
        ema.shadow = state["ema"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = state["step"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        generator.set_state(state["data_rng"])
    atomic_write(out_dir / "train_config.json", lambda p: p.write_text(json.dumps(asdict(config), indent=2) + "\n"))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    raw_model = accelerator.unwrap_model(model)

    def checkpoint():
        save_state(state_path, raw_model, ema, optimizer, scheduler, step, history, generator)
        task.export(ema.copy_of(raw_model), out_dir)

    last_save, seen, t0 = time.time(), 0, time.time()
    bar = tqdm(total=config.steps, initial=step, desc=task.name, disable=not accelerator.is_main_process)
    model.train()
    while step < config.steps:
        for _ in range(config.grad_accum):
            batch = task.batch(generator, accelerator.device)
            with accelerator.accumulate(model), accelerator.autocast():
                loss, logs = task.loss(model, batch)
                if not torch.isfinite(loss):
                    bar.close()
                    raise FloatingPointError(f"{task.name}: loss became {loss.item()} at step {step}; "
                                             f"the last good state is kept in {state_path}")
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
            if time.time() - last_save > config.save_every_s or step == config.steps:
                checkpoint()
                last_save = time.time()
    bar.close()
    tail = history[-min(100, len(history)):] or [{"loss": float("nan")}]
    summary = {"steps": step, "final_loss": sum(h["loss"] for h in tail) / len(tail),
               "wall_s_this_run": time.time() - t0}
    atomic_write(out_dir / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary
