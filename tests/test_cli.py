"""The ``riid`` command: exact output files, the latent override, and one-line errors with exit code 2."""
import dataclasses
import os
import shutil
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from PIL import Image

from riid import cli, load_model, load_pipeline
from riid import pipeline as P
from riid.images import save_png, to_uint8

TIMEOUT = 600  # generous: a loaded CI machine can take minutes to start a torch process


def sample_argv(checkpoint, out, *extra):
    return ["sample", "--checkpoint", str(checkpoint), "--digit", "3", "--n", "2", "--height", "20", "--width", "36",
            "--steps", "3", "--out", str(out), *extra]


def run_cli(python, env, argv):
    return subprocess.run([python, "-m", "riid.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=TIMEOUT)


@pytest.fixture(scope="module")
def sampled(tiny_pipeline_dir, tmp_path_factory, python, subprocess_env):
    """One real ``riid sample`` run in a child process, shared by the checks below."""
    root = tmp_path_factory.mktemp("cli")
    out, grid = root / "new" / "folder", root / "grid.png"
    result = run_cli(python, subprocess_env, sample_argv(tiny_pipeline_dir, out, "--grid", str(grid), "--seed", "4"))
    return result, out, grid


def test_sample_writes_exact_files(sampled):
    result, out, grid = sampled
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["3_0000.png", "3_0001.png"]  # folder created if missing
    for path in out.iterdir():
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (36, 20)  # PIL gives (width, height)
    with Image.open(grid) as im:
        assert im.mode == "L" and im.size[0] > 2 * 36 and im.size[1] > 20
    assert (out / "3_0000.png").read_bytes() != (out / "3_0001.png").read_bytes()


def test_cli_png_is_byte_identical_to_the_python_api(sampled, tiny_pipeline_dir, tmp_path):
    _, out, _ = sampled
    images = load_pipeline(tiny_pipeline_dir).generate([3, 3], height=20, width=36, steps=3, seed=4)
    for i, img in enumerate(to_uint8(images)):
        assert save_png(img, tmp_path / f"{i}.png").read_bytes() == (out / f"3_{i:04d}.png").read_bytes()


def test_entry_point_is_installed():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("riid") == "riid.cli:main"


def test_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["sample", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    d = P.DEFAULTS
    for needle in (f"dpmpp (default: the checkpoint's, else {d.sampler})",
                   f"sampler steps (default: the checkpoint's, else {d.steps})",
                   f"guidance scale (default: the checkpoint's, else {d.cfg})", "--latent-height", "--grid",
                   "--checkpoint", "--time-limit", "RIID_TIME_LIMIT_S"):
        assert needle in text


def test_latent_override(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    seen = []
    original = P.Pipeline.sample_latents

    def spy(self, digits, settings, *args, **kwargs):
        seen.append(settings)
        return original(self, digits, settings, *args, **kwargs)

    monkeypatch.setattr(P.Pipeline, "sample_latents", spy)
    assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / "a", "--latent-height", "2", "--latent-width", "9")) == 0
    assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / "b")) == 0
    assert (seen[0].latent_height, seen[0].latent_width) == (2, 9)
    assert (seen[1].latent_height, seen[1].latent_width) == (12, 20)  # 12 across the shorter side, aspect up to 5:3
    for folder in ("a", "b"):
        with Image.open(tmp_path / folder / "3_0000.png") as im:
            assert im.size == (36, 20)
    assert (tmp_path / "a" / "3_0000.png").read_bytes() != (tmp_path / "b" / "3_0000.png").read_bytes()
    assert "wrote 2 images" in capsys.readouterr().out


