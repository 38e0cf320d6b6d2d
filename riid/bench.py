"""Speed and memory benchmark: one Markdown table of what the models cost on this machine.

Measured: the machine's float32 matmul rate (the yardstick); a training step of each model at
the checkpoint's configs, and the diffuser step's achieved FLOP/s as a share of that rate;
sampling 10 digits at 32, 64 and 128 px; decoding one 8×8 latent at up to 2048×2048 px; and
one sampling step on large latents (full attention versus clouds).

Peak memory is the peak resident set of a whole process, so every memory row runs in a fresh
interpreter (``python -c``; this process's allocator already holds the training runs) that
reports its own peak, its resident set after imports, model load and a small warm-up, and the
peak of the measured call alone, so the increment of the call is visible.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import load_model
from .pipeline import DEFAULT_CFG, DEFAULT_ETA, DEFAULT_SAMPLER, DEFAULT_STEPS, load_pipeline

DEFAULT_OUT = Path("results") / "bench"
DECODE_SIZES = (32, 128, 512, 1024, 2048)
SAMPLE_SIZES = (32, 64, 128)
SAMPLE_REPS = (5, 3, 1)  # 128 px with the default model takes tens of seconds per run on 2 cores
LARGE_LATENTS = (32, 64)
CLOUDS = (1, 4)
BUSY_LOAD = 0.5  # a 1-minute load average above this at the start flags the figures


@dataclass
class Row:
    what: str
    setting: str
    seconds: float | None = None  # one call (the median or mean of the timed repetitions)
    rate: float | None = None
    unit: str = ""
    peak_mib: float | None = None  # peak resident memory of the whole (fresh) process
    baseline_mib: float | None = None  # resident memory after imports, model load and warm-up
    call_peak_mib: float | None = None  # peak resident memory during the measured call alone
    note: str = ""
    flop_share: float | None = None  # achieved FLOP/s over the measured matmul rate


def _log(what: str) -> None:
    print(f"bench: {what} …", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# memory of this process


def memory_mib() -> tuple[float | None, float | None]:
    """(current, peak) resident memory of this process in MiB; None where the platform hides it.

    On Linux both come from /proc/self/status (VmRSS, VmHWM): ``ru_maxrss`` of a spawned child
    starts from the parent's resident set at the fork, so it would report the parent's memory.
    """
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        pass
    current = peak = None
    try:
        import psutil

        info = psutil.Process().memory_info()
        current = info.rss / 2**20
        peak = info.peak_wset / 2**20 if hasattr(info, "peak_wset") else None  # Windows
    except ImportError:
        pass
    if peak is None:
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
        except ImportError:
            pass
    return current, peak


def reset_peak() -> bool:
    """Restart the peak (VmHWM) from the current resident set (Linux ≥ 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# FLOP counting: torch's counter knows the GPU attention kernels but not the CPU flash kernel


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                         **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def count_flops(fn) -> int:
    """FLOPs of matmuls and attention run by ``fn()`` (elementwise work, norms and optimisers are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    cpu_attention = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
                     aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        fn()
    return counter.get_total_flops()


# ---------------------------------------------------------------------------------------------
# measurements in this process


def matmul_gflops(n: int = 2048, reps: int = 10) -> tuple[float, float]:
    """Median (seconds per n×n float32 matmul, GFLOP/s) with the current torch thread count."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator)
    out = torch.mm(a, b)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return seconds, 2 * n**3 / seconds / 1e9


def _train_step(task, model, optimizer, batch) -> None:
    """What riid.train does per step (float32 on the CPU): loss, backward, clipping, AdamW."""
    loss, _ = task.loss(model, batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _time_steps(task, model, batches) -> float:
    """Mean seconds of a training step over ``batches`` after one warm-up step on the first."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    _train_step(task, model, optimizer, batches[0])
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        _train_step(task, model, optimizer, batch)
        times.append(time.perf_counter() - t0)
    return statistics.mean(times)


def _forward_backward_flops(task, model, batch) -> int:
    def step():
        loss, _ = task.loss(model, batch)
        loss.backward()

    flops = count_flops(step)
    model.zero_grad(set_to_none=True)
    return flops


def _millions(model) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params"


def training_rows(folder: Path, ae_steps: int, diffuser_steps: int, matmul_rate: float) -> list[Row]:
    """Timed training steps of each model (fresh weights at the checkpoint's configs) after a warm-up step.

    The autoencoder's batches vary in canvas and latent size as in training, so it is averaged over more steps.
    """
    from .autoencoder import RIAE
    from .data import load_mnist
    from .diffuser import R2ID, LabelConditioner
    from .tasks import AutoencoderTask, DiffuserTask, DiffusionModel

    images, labels = load_mnist("test", root="fixture")
    pipe = load_pipeline(folder)
    generator = torch.Generator().manual_seed(0)
    rows = []

    _log("autoencoder training step")
    torch.manual_seed(0)
    autoencoder = RIAE(pipe.autoencoder.config)
    task = AutoencoderTask(autoencoder, images, batch_size=64)
    batches = [task.batch(generator, "cpu") for _ in range(ae_steps)]
    seconds = _time_steps(task, autoencoder, batches)
    flops = statistics.mean(_forward_backward_flops(task, autoencoder, b) for b in batches)
    share = flops / seconds / matmul_rate
    rows.append(Row("autoencoder training step",
                    f"RIAE {_millions(autoencoder)}, batch 64, training canvases and densities, AdamW; "
                    f"mean of {ae_steps}", seconds, 64 / seconds, "img/s",
                    note=f"{flops / 1e9:.2f} GFLOP forward+backward = {share:.0%} of the matmul rate",
                    flop_share=share))

    _log("diffuser training step")
    torch.manual_seed(0)
    model = DiffusionModel(R2ID(pipe.diffuser.config), LabelConditioner(pipe.conditioner.config))
    task = DiffuserTask(model, pipe.autoencoder, images, labels, folder / "autoencoder", batch_size=128)
    t0 = time.perf_counter()
    batches = [task.batch_at(32, 32, (8, 8), generator, "cpu") for _ in range(diffuser_steps)]
    encode_s = (time.perf_counter() - t0) / diffuser_steps
    seconds = _time_steps(task, model, batches)
    flops = _forward_backward_flops(task, model, batches[0])
    share = flops / seconds / matmul_rate
    rows.append(Row("diffuser training step",
                    f"R2ID {_millions(model)}, batch 128 at 8×8 latents, AdamW; mean of {diffuser_steps}",
                    seconds, 128 / seconds, "img/s",
                    note=f"{flops / 1e9:.2f} GFLOP forward+backward (matmuls and attention only) → "
                         f"{flops / seconds / 1e9:.1f} GFLOP/s = **{share:.0%} of the matmul rate**; "
                         f"encoding the batch adds {encode_s:.3g} s ({128 / (seconds + encode_s):.0f} img/s)",
                    flop_share=share))
    return rows


def sampling_rows(folder: Path, sizes, steps: int, reps) -> list[Row]:
    """pipe.generate of the digits 0–9 at each size (default latent size), after a one-step warm-up.

    ``reps`` (one count per size) is the number of timed runs whose median is reported.
    """
    pipe = load_pipeline(folder)
    digits = list(range(10))
    rows = []
    for size, runs in zip(sizes, reps):
        _log(f"sampling at {size} px")
        s = pipe.settings(size, size, steps=steps)
        with torch.inference_mode():
            pipe.generate(digits, size, size, steps=1)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                pipe.generate(digits, size, size, steps=steps, cfg=DEFAULT_CFG, eta=DEFAULT_ETA,
                              sampler=DEFAULT_SAMPLER)
                times.append(time.perf_counter() - t0)
        seconds = statistics.median(times)
        rows.append(Row("sampling 10 digits (diffuse + decode)",
                        f"{size}×{size} px, {s.latent_height}×{s.latent_width} latent, {DEFAULT_SAMPLER} "
                        f"{steps} steps spaced in {s.spacing}, cfg {DEFAULT_CFG:g} from log-SNR {s.cfg_from:g}",
                        seconds, 10 / seconds, "img/s",
                        note=f"median of {runs} after warm-up"))
    return rows


# ---------------------------------------------------------------------------------------------
# measurements in fresh child processes (peak memory)


def child(spec: dict) -> dict:
    """Run one measurement in this (fresh) process; called by the parent through ``python -c``."""
    torch.set_num_threads(spec["threads"])
    pipe = load_pipeline(spec["folder"])
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        if spec["kind"] == "decode":
            latent = torch.randn(1, pipe.autoencoder.config.latent_channels, 8, 8, generator=generator)

            def call(size):
                return pipe.decode(latent, size, size)

            warm_up = 32
        else:  # one guided sampling step: the encoder once, the decoder on [cond, null]
            digit = torch.tensor([3])
            conds = [pipe.conditioner(pipe.conditioner.one_hot(d)) for d in (digit, torch.full_like(digit, -1))]
            alpha_bar = torch.full((1,), 0.5)

            def call(side):
                x = torch.randn(1, pipe.diffuser.config.latent_channels, side, side, generator=generator)
                return pipe.diffuser(x, alpha_bar, conds, num_clouds=spec["clouds"])

            warm_up = 8
        call(warm_up)
        baseline, peak_before = memory_mib()
        fresh_peak = reset_peak()
        t0 = time.perf_counter()
        call(spec["size"])
        seconds = time.perf_counter() - t0
    _, peak = memory_mib()
    return {"seconds": seconds, "baseline_mib": baseline, "call_peak_mib": peak if fresh_peak else None,
            "peak_mib": None if peak is None else max(peak, peak_before or 0.0)}


def _run_child(spec: dict, timeout: float) -> dict:
    code = ("import json, sys; from riid.bench import child; "
            "print('RESULT ' + json.dumps(child(json.loads(sys.argv[1]))))")
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    try:
        done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    if done.returncode < 0:
        why = f"killed by signal {-done.returncode}" + (" (out of memory?)" if done.returncode == -9 else "")
    else:
        tail = done.stderr.strip().splitlines()
        why = f"exit code {done.returncode}: {tail[-1] if tail else 'no output'}"
    return {"error": why}


def _child_row(what: str, setting: str, result: dict, work: float, unit: str) -> Row:
    if "error" in result:
        return Row(what, setting, note=f"failed: {result['error']}")
    base, call_peak = result["baseline_mib"], result["call_peak_mib"]
    note = "" if base is None else f"{base:,.0f} MiB after imports, load and warm-up"
    if base is not None and call_peak is not None:
        note += f"; the call peaks at {call_peak:,.0f} MiB (+{call_peak - base:,.0f} MiB)"
    return Row(what, setting, result["seconds"], work / result["seconds"], unit, peak_mib=result["peak_mib"],
               baseline_mib=base, call_peak_mib=call_peak, note=note)


def memory_rows(folder: Path, decode_sizes, latent_sides, clouds, threads: int, timeout: float,
                parallel: bool = False) -> list[Row]:
    """Decoding one 8×8 latent per output size, and one sampling step per latent side and cloud count.

    Each runs in its own fresh process; ``parallel`` runs them side by side (memory figures stay
    exact, times do not: for smoke runs only).
    """
    jobs = []  # (what, setting, spec, work per call, unit)
    for size in decode_sizes:
        jobs.append(("decode one 8×8 latent", f"{size}×{size} px",
                     {"kind": "decode", "size": size}, size * size / 1e6, "Mpx/s"))
    for side in latent_sides:
        for num_clouds in clouds:
            attention = "full attention" if num_clouds == 1 else f"num_clouds={num_clouds}"
            setting = f"{side}×{side} latent ({side * side:,} tokens), {attention}"
            jobs.append(("one guided sampling step, 1 digit", setting,
                         {"kind": "diffuse", "size": side, "clouds": num_clouds}, 1.0, "steps/s"))

    def run(job):
        what, setting, spec, _, _ = job
        _log(f"{what}: {setting} (fresh process)")
        return _run_child({**spec, "folder": str(folder), "threads": threads}, timeout)

    with ThreadPoolExecutor(max_workers=len(jobs) if parallel else 1) as pool:
        results = list(pool.map(run, jobs))
    return [_child_row(what, setting, result, work, unit)
            for (what, setting, _, work, unit), result in zip(jobs, results)]


# ---------------------------------------------------------------------------------------------
# report


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def markdown_table(rows: list[Row]) -> str:
    lines = ["| measurement | setting | time per call | rate | peak RSS (MiB) | note |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        rate = "–" if r.rate is None else f"{_fmt(r.rate)} {r.unit}"
        time_s = "–" if r.seconds is None else f"{_fmt(r.seconds)} s"
        peak = "–" if r.peak_mib is None else f"{r.peak_mib:,.0f}"
        lines.append(f"| {r.what} | {r.setting} | {time_s} | {rate} | {peak} | {r.note} |")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def _fmt_load(load) -> str:
    return "n/a" if load is None else " / ".join(f"{x:.2f}" for x in load)


def run_bench(checkpoint, quick: bool = False, out=DEFAULT_OUT, threads: int | None = None) -> dict:
    """Measure, print one Markdown table, write ``bench.md`` and ``bench.json`` into ``out``; return the JSON.

    ``quick`` uses tiny sizes and single repetitions and runs the memory children side by side
    (a smoke run of a few seconds whose times mean little); it writes ``bench-quick.*`` so that
    it never overwrites a full run's record.
    """
    folder = Path(checkpoint)
    if not folder.is_dir():
        raise ValueError(f"checkpoint folder not found: {folder}")
    if threads is not None:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    load_start, started = _load(), time.perf_counter()
    load_model(folder / "autoencoder", "riae")  # a clear error before minutes of work

    _log("float32 matmul")
    n, reps = (512, 3) if quick else (2048, 10)
    mm_s, gflops = matmul_gflops(n, reps)
    rows = [Row("float32 matmul", f"torch.mm {n}×{n}, {threads} thread(s), median of {reps}", mm_s, gflops,
                "GFLOP/s", note="the yardstick for the FLOP shares below")]
    rows += training_rows(folder, 1 if quick else 8, 1 if quick else 3, gflops * 1e9)
    rows += sampling_rows(folder, (32,) if quick else SAMPLE_SIZES, 2 if quick else DEFAULT_STEPS,
                          (1,) if quick else SAMPLE_REPS)
    if quick:
        rows += memory_rows(folder, (32, 128), (16,), (4,), threads, timeout=120, parallel=True)
    else:
        rows += memory_rows(folder, DECODE_SIZES, LARGE_LATENTS, CLOUDS, threads, timeout=1800)
    load_end = _load()

    busy = load_start is not None and load_start[0] > BUSY_LOAD
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "quick": quick, "checkpoint": str(folder.resolve()), "cpu": _cpu_name(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": threads, "python": platform.python_version(),
            "load_at_start": load_start, "load_at_end": load_end, "busy": busy,
            "wall_s": time.perf_counter() - started}
    header = [(f"riid bench{' --quick' if quick else ''}, {meta['date']}: {meta['cpu']}, {meta['cpus']} CPUs, "
               f"torch {meta['torch']}, {threads} thread(s), float32; checkpoint {folder}."),
              f"Load average (1 / 5 / 15 min) at start {_fmt_load(load_start)}, at end {_fmt_load(load_end)}."]
    if busy:
        header.append(f"**Warning: the machine was busy (1-minute load {load_start[0]:.2f} > {BUSY_LOAD}); "
                      "other processes shared the CPU, so times are pessimistic.**")
    header.append("FLOPs count matmuls and attention only (torch.utils.flop_counter); peak RSS is that of a "
                  "whole fresh process that imports, loads the pipeline, warms up and makes the one call.")
    text = "\n".join(header) + "\n\n" + markdown_table(rows) + "\n"
    print(text)

    report = {"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench-quick" if quick else "bench"
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
