"""Start ``python app.py`` on a free local port for the app, browser and load tests."""
from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from riid.pipeline import CHECKPOINT_ENV

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
STARTUP_TIMEOUT_S = 600  # generous: on a loaded 2-core machine importing torch and gradio can take minutes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(checkpoint: Path, tmp: Path, **extra_env):
    """Yield (url, process) of a served app on ``checkpoint``; stop it (and only it) afterwards."""
    port = free_port()
    env = dict(os.environ, **{CHECKPOINT_ENV: str(checkpoint)}, GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp / "gradio"),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra_env)
    log = open(tmp / f"app-{port}.log", "w+")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py")], cwd=tmp, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "config", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer on {url} within {STARTUP_TIMEOUT_S} s")
            time.sleep(0.25)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


_shared: dict[str, tuple[str, subprocess.Popen]] = {}


def shared_app(checkpoint: Path, tmp: Path, **extra_env) -> tuple[str, subprocess.Popen]:
    """One served app per checkpoint and environment for the whole test session (starting one costs seconds),
    stopped at exit."""
    key = repr((str(checkpoint), sorted(extra_env.items())))
    if key not in _shared or _shared[key][1].poll() is not None:
        stack = contextlib.ExitStack()
        _shared[key] = stack.enter_context(running_app(checkpoint, tmp, **extra_env))
        atexit.register(stack.close)
    return _shared[key]
