"""The training loop: lr schedule, EMA, NaN guard, argument checks, exact and checked resume, the folder
lock, and reproducible runs (tests/test_faults.py kills real runs and resumes them)."""
import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from riid import cli, load_model, load_pipeline
from riid.checkpoint import atomic_write
from riid.data import load_mnist
from riid.train import EMA, LOCK, FolderLock, TrainConfig, TrainingDiverged, load_state, lr_factor, train


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
    with pytest.raises(TrainingDiverged) as info:
        train(task, toy_config(), tmp_path)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FloatingPointError)
    message = str(info.value)
    assert ("nan" if math.isnan(bad) else "inf") in message and "at step 6" in message and "\n" not in message
    assert f"the last good state (step 6) is kept in {tmp_path / 'state.pt'}" in message
    state = load_state(tmp_path / "state.pt")
    assert state["step"] == 6 and len(state["history"]) == 6
    assert all(math.isfinite(h["loss"]) for h in state["history"])
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / "toy.safetensors")).values())
    assert not list(tmp_path.glob("*.tmp"))
    # the kept state resumes
    summary = train(ToyTask(), toy_config(steps=10), tmp_path, resume=True)
    assert summary["steps"] == 10 and len(load_state(tmp_path / "state.pt")["history"]) == 10


def test_non_finite_loss_before_any_save_says_none_was_saved(tmp_path):
    with pytest.raises(TrainingDiverged, match="this run saved no state yet") as info:
        train(ToyTask(bad_loss_after=3), toy_config(save_every_s=3600), tmp_path)
    assert str(tmp_path / "state.pt") not in str(info.value)
    assert not (tmp_path / "state.pt").exists() and not (tmp_path / "toy.safetensors").exists()


def test_non_finite_loss_after_a_resume_names_the_resumed_state(tmp_path):
    train(ToyTask(), toy_config(steps=5), tmp_path)
    with pytest.raises(TrainingDiverged, match=r"the last good state \(step 5\)"):
        train(ToyTask(bad_loss_after=2), toy_config(steps=20, save_every_s=3600), tmp_path, resume=True)
    assert load_state(tmp_path / "state.pt")["step"] == 5


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
    with pytest.raises(ValueError, match="cannot resume") as info:
        train(ToyTask(), toy_config(steps=3), tmp_path, resume=True)
    assert "\n" not in str(info.value)


def test_resume_without_a_state_is_an_error_and_creates_nothing(tmp_path):
    with pytest.raises(ValueError, match="holds no state.pt"):
        train(ToyTask(), toy_config(steps=3), tmp_path / "new", resume=True)
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="holds no state.pt"):
        train(ToyTask(), toy_config(steps=3), tmp_path, resume=True)
    assert not list(tmp_path.iterdir())


def good_state(tmp_path) -> dict:
    train(ToyTask(), toy_config(steps=4), tmp_path / "good")
    return load_state(tmp_path / "good" / "state.pt")


def spoil(state: dict, **changes) -> dict:
    state = dict(state, **{k: v for k, v in changes.items() if v is not DROP})
    return {k: v for k, v in state.items() if changes.get(k) is not DROP}


DROP = object()
SPOILED = {
    "missing-model": (dict(model=DROP), "no model"),
    "missing-step": (dict(step=DROP, history=DROP), "no step, history"),
    "step-string": (dict(step="4"), "its step is '4'"),
    "step-float": (dict(step=4.0), "its step is 4.0"),
    "step-negative": (dict(step=-10), "its step is -10"),
    "step-bool": (dict(step=True), "its step is True"),
    "step-past-the-end": (dict(step=50, history=[{"step": 1, "loss": 1.0}] * 50), "past steps=40"),
    "history-short": (dict(history=[]), "loss history"),
    "model-a-list": (dict(model=[1, 2]), "its model is a list"),
    "model-nan": ("nan", "holds NaN or infinite values"),
    "model-int": ("int", "expected floating point"),
    "model-extra-key": ("extra", "1 unexpected"),
    "model-other-shape": ("shape", "of another shape"),
    "optimizer-foreign": (dict(optimizer={"state": {}, "param_groups": []}), "cannot resume"),
    "rng-wrong": (dict(torch_rng=torch.zeros(3)), "cannot resume"),
}