def bad_cases(checkpoint: Path, tmp: Path):
    malformed = tmp / "malformed"
    shutil.copytree(checkpoint, malformed)
    (malformed / "diffuser" / "config.json").write_text("{oops")
    truncated = tmp / "truncated"
    shutil.copytree(checkpoint, truncated)
    weights = truncated / "autoencoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return {
        "height-0": ["--height", "0"], "height-neg": ["--height", "-5"], "height-4097": ["--height", "4097"],
        "height-1.5": ["--height", "1.5"], "height-abc": ["--height", "abc"], "width-0": ["--width", "0"],
        "steps-0": ["--steps", "0"], "steps-1001": ["--steps", "1001"], "cfg-nan": ["--cfg", "nan"],
        "cfg-inf": ["--cfg", "inf"], "cfg-neg": ["--cfg", "-1"], "eta-neg": ["--eta", "-0.5"],
        "cfg-from-11": ["--cfg-from", "11"],
        "digit-10": ["--digit", "10"], "digit-neg": ["--digit", "-1"], "n-0": ["--n", "0"], "n-257": ["--n", "257"],
        "sampler": ["--sampler", "euler"], "spacing": ["--spacing", "karras"], "seed-neg": ["--seed", "-1"],
        "latent-one-side": ["--latent-height", "2"],
        "latent-0": ["--latent-height", "0", "--latent-width", "3"],
        "latent-129": ["--latent-height", "129", "--latent-width", "3"], "clouds-0": ["--clouds", "0"],
        "missing-checkpoint": ["--checkpoint", str(tmp / "no" / "such")],
        "malformed-checkpoint": ["--checkpoint", str(malformed)],
        "truncated-checkpoint": ["--checkpoint", str(truncated)],
    }


CASES = ["height-0", "height-neg", "height-4097", "height-1.5",
         "height-abc", "width-0", "steps-0", "steps-1001", "cfg-nan", "cfg-inf",
         "cfg-neg", "eta-neg", "cfg-from-11", "digit-10", "digit-neg", "n-0", "n-257", "sampler", "spacing", "seed-neg",
         "latent-one-side",
         "latent-0", "latent-129", "clouds-0", "missing-checkpoint", "malformed-checkpoint", "truncated-checkpoint"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line(case, tiny_pipeline_dir, tmp_path, capsys):
    extra = bad_cases(tiny_pipeline_dir, tmp_path)[case]
    out = tmp_path / "out"
    try:
        code = cli.main(sample_argv(tiny_pipeline_dir, out, *extra))
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    captured = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("riid sample: error: ")
    assert not out.exists() or not list(out.iterdir())  # nothing half-written


def test_error_messages_name_the_range_or_the_file(tiny_pipeline_dir, tmp_path, capsys):
    cases = bad_cases(tiny_pipeline_dir, tmp_path)
    expected = {"height-4097": "[1, 4096]", "steps-0": "[1, 1000]", "cfg-nan": "[0.0, 50.0]", "digit-10": "[0, 9]",
                "n-257": "[1, 256]", "latent-129": "[1, 128]", "missing-checkpoint": str(tmp_path / "no" / "such"),
                "malformed-checkpoint": str(tmp_path / "malformed" / "diffuser" / "config.json"),
                "truncated-checkpoint": str(tmp_path / "truncated" / "autoencoder" / "model.safetensors")}
    for case, needle in expected.items():
        assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / "out", *cases[case])) == 2
        assert needle in capsys.readouterr().err, case


@pytest.mark.parametrize("case", ["missing-checkpoint"])  # one: a process start costs 5-20 s
def test_bad_input_in_a_real_process(case, tiny_pipeline_dir, tmp_path, python, subprocess_env):
    result = run_cli(python, subprocess_env, sample_argv(tiny_pipeline_dir, tmp_path / "out",
                                                         *bad_cases(tiny_pipeline_dir, tmp_path)[case]))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("riid sample: error: ")


def test_original_defaults_ddim_eta_2(tiny_pipeline_dir, tmp_path):
    argv = sample_argv(tiny_pipeline_dir, tmp_path / "o", "--sampler", "ddim", "--eta", "2", "--cfg", "4")
    assert cli.main(argv) == 0
    with Image.open(tmp_path / "o" / "3_0001.png") as im:
        assert im.size == (36, 20)


def test_clouds_are_seeded(tiny_pipeline_dir, tmp_path):
    for name in ("a", "b"):
        assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / name, "--clouds", "3", "--height", "24",
                                    "--width", "24")) == 0
    assert (tmp_path / "a" / "3_0001.png").read_bytes() == (tmp_path / "b" / "3_0001.png").read_bytes()


def test_sampler_choices_both_work(tiny_pipeline_dir, tmp_path):
    for sampler in ("ddim", "dpmpp"):
        assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / sampler, "--sampler", sampler)) == 0
    a, b = ((tmp_path / s / "3_0000.png").read_bytes() for s in ("ddim", "dpmpp"))
    assert a != b


