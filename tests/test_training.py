"""The training loop: lr schedule, EMA, NaN guard, exact resume, and a real SIGKILL-and-resume run."""
import dataclasses
import json
import math
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from riid import load_model, load_pipeline
from riid.checkpoint import atomic_write
from riid.data import load_mnist
from riid.train import EMA, TrainConfig, load_state, lr_factor, train


# ---- schedule and EMA ---------------------------------------------------------------------

def test_lr_warms_up_linearly_then_follows_a_cosine_down_to_min_ratio():
    c = TrainConfig(steps=1000, warmup=100, min_lr_ratio=0.05)
    warm = [lr_factor(s, c) for s in range(100)]
    assert warm[0] == pytest.approx(0.01) and warm[49] == pytest.approx(0.5) and warm[99] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(warm, warm[1:]))
    decay = [lr_factor(s, c) for s in range(100, 1001)]
    assert decay[0] == pytest.approx(1.0)
    assert all(b <= a for a, b in zip(decay, decay[1:]))
    assert lr_factor(550, c) == pytest.approx(0.05 + 0.95 * 0.5, abs=1e-9)  # half way down the cosine
    assert lr_factor(1000, c) == pytest.approx(0.05) and lr_factor(5000, c) == pytest.approx(0.05)


def test_lr_schedule_without_warmup_and_in_an_optimizer():
    c = TrainConfig(steps=10, warmup=0, min_lr_ratio=0.1, lr=0.5)
    assert lr_factor(0, c) == pytest.approx(1.0) and lr_factor(10, c) == pytest.approx(0.1)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=c.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, c))
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[-1] == pytest.approx(0.5 * lr_factor(9, c))


def test_ema_follows_the_model_with_its_decay():
    model = nn.Linear(3, 2)
    model.register_buffer("counter", torch.tensor(0))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
        model.counter.fill_(7)
    ema.update(model, step=0)  # warm-up: decay = min(0.9, 1/10) = 0.1
    torch.testing.assert_close(ema.shadow["weight"], start["weight"] + 0.9)
    assert ema.shadow["counter"].item() == 7  # integer buffers are copied, not averaged
    before = ema.shadow["weight"].clone()
    ema.update(model, step=10**6)  # long after warm-up: decay 0.9
    torch.testing.assert_close(ema.shadow["weight"], before + 0.1 * (start["weight"] + 1 - before))
    copy = ema.copy_of(model)
    assert copy is not model and not copy.training
    torch.testing.assert_close(copy.weight, ema.shadow["weight"])
    assert not torch.equal(model.weight, copy.weight)


# ---- a toy task for the loop itself -------------------------------------------------------

class ToyTask:
    """Fit y = x·w* with a linear model; optionally the loss turns NaN/inf, or the run is 'killed'."""

    name = "toy"

    def __init__(self, bad_loss_after=None, bad_value=float("nan"), stop_after_batches=None, seed=0):
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.target = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        self.bad_loss_after, self.bad_value, self.stop_after = bad_loss_after, bad_value, stop_after_batches
        self.losses = self.batches = 0
        self.exports = []

    def batch(self, generator, device):
        if self.stop_after is not None and self.batches >= self.stop_after:
            raise KeyboardInterrupt("simulated kill")
        self.batches += 1
        x = torch.randn(16, 4, generator=generator)
        return {"x": x, "y": x @ self.target, "size": 16}

    def loss(self, model, batch):
        self.losses += 1
        loss = F.mse_loss(model(batch["x"]), batch["y"])
        if self.bad_loss_after is not None and self.losses > self.bad_loss_after:
            loss = loss * self.bad_value
        return loss, {"extra": 1.0}

    def preview(self, ema_model, out_dir, history):
        (Path(out_dir) / "preview.txt").write_text(str(len(history)))

    def export(self, ema_model, out_dir):
        state = {k: v.detach().contiguous() for k, v in ema_model.state_dict().items()}
        atomic_write(Path(out_dir) / "toy.safetensors", lambda p: save_file(state, str(p)))
        self.exports.append(len(self.exports))


def toy_config(**changes):
    base = dict(steps=40, batch_size=16, lr=1e-2, warmup=5, save_every_s=0.0, preview_every=10**6, threads=1,
                ema_decay=0.9)
    base.update(changes)
    return TrainConfig(**base)


