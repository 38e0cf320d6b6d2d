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
        size = (32, 32) if i % 2 else (24 + i, 40)
        started = time.perf_counter()
        image, *_ = clients[i].predict(str(i % 10), size[0], size[1], True, 8, 8, 3.0, -2.3, 20, "dpmpp", "logsnr",
                                       0.0, i, 1 + i % 3, False, False, api_name="/generate")
        latency = time.perf_counter() - started
        with Image.open(image) as img:
            return latency, img.size, size, 1 + i % 3

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
        assert got == ((w, h) if n == 1 else (n * (w + 2) + 2, h + 4))
    latencies = [r[0] for r in results]
    report = dict(requests=USERS, wall_s=round(wall, 3), p50_s=round(statistics.median(latencies), 3),
                  p95_s=round(percentile(latencies, 95), 3), max_s=round(max(latencies), 3),
                  peak_rss_mib=round(max(peak_rss) / 2**20, 1), start_rss_mib=round(peak_rss[0] / 2**20, 1))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nload: {report}")
    assert max(peak_rss) < RSS_BOUND, report