def test_train_rejects_unknown_preset(tmp_path, capsys):
    assert cli.main(["train-autoencoder", "--out", str(tmp_path), "--preset", "huge", "--data-root", "fixture"]) == 2
    assert "default, tiny" in capsys.readouterr().err


def test_pipeline_inputs_are_not_modified(tiny_pipeline_dir, tmp_path):
    before = {p: p.read_bytes() for p in tiny_pipeline_dir.rglob("*") if p.is_file()}
    assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / "o")) == 0
    assert before == {p: p.read_bytes() for p in tiny_pipeline_dir.rglob("*") if p.is_file()}


def test_decoder_only_fine_tune_keeps_the_encoder_and_so_the_latents(tiny_pipeline_dir, tmp_path):
    argv = ["train-autoencoder", "--out", str(tmp_path / "ft"), "--init", str(tiny_pipeline_dir / "autoencoder"),
            "--decoder-only", "--steps", "3", "--batch-size", "4", "--warmup", "1", "--data-root", "fixture",
            "--limit", "32", "--threads", "1"]
    assert cli.main(argv) == 0
    before = load_model(tiny_pipeline_dir / "autoencoder", "riae")
    after = load_model(tmp_path / "ft" / "autoencoder", "riae")
    assert after.config == before.config
    encoder = {f"{name}." for name in ("pixel_in", "latent_query", "encode_cross", "encode_blocks", "to_latent")}
    old, new = before.state_dict(), after.state_dict()
    frozen = [k for k in old if any(k.startswith(e) for e in encoder)]
    assert frozen and all(torch.equal(old[k], new[k]) for k in frozen)
    assert any(not torch.equal(old[k], new[k]) for k in old if k not in frozen)  # the decoder did train
    x = torch.rand(2, 1, 12, 12) * 2 - 1
    with torch.no_grad():
        assert torch.equal(before.encode(x, (3, 3)), after.encode(x, (3, 3)))


def test_diffuser_init_continues_from_saved_weights(tiny_pipeline_dir, tmp_path):
    argv = ["train-diffuser", "--out", str(tmp_path / "d"), "--autoencoder", str(tiny_pipeline_dir / "autoencoder"),
            "--init", str(tiny_pipeline_dir), "--steps", "2", "--batch-size", "4", "--warmup", "1",
            "--data-root", "fixture", "--limit", "32", "--threads", "1", "--preview-every", "100"]
    assert cli.main(argv) == 0
    before = load_model(tiny_pipeline_dir / "diffuser", "r2id")
    after = load_model(tmp_path / "d" / "diffuser", "r2id")
    assert after.config == before.config