def test_training_loop_reduces_the_loss(tmp_path):
    task = ToyTask()
    summary = train(task, toy_config(steps=150, save_every_s=3600), tmp_path)
    history = load_state(tmp_path / "state.pt")["history"]
    assert summary["steps"] == 150 and len(history) == 150
    assert [h["step"] for h in history] == list(range(1, 151))
    first, last = sum(h["loss"] for h in history[:10]) / 10, sum(h["loss"] for h in history[-10:]) / 10
    assert last < first / 5
    assert all(h["extra"] == 1.0 for h in history)
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 150
    assert json.loads((tmp_path / "train_config.json").read_text())["steps"] == 150
    assert (tmp_path / "preview.txt").read_text() == "150"  # preview at the last step
    assert len(task.exports) == 1  # save_every_s not reached: saved once, at the end
    assert load_file(str(tmp_path / "toy.safetensors")).keys() == task.model.state_dict().keys()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_and_keeps_the_last_good_state(tmp_path, bad):
    task = ToyTask(bad_loss_after=6, bad_value=bad)
    with pytest.raises(FloatingPointError) as info:
        train(task, toy_config(), tmp_path)
    message = str(info.value)
    assert ("nan" if math.isnan(bad) else "inf") in message and "step 6" in message
    assert str(tmp_path / "state.pt") in message
    state = load_state(tmp_path / "state.pt")
    assert state["step"] == 6 and len(state["history"]) == 6
    assert all(math.isfinite(h["loss"]) for h in state["history"])
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / "toy.safetensors")).values())
    assert not list(tmp_path.glob("*.tmp"))
    # the kept state resumes
    summary = train(ToyTask(), toy_config(steps=10), tmp_path, resume=True)
    assert summary["steps"] == 10 and len(load_state(tmp_path / "state.pt")["history"]) == 10


