"""How fast a diffusion recipe learns: train the diffuser from scratch for a fixed wall time on the
shipped (frozen) autoencoder, snapshot its EMA every few minutes, then score every snapshot on one
fixed set of 200 digits at 32 px (20 per class, the CLI's sampling defaults).

    python benchmarks/learning_speed.py train NAME --minutes 25   # riid train-diffuser's batch, lr, warm-up
    python benchmarks/learning_speed.py train NAME --minutes 25 --batch-size 128 --lr 8e-4 --warmup 200 \
        --prediction eps                                           # the first release's recipe
    python benchmarks/learning_speed.py score       # every snapshot not scored yet
    python benchmarks/learning_speed.py plot [NAME...]  # figure and table from the scores

Every recipe runs one schedule (3,600 steps of batch 128, cosine after warm-up, about two hours
of training at batch 32 on one thread; a smaller batch takes proportionally more steps over the
same images), so a run of N minutes is the first N minutes of that schedule. Snapshot times count
training only. Run two recipes side by side with --threads 1 each, never more, on a 2-core
machine, and compare only runs made side by side: the same machine's speed varies from day to day.

``--prediction`` is what the diffuser's head answers (riid.schedule.PREDICTIONS): v, the default,
the noise ε, as the first release's diffuser was trained, or the rectified-flow velocity; with
``--prediction flow --timesteps logit-normal`` the run trains SD3's flow-matching recipe.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from riid.checkpoint import load_model
from riid.data import load_mnist
from riid.diffuser import R2ID, LabelConditioner
from riid.eval.classifier import Judges
from riid.eval.metrics import balanced_split
from riid.eval.report import Reference
from riid.pipeline import default_checkpoint, load_pipeline
from riid.presets import DIFFUSER_PRESETS
from riid.schedule import PREDICTIONS, cosine_time
from riid.tasks import DiffuserTask, DiffusionModel
from riid.train import RECIPES, TrainConfig, train

OUT = Path("results/learning-speed")
PER_CLASS = 20  # 200 digits per snapshot
SCHEDULE = 3600  # steps of batch 128 (2,600 in runs whose recipe.json has no schedule)
# the defaults: the winner so far, which riid train-diffuser trains with
WINNER = RECIPES["train-diffuser"]


class Stop(Exception):
    pass


class TimedTask(DiffuserTask):
    """The diffuser task, but each export is a snapshot folder named by its training minutes (with
    the steps taken so far), and the run stops once ``minutes`` of training have passed.
    ``logit_normal``: noise levels drawn as SD3 draws them, half log-SNR λ ~ N(0, 1) (the
    rectified-flow time t = sigmoid(−λ) logit-normal), not uniform in the cosine schedule's time."""

    def __init__(self, *args, minutes: float, logit_normal: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.minutes, self.start, self.paused, self.steps = minutes, time.time(), 0.0, 0
        self.logit_normal = logit_normal

    def batch(self, generator, device):
        self.steps += 1
        batch = super().batch(generator, device)
        if self.logit_normal:
            alpha_bar = torch.sigmoid(2 * torch.randn(batch["size"], generator=generator))
            # the cosine schedule's time at that noise level, for the loss-versus-t bins
            batch.update(alpha_bar=alpha_bar.to(device), t=cosine_time(alpha_bar))
        return batch

    def export(self, ema_model, out_dir):
        begin = time.time()
        minutes = (begin - self.start - self.paused) / 60
        snap = Path(out_dir) / f"snap-{minutes:06.2f}"
        super().export(ema_model, snap)
        (snap / "steps.json").write_text(json.dumps({"steps": self.steps}) + "\n")
        self.paused += time.time() - begin
        if minutes >= self.minutes:
            raise Stop


def run_train(args) -> None:
    torch.manual_seed(args.seed)
    ae_folder = default_checkpoint() / "autoencoder"
    autoencoder = load_model(ae_folder, "riae")
    images, labels = load_mnist("train", root=args.data_root)
    diffuser_config, cond_config = DIFFUSER_PRESETS["default"]
    diffuser_config = dataclasses.replace(diffuser_config, prediction=args.prediction)
    model = DiffusionModel(R2ID(diffuser_config), LabelConditioner(cond_config))
    # a smaller batch takes proportionally more steps, so the schedule covers the same images
    scale = 128 / args.batch_size
    config = TrainConfig(steps=round(SCHEDULE * scale), batch_size=args.batch_size, lr=args.lr,
                         warmup=round(args.warmup * scale),
                         ema_decay=TrainConfig.ema_decay ** (1 / scale), seed=args.seed,
                         save_every_s=args.every * 60, preview_every=10**9,
                         threads=args.threads)
    out = OUT / args.name
    task = TimedTask(model, autoencoder, images, labels, ae_folder, config.batch_size,
                     minutes=args.minutes, logit_normal=args.timesteps == "logit-normal")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps({**vars(args), "schedule": SCHEDULE}, indent=2,
                                                default=str) + "\n")
    try:
        train(task, config, out)
    except Stop:
        pass