@pytest.mark.parametrize("extra, message", [
    (["--decoder-only"], "give it with --init"),
    (["--init", "nowhere"], "missing checkpoint file"),
])
def test_fine_tune_options_are_checked(extra, message, tmp_path, capsys):
    argv = ["train-autoencoder", "--out", str(tmp_path), "--data-root", "fixture", *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_diffuser_init_must_match_the_autoencoder(tiny_pipeline_dir, tmp_path, capsys):
    from riid.autoencoder import RIAE
    from riid.checkpoint import save_model

    wide = load_model(tiny_pipeline_dir / "autoencoder", "riae")
    save_model(RIAE(dataclasses.replace(wide.config, latent_channels=wide.config.latent_channels + 1)), tmp_path / "ae")
    argv = ["train-diffuser", "--out", str(tmp_path / "d"), "--autoencoder", str(tmp_path / "ae"),
            "--init", str(tiny_pipeline_dir), "--steps", "1", "--data-root", "fixture"]
    assert cli.main(argv) == 2
    assert "latent channels" in capsys.readouterr().err


# ---- paths: checked before any work, so a refused request writes nothing ------------------

def snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


PATH_CASES = {
    "out-is-a-file": (["--out", "{tmp}/file"], "is a file"),
    "out-under-a-file": (["--out", "{tmp}/file/sub"], "which is a file"),
    "out-empty": (["--out", ""], "expected a path"),
    "out-blank": (["--out", "  "], "expected a path"),
    "out-in-proc": (["--out", "/proc/riid-test-out"], "not writable"),
    "out-in-sys": (["--out", "/sys/riid-test-out/sub"], "not writable"),
    "grid-jpg": (["--grid", "{tmp}/grid.jpg"], "must end in .png"),
    "grid-no-suffix": (["--grid", "{tmp}/grid"], "must end in .png"),
    "grid-a-folder": (["--grid", "{tmp}/folder.png"], "is a folder"),
    "grid-under-a-file": (["--grid", "{tmp}/file/grid.png"], "is a file"),
    "grid-in-proc": (["--grid", "/proc/riid-test-grid.png"], "not writable"),
    "grid-empty": (["--grid", ""], "expected a path"),
    "checkpoint-empty": (["--checkpoint", ""], "expected a path"),
}


@pytest.mark.parametrize("case", sorted(PATH_CASES))
def test_bad_paths_exit_2_in_one_line_and_write_nothing(case, tiny_pipeline_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("keep")
    (tmp_path / "folder.png").mkdir()
    before = snapshot(tmp_path)
    extra, needle = PATH_CASES[case]
    argv = sample_argv(tiny_pipeline_dir, tmp_path / "out", *[a.format(tmp=tmp_path) for a in extra])
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("riid sample: error: ") and needle in err, err
    assert snapshot(tmp_path) == before and (tmp_path / "file").read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tiny_pipeline_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert cli.main(sample_argv(tiny_pipeline_dir, locked / "out")) == 2
    finally:
        locked.chmod(0o700)
    assert "not writable" in capsys.readouterr().err and not (locked / "out").exists()


def test_a_full_disk_is_refused_before_sampling(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2000))
    monkeypatch.setattr(P.Pipeline, "generate", lambda *a, **k: pytest.fail("sampled despite a full disk"))
    assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "MiB needed, only 0.0 MiB free" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_write_that_fails_midway_is_one_line(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("riid.images.Image.Image.save", full)
    assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / "out")) == 2
    err = capsys.readouterr().err  # after the progress bar: one line
    assert err.endswith("\nriid sample: error: [Errno 28] No space left on device\n") and "Traceback" not in err


def test_non_finite_weights_are_refused_by_name(tiny_pipeline_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    broken = Path(shutil.copytree(tiny_pipeline_dir, tmp_path / "broken"))
    path = broken / "autoencoder" / "model.safetensors"
    weights = load_file(str(path))
    weights["to_pixels.1.bias"] = torch.full_like(weights["to_pixels.1.bias"], float("inf"))
    save_file(weights, str(path))
    assert cli.main(sample_argv(broken, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "'to_pixels.1.bias' holds NaN or infinite values" in err and str(path) in err
    assert not (tmp_path / "out").exists()


# ---- the cost estimate --------------------------------------------------------------------

def slow_rate(monkeypatch, tiny_pipeline_dir, seconds):
    """Make riid.cost believe this machine takes ``seconds`` for sample_argv's request."""
    from riid import cost

    pipe = load_pipeline(tiny_pipeline_dir)
    s = pipe.settings(20, 36, steps=3)
    monkeypatch.setattr(cost, "FLOP_RATE", cost.flops(pipe, 2, 20, 36, s.latent_height, s.latent_width, 3) / seconds)
    monkeypatch.delenv(cost.TIME_ENV, raising=False)


def test_long_requests_print_their_estimate(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    slow_rate(monkeypatch, tiny_pipeline_dir, 45)
    assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / "out")) == 0
    assert "estimated time: about 45 s (limit 600 s)" in capsys.readouterr().err
    slow_rate(monkeypatch, tiny_pipeline_dir, 20)
    assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / "out")) == 0
    assert "estimated time" not in capsys.readouterr().err  # short requests stay quiet


@pytest.mark.parametrize("how", ["flag", "environment", "default"])
def test_requests_over_the_time_limit_are_refused(how, tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    from riid import cost

    slow_rate(monkeypatch, tiny_pipeline_dir, 900 if how == "default" else 45)
    extra = ["--time-limit", "30"] if how == "flag" else []
    if how == "environment":
        monkeypatch.setenv(cost.TIME_ENV, "30")
    assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / "out", *extra)) == 2
    limit = 600 if how == "default" else 30
    err = capsys.readouterr().err
    assert f"above the limit of {limit} s" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert cli.main(sample_argv(tiny_pipeline_dir, tmp_path / "out", "--time-limit", "1000")) == 0  # raised


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "abc", ""])
def test_bad_time_limits_are_refused(value, tiny_pipeline_dir, tmp_path, capsys):
    try:
        code = cli.main(sample_argv(tiny_pipeline_dir, tmp_path / "out", "--time-limit", value))
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and "time-limit" in err and len(err.strip().splitlines()) == 1


