"""Smoke run of benchmarks/bench.py (quick, tiny pipeline): every row there, every figure real."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_script", REPO / "benchmarks" / "bench.py")
bench = sys.modules["bench_script"] = importlib.util.module_from_spec(_spec)  # for @dataclass
_spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def quick_report(tiny_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return bench.run_bench(tiny_pipeline_dir, quick=True, out=out, threads=1), out


def test_quick_bench_rows_are_measured_beside_estimates(quick_report):
    report, _ = quick_report
    rows = report["rows"]
    training = ["autoencoder training step", "diffuser training step"]
    assert [r["what"] for r in rows] == (["float32 matmul"] + ["sampling"] * len(bench.QUICK_CASES)
                                         + training)
    assert rows[0]["rate"] > 0 and "GFLOP/s" in rows[0]["unit"]
    for r, (side, n) in zip(rows[1:], bench.QUICK_CASES):  # each from a fresh process
        assert "failed" not in r["note"], r
        assert r["setting"].startswith(f"{n} digit(s) at {side}×{side} px"), r
        assert r["seconds"] > 0 and r["rate"] == pytest.approx(n / r["seconds"]), r
        assert r["peak_mib"] >= r["call_peak_mib"] >= r["baseline_mib"] > 100, r  # torch alone
        assert r["estimate_s"] > 0 and r["estimate_mib"] > 0, r
    for r in rows[-2:]:
        assert r["seconds"] > 0 and r["rate"] > 0 and "% of the matmul rate" in r["note"], r
    assert report["meta"]["quick"] and report["meta"]["threads"] == 1
    assert len(report["meta"]["load_at_start"]) == 3


def test_quick_bench_writes_table_and_json(quick_report):
    report, out = quick_report
    assert json.loads((out / "bench-quick.json").read_text()) == json.loads(json.dumps(report))
    assert not (out / "bench.md").exists()  # a smoke run never overwrites a full record
    assert not (out / "bench.json").exists()
    lines = (out / "bench-quick.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(report["rows"])  # header, rule, one line per row


def test_table_marks_missing_figures():
    table = bench.markdown_table([bench.Row("sampling", "1 digit(s) at 1024×1024 px",
                                            estimate_s=6.0, note="failed: killed by signal 9")])
    assert table.splitlines()[-1] == ("| sampling | 1 digit(s) at 1024×1024 px | – | – | 6 s "
                                      "| – | – | – | failed: killed by signal 9 |")


def test_learning_speed_table_reads_each_run_at_30_60_and_120_minutes(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("learning_speed",
                                                  REPO / "benchmarks" / "learning_speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    monkeypatch.setattr(speed, "OUT", tmp_path)
    runs = {"fast": ({"lr": 1.6e-3, "seed": 0, "batch_size": 32, "prediction": "v"},
                     [(15.0, 0.5), (30.2, 0.9), (61.0, 0.985), (119.9, 0.99)]),
            "slow": ({"lr": 8e-4, "seed": 1}, [(8.0, 0.1), (32.0, 0.2)])}  # an old run's recipe
    for name, (recipe, scores) in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.json").write_text(json.dumps(recipe))
        for minutes, accuracy in scores:
            snap = tmp_path / name / f"snap-{minutes:06.2f}"
            snap.mkdir()
            (snap / "score.json").write_text(json.dumps(
                {"minutes": minutes, "accuracy": accuracy, "fd_ratio": 2.0, "steps": 100 * minutes}))
    speed.main(["plot"])
    table = (tmp_path / "table.md").read_text().splitlines()
    assert (tmp_path / "learning_speed.png").stat().st_size > 0
    assert table[2] == ("| fast | v, batch 32, lr 0.0016, seed 0 | 100 | 61 | 90.0%, 2.0× | "
                        "98.5%, 2.0× (61 min) | 99.0%, 2.0× | 120 min: 99.0%, 2.0× |")
    assert table[3] == ("| slow | eps, batch 128, lr 0.0008, seed 1 | 100 | not yet | "
                        "20.0%, 2.0× (32 min) | — | — | 32 min: 20.0%, 2.0× |")


def test_learning_speed_draws_logit_normal_noise_levels_on_request():
    """--timesteps logit-normal: half log-SNR ~ N(0, 1), with each draw's cosine time for the loss-by-t bins."""
    import torch

    from conftest import tiny_models
    from riid.schedule import cosine_alpha_bar, log_snr
    from riid.tasks import DiffusionModel

    spec = importlib.util.spec_from_file_location("learning_speed", REPO / "benchmarks" / "learning_speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    autoencoder, diffuser, conditioner = tiny_models()
    images, labels = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8) % 10
    draws = {}
    for logit_normal in (False, True):
        task = speed.TimedTask(DiffusionModel(diffuser, conditioner), autoencoder, images, labels, "unused",
                               batch_size=128, minutes=1.0, logit_normal=logit_normal)
        generator = torch.Generator().manual_seed(0)
        batches = [task.batch(generator, "cpu") for _ in range(8)]
        lam = log_snr(torch.cat([b["alpha_bar"] for b in batches]))
        t = torch.cat([b["t"] for b in batches])
        assert torch.allclose(cosine_alpha_bar(t), torch.cat([b["alpha_bar"] for b in batches]), atol=1e-3)
        draws[logit_normal] = lam
    assert abs(draws[True].mean()) < 0.15 and 0.85 < draws[True].std() < 1.15
    assert draws[False].std() > 1.3  # the cosine schedule's own spread is wider
