"""Fault injection: ``kill -9`` of a training run at a random moment loses nothing (resume is bit-exact), and a run
stopped by SIGTERM says so in its exit status."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tapa_lab.cli import run_lightning

HERE = Path(__file__).parent
MAX_STEPS = 12


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == MAX_STEPS
    return checkpoint["state_dict"]


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_resume_last_equals_the_uninterrupted_run(in_tmp, fixture_run, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # slow_steps.SlowSteps, named in the killed run's config
    common = [*fixture_run, "--trainer.max_steps", str(MAX_STEPS), "--model.posenc", "tapa_lab.posenc.TAPA",
              "--model.posenc.backend", "torch", "--model.posenc.learnable_alpha", "true"]
    run_lightning(["fit", *common, "--trainer.logger.init_args.name", "full"])

    delay = random.Random().uniform(0.0, 0.8)
    code = "import sys; from tapa_lab.cli import run_lightning; run_lightning(sys.argv[1:])"
    command = [sys.executable, "-c", code, "fit", *common, "--trainer.logger.init_args.name", "killed",
               "--interval_checkpoint.every_n_train_steps", "1",
               "--trainer.callbacks+=slow_steps.SlowSteps", "--trainer.callbacks.seconds", "0.1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    log = open(in_tmp / "killed.log", "wb")  # noqa: SIM115 - closed below, after the kill
    process = subprocess.Popen(command, cwd=in_tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    run = in_tmp / "checkpoints" / "killed" / "version_0"
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.ckpt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    log.close()
    output = (in_tmp / "killed.log").read_text(errors="replace")[-2000:]
    killed_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert 1 <= killed_at < MAX_STEPS, (killed_at, delay, output)

    run_lightning(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last"])
    full, resumed = final_weights(in_tmp / "checkpoints" / "full" / "version_0"), final_weights(run)
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), (name, killed_at, delay)


@pytest.mark.slow
def test_sigterm_mid_run_exits_143_so_that_no_caller_takes_the_run_for_finished(in_tmp, fixture_run, monkeypatch):
    """Lightning answers SIGTERM by stopping at the next step with exit status 0; ``tapa-lab fit`` turns it into
    128 + 15 with a message (a grid runner records the cell failed and a rerun resumes it, instead of evaluating a
    half-trained model as finished)."""
    monkeypatch.syspath_prepend(str(HERE))
    command = [sys.executable, "-m", "tapa_lab", "fit", *fixture_run, "--trainer.max_steps", "10000",
               "--trainer.logger.init_args.name", "stopped", "--interval_checkpoint.every_n_train_steps", "1",
               "--trainer.callbacks+=slow_steps.SlowSteps", "--trainer.callbacks.seconds", "0.05"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, cwd=in_tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = in_tmp / "checkpoints" / "stopped" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr.decode(errors="replace")[-2000:]
    assert b"stopped by SIGTERM" in stderr and b"--ckpt_path last" in stderr
    assert 1 <= torch.load(last, weights_only=False)["global_step"] < 10000