def test_the_default_50_image_request_at_128_px_fits_the_default_budgets(monkeypatch):
    """`riid sample --digit 0 --n 50 --height 128 --width 128` with the shipped weights: within the
    default time limit, and split into batches that fit the default memory budget."""
    from riid import cost

    monkeypatch.delenv(cost.TIME_ENV, raising=False)
    monkeypatch.delenv(cost.MEMORY_ENV, raising=False)
    pipe = load_pipeline()
    s = pipe.settings(128, 128)
    assert cost.check_time(pipe, 50, s) < cost.DEFAULT_TIME_LIMIT_S
    assert sum(pipe.batch_sizes(50, s)) == 50


# ---- training arguments -------------------------------------------------------------------

TRAIN_CASES = {
    "threads-negative": (["--threads", "-1"], "threads"),
    "limit-0": (["--limit", "0"], "--limit"),
    "preview-every-0": (["--preview-every", "0"], "preview_every"),
    "ema-decay-nan": (["--ema-decay", "nan"], "ema_decay"),
    "save-every-nan": (["--save-every", "nan"], "save_every_s"),
    "save-every-steps-negative": (["--save-every-steps", "-1"], "save_every_steps"),
    "lr-inf": (["--lr", "inf"], "lr"),
    "lr-huge": (["--lr", "1e6"], "lr"),
    "lr-0": (["--lr", "0"], "lr"),
    "steps-0": (["--steps", "0"], "steps"),
    "batch-size-0": (["--batch-size", "0"], "batch_size"),
    "grad-accum-0": (["--grad-accum", "0"], "grad_accum"),
    "warmup-negative": (["--warmup", "-1"], "warmup"),
    "seed-negative": (["--seed", "-1"], "seed"),
    "out-empty": (["--out", ""], "expected a path"),
    "out-a-file": (["--out", "{tmp}/file"], "is a file"),
    "out-under-a-file": (["--out", "{tmp}/file/run"], "which is a file"),
    "out-in-proc": (["--out", "/proc/riid-test-run"], "not writable"),
    "resume-without-state": (["--resume"], "holds no state.pt"),
    "preset": (["--preset", "huge"], "default, tiny"),
    "decoder-only-without-init": (["--decoder-only"], "give it with --init"),
    "init-missing": (["--init", "{tmp}/nowhere"], "missing checkpoint file"),
    "steps-text": (["--steps", "ten"], "expected a whole number"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_bad_training_arguments_exit_2_in_one_line_and_write_nothing(case, tmp_path, capsys):
    (tmp_path / "file").write_text("keep")
    before = snapshot(tmp_path)
    extra, needle = TRAIN_CASES[case]
    argv = ["train-autoencoder", "--out", str(tmp_path / "run"), "--preset", "tiny", "--data-root", "fixture",
            "--limit", "32", "--steps", "2", "--batch-size", "2", "--threads", "1",
            *[a.format(tmp=tmp_path) for a in extra]]
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("riid train-autoencoder: error: ") and needle in err
    assert snapshot(tmp_path) == before


def test_a_diverging_run_stops_in_one_line_naming_the_kept_state(tmp_path, capsys, monkeypatch):
    from riid.tasks import AutoencoderTask

    original, calls = AutoencoderTask.loss, []

    def loss(self, model, batch):
        value, logs = original(self, model, batch)
        calls.append(1)
        return (value * float("nan") if len(calls) == 3 else value), logs

    monkeypatch.setattr(AutoencoderTask, "loss", loss)
    out = tmp_path / "run"
    argv = ["train-autoencoder", "--out", str(out), "--preset", "tiny", "--data-root", "fixture", "--limit", "32",
            "--steps", "5", "--batch-size", "2", "--threads", "1", "--save-every-steps", "1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the progress bar: one line
    assert last.startswith("riid train-autoencoder: error: autoencoder: the loss became nan at step 2; ")
    assert f"the last good state (step 2) is kept in {out / 'state.pt'}" in last
    assert "Traceback" not in err and load_state_step(out) == 2


def load_state_step(out: Path) -> int:
    from riid.train import load_state

    return load_state(out / "state.pt")["step"]
