"""Fault injection: ``kill -9`` of a training run at a random moment loses nothing (resume is bit-exact)."""

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
