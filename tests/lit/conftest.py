"""Helpers for end-to-end tests that run the ``tapa-lab`` LightningCLI in-process on the committed fixture."""

from __future__ import annotations

import pytest
from fixture_run import FIXTURE_RUN
from fixture_run import scalars as read_scalars


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run from an empty folder (checkpoints/ and data/ land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def scalars():
    """``scalars(run_dir, tag) -> {step: value}`` read from a run's TensorBoard events."""
    return read_scalars


@pytest.fixture
def fixture_run() -> list[str]:
    """CLI arguments for a seconds-long run of a tiny decoder on the committed fixture corpus."""
    return list(FIXTURE_RUN)
