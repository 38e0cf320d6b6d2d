"""Twenty visitors at once: every request completes, memory stays bounded, latency is reported."""
from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from gradio_client import Client
from PIL import Image

from app_server import ARTIFACTS, shared_app

pytestmark = pytest.mark.slow

USERS = 20
RSS_BOUND = 2 * 2**30  # the served process: torch + gradio (~0.7 GiB) + the queue's one request at a time


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def test_twenty_concurrent_generations(tiny_pipeline_dir, tmp_path):
    url, proc = shared_app(tiny_pipeline_dir, tmp_path)
    server = psutil.Process(proc.pid)  # shared with the other app tests: its RSS is what is bounded
    clients = [Client(url, verbose=False) for _ in range(USERS)]
    peak_rss, done = [server.memory_info().rss], threading.Event()

    def watch():
        while not done.wait(0.05):
            peak_rss.append(server.memory_info().rss)

    def visit(i):
        (h, w), n = ((32, 32) if i % 2 else (24 + i, 40)), 1 + i % 3
        started = time.perf_counter()
        gallery, *_ = clients[i].predict(  # by name: the endpoint's order of inputs may change
            digit=str(i % 10), height=h, width=w, guidance=3.0, steps=20, seed=i, n_images=n, auto_latent=True,
            latent_h=8, latent_w=8, guidance_from=-2.3, sampler="dpmpp", spacing="logsnr", eta=0.0,
            show_trajectory=False, show_latents=False, api_name="/generate")
        latency = time.perf_counter() - started
        sizes = []
        for item in gallery:  # each image exactly height×width
            with Image.open(item["image"]) as img:
                sizes.append(img.size)
        return latency, sizes, (h, w), n

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(USERS) as pool:
            results = list(pool.map(visit, range(USERS)))  # re-raises the first failed request
    finally:
        wall = time.perf_counter() - started
        done.set()
        watcher.join()

    for latency, got, (h, w), n in results:
        assert got == [(w, h)] * n  # PIL gives (width, height)
    latencies = [r[0] for r in results]
    report = dict(requests=USERS, wall_s=round(wall, 3), p50_s=round(statistics.median(latencies), 3),
                  p95_s=round(percentile(latencies, 95), 3), max_s=round(max(latencies), 3),
                  peak_rss_mib=round(max(peak_rss) / 2**20, 1), start_rss_mib=round(peak_rss[0] / 2**20, 1))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nload: {report}")
    assert max(peak_rss) < RSS_BOUND, report