@pytest.mark.parametrize("case", sorted(SPOILED))
def test_resume_refuses_a_damaged_state_in_one_line(tmp_path, case):
    change, needle = SPOILED[case]
    state = good_state(tmp_path)
    if isinstance(change, str):
        model = dict(state["model"])
        key = next(iter(model))
        model = {"nan": {**model, key: model[key] * float("nan")}, "int": {**model, key: model[key].long()},
                 "extra": {**model, "extra.weight": torch.zeros(2)},
                 "shape": {**model, key: torch.zeros(3, 3)}}[change]
        state = spoil(state, model=model)
    else:
        state = spoil(state, **change)
    out = tmp_path / "run"
    out.mkdir()
    torch.save(state, out / "state.pt")
    with pytest.raises(ValueError) as info:
        train(ToyTask(), toy_config(), out, resume=True)
    message = str(info.value)
    assert needle in message and message.startswith("cannot resume") and "\n" not in message, message
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK, "state.pt"])  # nothing else written


@pytest.mark.parametrize("payload", [b"", os.urandom(4096), b"PK\x03\x04" + os.urandom(200)])
def test_resume_refuses_random_bytes_in_one_line(tmp_path, payload):
    (tmp_path / "state.pt").write_bytes(payload)
    with pytest.raises(ValueError, match="not a readable training state") as info:
        train(ToyTask(), toy_config(), tmp_path, resume=True)
    assert "\n" not in str(info.value)


def test_resume_with_another_model_says_what_differs(tmp_path):
    from riid.autoencoder import RIAE
    from riid.presets import AUTOENCODER_PRESETS
    from riid.tasks import AutoencoderTask

    images, _ = load_mnist("train", root="fixture", limit=16)
    tiny = AUTOENCODER_PRESETS["tiny"]
    train(AutoencoderTask(RIAE(tiny), images, batch_size=2, points=8), toy_config(steps=1), tmp_path)
    other = AutoencoderTask(RIAE(dataclasses.replace(tiny, dim=8, heads=1)), images, batch_size=2, points=8)
    with pytest.raises(ValueError) as info:
        train(other, toy_config(steps=2), tmp_path, resume=True)
    message = str(info.value)
    assert "another model" in message and "dim 16 here 8" in message and "heads 2 here 1" in message
    assert "\n" not in message and "--preset" in message


def test_resume_of_another_task_names_both(tmp_path):
    train(ToyTask(), toy_config(steps=2), tmp_path)
    other = ToyTask()
    other.name = "diffuser"
    with pytest.raises(ValueError, match="it saved the training of the toy, this run trains the diffuser"):
        train(other, toy_config(steps=4), tmp_path, resume=True)


def test_resume_with_another_seed_is_refused(tmp_path):
    train(ToyTask(), toy_config(steps=2), tmp_path)
    with pytest.raises(ValueError, match="seeded with 0, not 3"):
        train(ToyTask(), toy_config(steps=4, seed=3), tmp_path, resume=True)


def test_resume_applies_the_learning_rate_it_is_given(tmp_path):
    """--resume --lr X trains on with X (from the saved step of the schedule) and records X."""
    train(ToyTask(), toy_config(steps=10), tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "state.pt").write_bytes((tmp_path / "a" / "state.pt").read_bytes())
    same = train(ToyTask(), toy_config(steps=20), tmp_path / "a", resume=True)
    changed = train(ToyTask(), toy_config(steps=20, lr=1e-4, weight_decay=0.5), tmp_path / "b", resume=True)
    assert same["steps"] == changed["steps"] == 20
    config = toy_config(steps=20, lr=1e-4)
    state = load_state(tmp_path / "b" / "state.pt")
    group = state["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-4 * lr_factor(20, config), rel=1e-12)
    assert group["initial_lr"] == 1e-4 and group["weight_decay"] == 0.5
    assert json.loads((tmp_path / "b" / "train_config.json").read_text())["lr"] == 1e-4
    a, b = load_state(tmp_path / "a" / "state.pt"), state
    assert [h["loss"] for h in a["history"][:10]] == [h["loss"] for h in b["history"][:10]]
    assert a["history"][12]["loss"] != b["history"][12]["loss"]  # the new rate really trained


BAD_CONFIGS = [dict(steps=0), dict(steps=1.5), dict(batch_size=0), dict(lr=0.0), dict(lr=float("inf")),
               dict(lr=float("nan")), dict(lr=1e6), dict(lr=-1e-3), dict(warmup=-1), dict(ema_decay=float("nan")),
               dict(ema_decay=1.5), dict(save_every_s=float("nan")), dict(save_every_s=-1.0),
               dict(save_every_steps=-2), dict(preview_every=0), dict(threads=-1), dict(grad_accum=0),
               dict(grad_clip=0.0), dict(seed=-1), dict(weight_decay=float("inf")), dict(min_lr_ratio=2.0),
               dict(lr="1e-3")]


@pytest.mark.parametrize("bad", BAD_CONFIGS, ids=lambda d: "-".join(f"{k}={v!r}" for k, v in d.items()))
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, bad):
    with pytest.raises(ValueError) as info:
        train(ToyTask(), toy_config(**bad), tmp_path / "out")
    assert next(iter(bad)) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["a-file", "under-a-file", "empty", "proc", "number"])
