"""Speed and memory of riid: sampling beside riid.cost's estimates, a training step of each model.

    python benchmarks/bench.py [--checkpoint DIR] [--quick] [--out results/bench] [--threads N]

Rows: the machine's float32 matmul rate (the yardstick riid.cost.FLOP_RATE stands for), then
``pipe.generate`` with the default settings at 32, 128 and 1024 px, each in a fresh interpreter
(this process's allocator already holds whatever ran before) that reports the call's time, its
resident set after imports, load and warm-up, and the peak of the call alone; then a training step
of each model at the checkpoint's configs on fresh weights, its images per second, and its matmul
and attention FLOPs as a share of the measured matmul rate. Prints one Markdown table and writes
``bench.md`` and ``bench.json`` (``bench-quick.*`` with ``--quick``) into ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import riid
from riid import cost
from riid.pipeline import default_checkpoint, load_pipeline

DEFAULT_OUT = Path("results") / "bench"
CASES = ((32, 10), (128, 10), (1024, 1))  # (side in px, images per call)
QUICK_CASES = ((32, 2),)  # one fresh process: the smoke run of the tests
BUSY_LOAD = 0.5  # a 1-minute load average above this at the start flags the figures
MIB = 2**20


@dataclass
class Row:
    what: str
    setting: str
    seconds: float | None = None  # one call
    rate: float | None = None
    unit: str = ""
    estimate_s: float | None = None  # riid.cost.seconds
    peak_mib: float | None = None  # peak resident memory of the whole (fresh) process
    baseline_mib: float | None = None  # resident memory after imports, load and warm-up
    call_peak_mib: float | None = None  # peak resident memory during the measured call alone
    estimate_mib: float | None = None  # riid.cost.peak_bytes: the call above the models
    note: str = ""


def memory_mib() -> tuple[float | None, float | None]:
    """(current, peak) resident memory of this process in MiB; None where it cannot be read.

    On Linux both come from /proc/self/status (VmRSS, VmHWM): ``ru_maxrss`` of a spawned
    child starts from the parent's resident set at the fork, so it would report the parent's.
    """
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        pass
    try:
        import resource

        scale = MIB if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
        return None, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    except ImportError:
        return None, None


def reset_peak() -> bool:
    """Restart the peak (VmHWM) from the current resident set (Linux ≥ 4.0); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def matmul_gflops(n: int = 2048, reps: int = 10) -> tuple[float, float]:
    """Median (seconds per n×n float32 matmul, GFLOP/s) with the current torch thread count."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator)
    out = torch.mm(a, b)  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return seconds, 2 * n**3 / seconds / 1e9


def child(spec: dict) -> dict:
    """One timed ``pipe.generate`` in a fresh process (``bench.py --child SPEC``)."""
    torch.set_num_threads(spec["threads"])
    pipe = load_pipeline(spec["folder"])
    s = pipe.settings(spec["side"], spec["side"], steps=spec["steps"])
    digits = [i % 10 for i in range(spec["n"])]
    with torch.inference_mode():
        pipe.generate([0], steps=1)  # warm-up: allocator, thread pool, kernels
        baseline, peak_before = memory_mib()
        fresh_peak = reset_peak()
        start = time.perf_counter()
        pipe.generate(digits, s)
        seconds = time.perf_counter() - start
    _, peak = memory_mib()
    return {"seconds": seconds, "baseline_mib": baseline,
            "call_peak_mib": peak if fresh_peak else None,
            "peak_mib": None if peak is None else max(peak, peak_before or 0.0)}


def run_child(spec: dict, timeout: float) -> dict:
    env = dict(os.environ)
    package_root = str(Path(riid.__file__).resolve().parents[1])  # the riid this process imported
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    try:
        done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    if done.returncode < 0:
        return {"error": f"killed by signal {-done.returncode}"
                         + (" (out of memory?)" if done.returncode == -9 else "")}
    tail = done.stderr.strip().splitlines()
    return {"error": f"exit code {done.returncode}: {tail[-1] if tail else 'no output'}"}


def sampling_rows(folder: Path, cases, steps: int, threads: int, timeout: float) -> list[Row]:
    pipe = load_pipeline(folder)
    rows = []
    for side, n in cases:
        s = pipe.settings(side, side, steps=steps)
        print(f"bench: {n} digit(s) at {side} px (fresh process) …", file=sys.stderr, flush=True)
        result = run_child({"folder": str(folder), "side": side, "n": n, "steps": steps,
                            "threads": threads}, timeout)
        setting = (f"{n} digit(s) at {side}×{side} px, {s.latent_height}×{s.latent_width} "
                   f"latent, {s.sampler} {s.steps} steps, cfg {s.cfg:g}")
        estimate = {"estimate_s": cost.seconds(pipe, n, s),
                    "estimate_mib": cost.peak_bytes(pipe, n, side, side, s.latent_height,
                                                    s.latent_width, clouds=s.clouds) / MIB}
        if "error" in result:
            rows.append(Row("sampling", setting, note=f"failed: {result['error']}", **estimate))
            continue
        rows.append(Row("sampling", setting, result["seconds"], n / result["seconds"], "img/s",
                        peak_mib=result["peak_mib"], baseline_mib=result["baseline_mib"],
                        call_peak_mib=result["call_peak_mib"], **estimate))
    return rows


def count_flops(fn) -> int:
    """FLOPs of the matmuls and attention ``fn()`` runs (torch's counter misses the CPU kernel)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu:
               lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v),
               aten._scaled_dot_product_flash_attention_for_cpu_backward:
               lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v)}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def time_steps(task, model, batches) -> tuple[float, float, int]:
    """Mean seconds of a training step (loss, backward, clipping, AdamW) after a warm-up, images
    per second, and the FLOPs of the first batch's forward and backward."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch):
        task.loss(model, batch)[0].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    seconds = (time.perf_counter() - start) / len(batches)
    flops = count_flops(lambda: task.loss(model, batches[0])[0].backward())
    model.zero_grad(set_to_none=True)
    return seconds, statistics.mean(b["size"] for b in batches) / seconds, flops


def training_rows(folder: Path, quick: bool, gflops: float) -> list[Row]:
    """A step of each model as riid.train runs it, on batches its task draws (canvas and latent
    sizes vary from batch to batch)."""
    # imported here, not at the top: the sampling children would count them in their memory
    from riid.data import load_mnist
    from riid.diffuser import R2ID, LabelConditioner
    from riid.tasks import AutoencoderTask, DiffuserTask, DiffusionModel

    images, labels = load_mnist("test", root="fixture")
    pipe = load_pipeline(folder)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ae = type(pipe.autoencoder)(pipe.autoencoder.config)
    model = DiffusionModel(R2ID(pipe.diffuser.config), LabelConditioner(pipe.conditioner.config))
    ae_batch, diff_batch = (8, 8) if quick else (64, 128)  # the CLI's defaults
    cases = [("autoencoder", AutoencoderTask(ae, images, batch_size=ae_batch), ae, ae_batch),
             ("diffuser", DiffuserTask(model, pipe.autoencoder, images, labels,
                                       folder / "autoencoder", batch_size=diff_batch),
              model, diff_batch)]
    rows = []
    for name, task, net, batch_size in cases:
        print(f"bench: {name} training step …", file=sys.stderr, flush=True)
        batches = [task.batch(generator, "cpu") for _ in range(1 if quick else 8)]
        seconds, rate, flops = time_steps(task, net, batches)
        params = sum(p.numel() for p in net.parameters()) / 1e6
        setting = f"{params:.2f} M params, --batch-size {batch_size}, AdamW; mean of {len(batches)}"
        rows.append(Row(f"{name} training step", setting, seconds, rate, "img/s",
                        note=f"{flops / 1e9:.1f} GFLOP forward+backward (matmuls and attention) "
                             f"= {flops / seconds / 1e9 / gflops:.0%} of the matmul rate"))
    return rows


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "–"
    return (f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}") + unit


def markdown_table(rows: list[Row]) -> str:
    lines = ["| measurement | setting | time per call | rate | estimated time | peak RSS (MiB) "
             "| the call (+MiB) | estimated (+MiB) | note |", "| --- " * 9 + "|"]
    for r in rows:
        call = (None if r.call_peak_mib is None or r.baseline_mib is None
                else r.call_peak_mib - r.baseline_mib)
        rate = "–" if r.rate is None else _fmt(r.rate, " " + r.unit)
        lines.append(f"| {r.what} | {r.setting} | {_fmt(r.seconds, ' s')} | {rate} | "
                     f"{_fmt(r.estimate_s, ' s')} | {_fmt(r.peak_mib)} | {_fmt(call)} | "
                     f"{_fmt(r.estimate_mib)} | {r.note} |")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _load() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def run_bench(checkpoint=None, quick: bool = False, out=DEFAULT_OUT,
              threads: int | None = None) -> dict:
    """Measure, print one Markdown table, write ``bench.md`` and ``bench.json`` into ``out``.

    ``quick``: small sizes and 2 steps, a smoke run whose times mean little, written as
    ``bench-quick.*`` so that it never overwrites a full record.
    """
    folder = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    if threads is not None:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    load_start, started = _load(), time.perf_counter()
    n, reps = (512, 3) if quick else (2048, 10)
    mm_s, gflops = matmul_gflops(n, reps)
    rows = [Row("float32 matmul", f"torch.mm {n}×{n}, {threads} thread(s), median of {reps}",
                mm_s, gflops, "GFLOP/s",
                note=f"riid.cost estimates at {cost.FLOP_RATE / 1e9:g} GFLOP/s")]
    rows += sampling_rows(folder, QUICK_CASES if quick else CASES, 2 if quick else 20, threads,
                          timeout=120 if quick else 1800)
    rows += training_rows(folder, quick, gflops)
    load_end = _load()
    busy = load_start is not None and load_start[0] > BUSY_LOAD
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "quick": quick, "checkpoint": str(folder), "cpu": _cpu_name(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": threads,
            "python": platform.python_version(), "load_at_start": load_start,
            "load_at_end": load_end, "busy": busy, "wall_s": time.perf_counter() - started}
    loads = ["n/a" if x is None else " / ".join(f"{v:.2f}" for v in x)
             for x in (load_start, load_end)]
    header = [f"benchmarks/bench.py{' --quick' if quick else ''}, {meta['date']}: {meta['cpu']}, "
              f"{meta['cpus']} CPUs, torch {meta['torch']}, {threads} thread(s), float32; "
              f"checkpoint {folder}.",
              f"Load average (1 / 5 / 15 min) at start {loads[0]}, at end {loads[1]}."]
    if busy:
        header.append(f"**Warning: the machine was busy (1-minute load {load_start[0]:.2f} > "
                      f"{BUSY_LOAD}), so times are pessimistic.**")
    header.append("Sampling uses the default settings and latent; peak RSS is that of a whole "
                  "fresh process that imports, loads the pipeline, warms up and makes the call.")
    text = "\n".join(header) + "\n\n" + markdown_table(rows) + "\n"
    print(text)
    report = {"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench-quick" if quick else "bench"
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="pipeline folder (default: the weights)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (a smoke test)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON spec: one sampling row
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))))
    else:
        run_bench(args.checkpoint, quick=args.quick, out=args.out, threads=args.threads)


if __name__ == "__main__":
    main()