def test_resume_continues_exactly_where_the_saved_state_left_off(tmp_path):
    straight = ToyTask()
    train(straight, toy_config(), tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(ToyTask(stop_after_batches=17), toy_config(), tmp_path / "split")
    assert load_state(tmp_path / "split" / "state.pt")["step"] == 17
    resumed = ToyTask(seed=123)  # different initial weights: all of them must come from the state
    train(resumed, toy_config(), tmp_path / "split", resume=True)
    assert resumed.batches == 40 - 17
    a, b = load_state(tmp_path / "straight" / "state.pt"), load_state(tmp_path / "split" / "state.pt")
    assert a["step"] == b["step"] == 40
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def test_resume_refuses_an_unreadable_state(tmp_path):
    (tmp_path / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot resume"):
        train(ToyTask(), toy_config(steps=3), tmp_path, resume=True)


class Trap:
    """Unpickling this creates a marker file: proof that arbitrary objects were unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


def test_state_is_never_unpickled_beyond_tensors(tmp_path):
    marker = tmp_path / "unpickled"
    torch.save({"step": 1, "evil": Trap(marker)}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="cannot resume"):
        load_state(tmp_path / "state.pt")
    assert not marker.exists()


# ---- the real tasks, in process -----------------------------------------------------------

def test_tiny_autoencoder_and_diffuser_train_into_a_pipeline(tmp_path):
    from riid.autoencoder import RIAE
    from riid.diffuser import R2ID, LabelConditioner
    from riid.presets import AUTOENCODER_PRESETS, DIFFUSER_PRESETS
    from riid.tasks import AutoencoderTask, DiffuserTask, DiffusionModel

    images, labels = load_mnist("train", root="fixture", limit=64)
    ae_task = AutoencoderTask(RIAE(AUTOENCODER_PRESETS["tiny"]), images, batch_size=4, points=32)
    ae_summary = train(ae_task, toy_config(steps=4, batch_size=4), tmp_path)
    assert ae_summary["steps"] == 4 and math.isfinite(ae_summary["final_loss"])
    autoencoder = load_model(tmp_path / "autoencoder", "riae")

    dconf, cconf = DIFFUSER_PRESETS["tiny"]
    dconf = dataclasses.replace(dconf, latent_channels=autoencoder.config.latent_channels, cond_dim=cconf.dim)
    d_task = DiffuserTask(DiffusionModel(R2ID(dconf), LabelConditioner(cconf)), autoencoder, images, labels,
                          tmp_path / "autoencoder", batch_size=4)
    d_summary = train(d_task, toy_config(steps=3, batch_size=4), tmp_path)
    assert d_summary["steps"] == 3 and math.isfinite(d_summary["final_loss"])
    for name in ("reconstructions.png", "samples.png", "loss_vs_t.png", "loss.png"):
        with Image.open(tmp_path / name) as im:
            im.verify()
    pipe = load_pipeline(tmp_path)
    out = pipe.generate([0, 9], height=10, width=14, steps=2)
    assert out.shape == (2, 1, 10, 14) and torch.isfinite(out).all()


def test_dropped_labels_train_the_null_condition():
    from riid.diffuser import R2ID, LabelConditioner
    from riid.presets import DIFFUSER_PRESETS
    from riid.tasks import DiffusionModel

    torch.manual_seed(0)
    dconf, cconf = DIFFUSER_PRESETS["tiny"]
    diffuser = R2ID(dataclasses.replace(dconf, latent_channels=4, cond_dim=cconf.dim))
    with torch.no_grad():
        for name, p in diffuser.named_parameters():
            if "modulation" in name or name.startswith("head"):
                p.normal_(0, 0.05)
    model = DiffusionModel(diffuser, LabelConditioner(cconf)).eval()
    latents, noise, ab = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4), torch.tensor([0.2, 0.5, 0.8])
    loss = lambda labels, drop: model(latents, torch.tensor(labels), ab, noise, torch.tensor(drop))  # noqa: E731
    with torch.no_grad():
        dropped = loss([1, 2, 3], [True, True, False])
        assert torch.equal(dropped[:2], loss([7, 8, 3], [True, True, False])[:2])  # a dropped label is ignored
        assert not torch.equal(dropped[2], loss([1, 2, 4], [True, True, False])[2])  # a kept one is not
        assert torch.equal(dropped[:2], loss([-1, -1, 3], [False, False, False])[:2])  # dropped = the null label


# ---- SIGKILL a real run and resume it -----------------------------------------------------

PROGRESS = re.compile(r"(\d+)/(\d+) \[")


def progress(stderr: str) -> list[int]:
    """The step counts tqdm printed, in order."""
    return [int(m.group(1)) for m in PROGRESS.finditer(stderr)]


def test_sigkill_then_resume_loses_only_the_steps_since_the_last_save(tmp_path, python, subprocess_env):
    out = tmp_path / "run"
    steps = 400
    argv = [python, "-m", "riid.cli", "train-autoencoder", "--out", str(out), "--preset", "tiny", "--data-root",
            "fixture", "--limit", "200", "--steps", str(steps), "--batch-size", "4", "--save-every", "0.5",
            "--preview-every", "100000", "--warmup", "10", "--threads", "1"]
    log = tmp_path / "first.err"
    with open(log, "w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=subprocess_env)
        try:
            deadline = time.time() + 600  # generous: on a loaded machine start-up alone can take minutes
            while not (out / "state.pt").exists():
                assert proc.poll() is None, f"training ended early: {log.read_text()[-2000:]}"
                assert time.time() < deadline, "no state.pt after 600 s"
                time.sleep(0.05)
            time.sleep(0.8)  # a few more steps, probably another save, then a kill at an arbitrary moment
            assert proc.poll() is None, "the run finished before it could be killed; raise --steps"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # what the kill left behind is consistent: the state loads, and so does the export once both its files exist
    # (a kill between the first state.pt and the first export may leave the export incomplete, never corrupt)
    saved = load_state(out / "state.pt")
    saved_step = saved["step"]
    assert 0 < saved_step < steps
    assert [h["step"] for h in saved["history"]] == list(range(1, saved_step + 1))
    assert max(progress(log.read_text()), default=0) < steps
    export = out / "autoencoder"
    if (export / "config.json").exists() and (export / "model.safetensors").exists():
        load_model(export, "riae")

    resumed = subprocess.run(argv + ["--resume"], capture_output=True, text=True, env=subprocess_env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    counts = progress(resumed.stderr)
    assert counts[0] == saved_step  # started from the saved step, not from 0
    assert counts[-1] == steps

    final = load_state(out / "state.pt")
    assert final["step"] == steps
    assert [h["step"] for h in final["history"]] == list(range(1, steps + 1))
    assert final["history"][:saved_step] == saved["history"]  # the saved steps are kept, not redone
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == steps and math.isfinite(summary["final_loss"])

    # no temporary files, and every file loads
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    model = load_model(out / "autoencoder", "riae")
    with torch.no_grad():
        assert model.decode(model.encode(torch.zeros(1, 1, 32, 32)), (8, 8)).shape == (1, 1, 8, 8)
    for path in out.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            with Image.open(path) as im:
                im.verify()