def test_bad_output_folders_are_refused(tmp_path, where):
    (tmp_path / "f").write_text("x")
    out = {"a-file": tmp_path / "f", "under-a-file": tmp_path / "f" / "run", "empty": "",
           "proc": Path("/proc/riid-test-run"), "number": 5}[where]
    with pytest.raises(ValueError, match="output folder|path") as info:
        train(ToyTask(), toy_config(steps=2), out)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"] and (tmp_path / "f").read_text() == "x"


def test_a_full_disk_is_refused_up_front(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(ValueError, match="MiB needed, only 0.0 MiB free"):
        train(ToyTask(), toy_config(steps=2), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_folder_lock_refuses_a_second_run_and_passes_to_the_next(tmp_path):
    with FolderLock(tmp_path):  # as a live run holds it
        with pytest.raises(ValueError, match=f"another training run \\(pid {os.getpid()}\\) is writing to"):
            train(ToyTask(), toy_config(steps=2), tmp_path)
        assert not (tmp_path / "state.pt").exists()
    (tmp_path / LOCK).write_text("999999999\n")  # left by a killed run: the kernel lock went with it
    assert train(ToyTask(), toy_config(steps=2), tmp_path)["steps"] == 2
    assert (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"


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


def test_the_same_command_and_seed_give_bitwise_identical_weights(tmp_path):
    """The model is built after the seed is set: two runs export the same bytes, another seed does not."""
    def run(name, seed):
        argv = ["train-autoencoder", "--out", str(tmp_path / name), "--preset", "tiny", "--data-root", "fixture",
                "--limit", "32", "--steps", "3", "--batch-size", "2", "--warmup", "1", "--threads", "1",
                "--preview-every", "1000", "--seed", str(seed)]
        assert cli.main(argv) == 0
        torch.manual_seed(12345)  # whatever state the process is in, the run does not depend on it
        return (tmp_path / name / "autoencoder" / "model.safetensors").read_bytes()

    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    assert a == b and a != c
    assert load_state(tmp_path / "a" / "state.pt")["history"] == load_state(tmp_path / "b" / "state.pt")["history"]


def test_diffuser_task_encodes_each_canvas_on_the_pipelines_latent(monkeypatch):
    """The widest canvas is 5:3, the widest latent the pipeline diffuses; each canvas is encoded
    whole, on the latent the pipeline's rule gives it (no squash)."""
    import riid.tasks as tasks
    from riid.autoencoder import RIAE
    from riid.diffuser import R2ID, LabelConditioner
    from riid.presets import AUTOENCODER_PRESETS, DIFFUSER_PRESETS

    torch.manual_seed(0)
    autoencoder = RIAE(AUTOENCODER_PRESETS["tiny"])
    dconf, cconf = DIFFUSER_PRESETS["tiny"]
    model = tasks.DiffusionModel(R2ID(dataclasses.replace(dconf, cond_dim=cconf.dim)), LabelConditioner(cconf))
    images, labels = load_mnist("test", root="fixture", limit=16)
    task = tasks.DiffuserTask(model, autoencoder, images, labels, "unused", batch_size=4)
    encoded = []
    monkeypatch.setattr(autoencoder, "encode", lambda x, lat: encoded.append((x.shape[-2:], lat)) or
                        torch.zeros(len(x), autoencoder.config.latent_channels, *lat))
    generator = torch.Generator().manual_seed(0)
    for _ in range(64):
        task.batch(generator, "cpu")
    assert max(max(h / w, w / h) for (h, w), _ in encoded) == pytest.approx(5 / 3, abs=0.02)
    assert {lat for _, lat in encoded} >= {(12, 12), (20, 12), (12, 20), (18, 12)}
    assert all(lat == tasks.default_latent_size(*size) for size, lat in encoded)
