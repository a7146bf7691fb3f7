"""A run's saved config.yaml can always be passed back, whatever its folder is called."""

from __future__ import annotations

import pytest

from tapa_lab.cli import run_lightning
from tapa_lab.lit.loggers import reads_back_as_text


@pytest.mark.parametrize(("value", "expected"), [
    ("TAPA", True), ("extension-rope-yarn-4x", True), (None, True),
    ("13139e899592", False), ("2024", False), ("nan", False), ("true", False), ("null", False),
])
def test_names_that_yaml_would_read_back_as_numbers_are_detected(value, expected):
    assert reads_back_as_text(value) is expected


@pytest.mark.slow
def test_a_run_folder_named_like_a_number_resumes_from_its_saved_config(in_tmp, fixture_run):
    run = in_tmp / "cells" / "13139e899592" / "run"  # a grid cell id jsonargparse would read as the float inf
    run_lightning(["fit", *fixture_run, "--trainer.max_steps", "10", "--run_dir", str(run)])
    run_lightning(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last", "--trainer.max_steps", "12"])
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))[-1] == "last.ckpt"
    assert (run / "config.resume-1.yaml").is_file()
