"""Smoke run of the benchmark (quick mode, tiny pipeline): every row present, every figure positive."""
from __future__ import annotations

import json

import pytest

from riid.bench import Row, markdown_table, run_bench

EXPECTED = {  # measurement → how many rows quick mode gives
    "float32 matmul": 1,
    "autoencoder training step": 1,
    "diffuser training step": 1,
    "sampling 10 digits (diffuse + decode)": 1,
    "decode one 8×8 latent": 2,
    "one guided sampling step, 1 digit": 1,
}


@pytest.fixture(scope="module")
def quick_report(tiny_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return run_bench(tiny_pipeline_dir, quick=True, out=out), out


def test_quick_bench_rows_and_positive_figures(quick_report):
    report, _ = quick_report
    rows = report["rows"]
    assert {r["what"]: sum(x["what"] == r["what"] for x in rows) for r in rows} == EXPECTED
    for r in rows:
        assert "failed" not in r["note"], r
        assert r["seconds"] > 0 and r["rate"] > 0, r
    for r in rows:
        if r["what"] in ("decode one 8×8 latent", "one guided sampling step, 1 digit"):
            assert r["peak_mib"] >= r["baseline_mib"] > 0, r
    for name in ("autoencoder training step", "diffuser training step"):
        (r,) = [r for r in rows if r["what"] == name]
        assert 0 < r["flop_share"], r
    assert [r["setting"] for r in rows if r["what"] == "decode one 8×8 latent"] == ["32×32 px", "128×128 px"]
    assert report["meta"]["quick"] and report["meta"]["threads"] >= 1
    assert len(report["meta"]["load_at_start"]) == 3


def test_quick_bench_writes_table_and_json(quick_report):
    report, out = quick_report
    assert json.loads((out / "bench-quick.json").read_text()) == json.loads(json.dumps(report))
    text = (out / "bench-quick.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(report["rows"])  # header, rule, one line per row
    assert "Load average" in text and "GFLOP/s" in text


def test_table_marks_missing_figures():
    table = markdown_table([Row("decode one 8×8 latent", "2048×2048 px", note="failed: killed by signal 9")])
    last = table.splitlines()[-1]
    assert last == "| decode one 8×8 latent | 2048×2048 px | – | – | – | failed: killed by signal 9 |"
