"""Kill a real training run with SIGKILL at random moments, some of them during a save, and resume it each
time: the final weights equal an uninterrupted run's bit for bit, no state file is ever unreadable, and a
kill loses at most one save interval of steps.

Starting a Python process that imports torch takes 5-20 s on a small machine, so the runs are forked from
a "zygote": one helper process that imports the library once and forks a fresh child per run. Each child
is a real process running ``riid train-autoencoder`` end to end, killed by its PID; the zygote itself never
runs a torch op, so forking it is safe. RIID_FAULT_KILLS sets the number of kills (default 8).
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from riid import cli, load_model
from riid.train import LOCK, load_state

KILLS = int(os.environ.get("RIID_FAULT_KILLS", "8"))
STEPS, SAVE_EVERY = 50, 3
TIMEOUT = 300  # per wait; generous for a loaded machine
PROGRESS = re.compile(r"(\d+)/" + str(STEPS) + r" \[")


def argv(out: Path) -> list[str]:
    return ["train-autoencoder", "--out", str(out), "--preset", "tiny", "--data-root", "fixture", "--limit", "64",
            "--steps", str(STEPS), "--batch-size", "4", "--warmup", "5", "--threads", "1", "--seed", "7",
            "--save-every", "1e9", "--save-every-steps", str(SAVE_EVERY), "--preview-every", "100000"]


def zygote() -> None:
    """Read JSON requests on stdin: {"argv", "log"} forks a run (reply {"pid"}), {"wait": pid} reaps it."""
    import accelerate  # noqa: F401 - imported once here, not in every child
    import matplotlib.figure  # noqa: F401
    import riid.cli
    import riid.tasks  # noqa: F401

    riid.cli._parser()  # imports what the parser reads its subcommands' arguments from

    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "wait" in request:
            _, status = os.waitpid(request["wait"], 0)
            print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(log, 1)
                os.dup2(log, 2)
                code = riid.cli.main(request["argv"])
            except BaseException:  # noqa: BLE001 - reported in the log, as a crash
                import traceback
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)


class Zygote:
    def __init__(self, python: str, env: dict):
        env = dict(env, TQDM_MININTERVAL="0")  # tqdm prints every step: the last step reached before a kill
        self.proc = subprocess.Popen([python, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env)
        assert "ready" in self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return json.loads(line)

    def _ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def start(self, args: list[str], log: Path) -> int:
        return self._ask({"argv": args, "log": str(log)})["pid"]

    def wait(self, pid: int) -> int:
        return self._ask({"wait": pid})["status"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture
def zygote_proc(python, subprocess_env):
    z = Zygote(python, subprocess_env)
    yield z
    z.close()


def steps_printed(log: Path) -> list[int]:
    """The step counts the run printed so far (the child may not have opened its log yet)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return [int(m.group(1)) for m in PROGRESS.finditer(text)]


def wait_until(condition, what: str, pid: int) -> None:
    deadline = time.time() + TIMEOUT
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return  # the run ended on its own: the caller sees its status
        time.sleep(0.002)


def temporary_files(out: Path) -> set:
    found = set()
    for p in out.rglob("*.tmp"):
        try:
            found.add((p, p.stat().st_mtime_ns))
        except FileNotFoundError:  # renamed into place while we looked
            pass
    return found


def writing_now(out: Path, leftovers: set) -> bool:
    """A temporary file newer than those earlier kills left: a save is being written."""
    return bool(temporary_files(out) - leftovers)


def check_consistent(out: Path) -> int:
    """Everything a kill left behind loads: the state (its step returned) and the export where complete."""
    if not (out / "state.pt").exists():
        return 0
    state = load_state(out / "state.pt")  # a ValueError here is an unreadable state: the test fails
    assert [h["step"] for h in state["history"]] == list(range(1, state["step"] + 1))
    export = out / "autoencoder"
    if (export / "config.json").exists() and (export / "model.safetensors").exists():
        load_model(export, "riae")
    return state["step"]


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path, zygote_proc, capsys):
    rng = random.Random(int(os.environ.get("RIID_FAULT_SEED", "0")))
    reference, out = tmp_path / "reference", tmp_path / "killed"
    started = time.time()
    pid = zygote_proc.start(argv(reference), tmp_path / "reference.log")
    assert zygote_proc.wait(pid) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    reference_s, started = time.time() - started, time.time()

    kills = during_save = reads = 0
    lost = []
    saved = 0
    for round_ in range(KILLS + 1):
        log = tmp_path / f"run{round_}.log"
        pid = zygote_proc.start(argv(out) + (["--resume"] if (out / "state.pt").exists() else []), log)
        start_step = saved
        if round_ == KILLS:  # the last run is left to finish; meanwhile a second run into its folder is refused
            wait_until(lambda: max(steps_printed(log), default=-1) > start_step, "the first step", pid)
            assert cli.main(argv(out) + ["--resume"]) == 2
            assert f"another training run (pid {pid}) is writing to {out}" in capsys.readouterr().err
            assert zygote_proc.wait(pid) == 0, log.read_text()[-3000:]
            break
        leftovers = temporary_files(out)
        if round_ % 3 == 1:  # at the moment a save is being written
            wait_until(lambda: writing_now(out, leftovers), "a save", pid)
        else:  # at a random moment a few steps on, reading state.pt meanwhile as another process might
            target = min(start_step + rng.randint(1, 2 * SAVE_EVERY), STEPS - 1)
            while max(steps_printed(log), default=-1) < target:
                wait_until(lambda: True, "", pid)
                check_consistent(out)
                reads += 1
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.05))
        os.kill(pid, signal.SIGKILL)
        status = zygote_proc.wait(pid)
        assert status == -signal.SIGKILL, f"the run ended on its own ({status}); raise STEPS: {log.read_text()[-2000:]}"
        kills += 1
        during_save += writing_now(out, leftovers)
        assert (out / LOCK).read_text().strip() == str(pid)  # a stale lock, which the next run takes over
        new_saved = check_consistent(out)
        reached = max(steps_printed(log), default=start_step)
        assert new_saved >= saved and reached - new_saved <= SAVE_EVERY, (reached, new_saved)
        lost.append(reached - new_saved)
        saved = new_saved

    a, b = load_state(reference / "state.pt"), load_state(out / "state.pt")
    assert a["step"] == b["step"] == STEPS
    assert a["history"] == b["history"]
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    wa, wb = (load_file(str(d / "autoencoder" / "model.safetensors")) for d in (reference, out))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    with capsys.disabled():
        print(f"\n{kills} kills ({during_save} during a save), {reads} reads of state.pt during runs, steps lost per "
              f"kill {lost} (save interval {SAVE_EVERY}), final weights bitwise equal to the uninterrupted run's; "
              f"{reference_s:.0f} s for the uninterrupted run, {time.time() - started:.0f} s for the killed ones")


if __name__ == "__main__":
    zygote()