@torch.no_grad()
def run_score(args) -> None:
    torch.set_num_threads(args.threads)
    judges = Judges.load()
    images, labels = load_mnist("test", root=args.data_root)
    idx_a, idx_b = balanced_split(labels, 100, 0)
    idx_b = torch.cat([idx_b[labels[idx_b] == d][:PER_CLASS] for d in range(10)])
    ref = Reference(judges, images[idx_a], labels[idx_a], images[idx_b], labels[idx_b], 32, 32)
    digits = torch.arange(10).repeat_interleave(PER_CLASS)
    for snap in sorted(OUT.glob("*/snap-*")):
        if (snap / "score.json").exists():
            continue
        pipe = load_pipeline(snap)
        score = ref.score(judges, pipe.generate(digits), digits)
        score["minutes"] = float(snap.name.split("-")[1])
        if (snap / "steps.json").exists():
            score.update(json.loads((snap / "steps.json").read_text()))
        (snap / "score.json").write_text(json.dumps(score) + "\n")
        print(f"{snap}: {score['accuracy']:.1%}, FD {score['fd_ratio']:.1f}× floor")


def recipe(run: Path) -> str:
    """A run's recipe in words, from its recipe.json (runs made before an option existed lack it)."""
    r = json.loads((run / "recipe.json").read_text())
    timesteps = "" if r.get("timesteps", "cosine") == "cosine" else f", {r['timesteps']} noise levels"
    return (f"{r.get('prediction', 'eps')}{timesteps}, batch {r.get('batch_size', 128)}, "
            f"lr {r['lr']:g}, seed {r['seed']}")


def at(scores: list[dict], minutes: float) -> str:
    """The snapshot within 3 minutes of ``minutes``: accuracy, FD ÷ floor (its time if not exact)."""
    near = [s for s in scores if abs(s["minutes"] - minutes) <= 3]
    if not near:
        return "—"
    s = min(near, key=lambda s: abs(s["minutes"] - minutes))
    when = "" if round(s["minutes"]) == minutes else f" ({s['minutes']:.0f} min)"
    return f"{s['accuracy']:.1%}, {s['fd_ratio']:.1f}×{when}"


def run_plot(args) -> None:
    from matplotlib.figure import Figure

    runs = {}
    for path in sorted(OUT.glob("*/snap-*/score.json")):
        if not args.names or path.parent.parent.name in args.names:
            runs.setdefault(path.parent.parent.name, []).append(json.loads(path.read_text()))
    fig = Figure(figsize=(11, 3.5), dpi=100)
    ax_acc, ax_fd = fig.subplots(1, 2)
    lines = ["| run | recipe | steps/min | minutes to 98% at 32 px | 30 min | 60 min | 120 min | "
             "last snapshot |", "| --- " * 8 + "|"]
    for name, scores in runs.items():
        scores.sort(key=lambda s: s["minutes"])
        minutes = [s["minutes"] for s in scores]
        ax_acc.plot(minutes, [100 * s["accuracy"] for s in scores], marker=".", label=name)
        ax_fd.plot(minutes, [s["fd_ratio"] for s in scores], marker=".", label=name)
        reached = next((f"{s['minutes']:.0f}" for s in scores if s["accuracy"] >= 0.98), "not yet")
        rate = next((f"{s['steps'] / s['minutes']:.0f}" for s in reversed(scores) if "steps" in s), "—")
        last = scores[-1]
        lines.append(f"| {name} | {recipe(OUT / name)} | {rate} | {reached} | {at(scores, 30)} | "
                     f"{at(scores, 60)} | {at(scores, 120)} | {last['minutes']:.0f} min: "
                     f"{last['accuracy']:.1%}, {last['fd_ratio']:.1f}× |")
    ax_acc.set(xlabel="training minutes", ylabel="class accuracy at 32 px (%)", ylim=(0, 100))
    ax_fd.set(xlabel="training minutes", ylabel="Fréchet distance ÷ real floor", yscale="log")
    ax_fd.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    fig.tight_layout()
    fig.savefig(OUT / "learning_speed.png")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("name")
    t.add_argument("--minutes", type=float, default=25.0)
    t.add_argument("--every", type=float, default=5.0, help="minutes between snapshots")
    t.add_argument("--lr", type=float, default=WINNER.lr)
    t.add_argument("--warmup", type=int, default=WINNER.warmup * WINNER.batch_size // 128,
                   help="warm-up steps at batch 128")
    t.add_argument("--batch-size", type=int, default=WINNER.batch_size)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--prediction", choices=PREDICTIONS, default="v")
    t.add_argument("--timesteps", choices=("cosine", "logit-normal"), default="cosine",
                   help="noise levels uniform in the cosine schedule's time, or SD3's logit-normal")
    for p in (t, sub.add_parser("score")):
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--data-root", default="data")
    sub.add_parser("plot").add_argument("names", nargs="*", help="these runs only (default: all)")
    args = parser.parse_args(argv)
    {"train": run_train, "score": run_score, "plot": run_plot}[args.command](args)


if __name__ == "__main__":
    main()
