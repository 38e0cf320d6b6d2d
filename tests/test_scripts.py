"""scripts/train_from_scratch.sh, the 2-hour pipeline, run end to end on tiny models and 32 fixture digits."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from riid import load_model, load_pipeline

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_from_scratch.sh"
TINY = ["--preset", "tiny", "--limit", "32", "--steps", "2", "--batch-size", "4", "--warmup", "1",
        "--preview-every", "100", "--threads", "1"]


def test_train_from_scratch_script_makes_a_pipeline(tmp_path, subprocess_env):
    env = dict(subprocess_env, RIID_DATA="fixture", RIID_EVAL_N="4",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), subprocess_env.get("PATH", "")]))
    run = subprocess.run(["bash", str(SCRIPT), str(tmp_path), *TINY], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    log = (tmp_path / "pipeline.log").read_text()
    for stage in ("autoencoder done", "decoder fine-tune done", "diffuser done", "weights in", "evaluated"):
        assert stage in log
    # the shipped autoencoder is the fine-tuned one, and its encoder is the one the diffuser learnt on
    shipped = load_model(tmp_path / "weights" / "autoencoder", "riae")
    first = load_model(tmp_path / "ae" / "autoencoder", "riae")
    x = torch.rand(1, 1, 12, 12) * 2 - 1
    with torch.no_grad():
        assert torch.equal(shipped.encode(x, (3, 3)), first.encode(x, (3, 3)))
    assert any(not torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), first.state_dict().values()))
    assert "| 24×40 |" in (tmp_path / "eval" / "report.md").read_text()
    assert (tmp_path / "eval-seed2" / "report.json").exists()
    pipe = load_pipeline(tmp_path / "weights")
    assert pipe.defaults.cfg == 3.0  # the guidance the 2-hour weights were measured at
    assert "CFG 3 from" in (tmp_path / "eval" / "report.md").read_text()  # and its eval used it
    images = pipe.generate([3], height=20, width=12, steps=2)
    assert images.shape == (1, 1, 20, 12) and torch.isfinite(images).all()
