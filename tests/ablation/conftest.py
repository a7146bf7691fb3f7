"""Fixtures of the ablation tests: grid files written from dicts (the grids themselves are in ``grid_cases``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture
def write_grid(tmp_path):
    """``write_grid(dict) -> Path`` of a grid YAML in a temporary folder."""

    def write(grid: dict, name: str = "grid.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(grid, sort_keys=False))
        return path

    return write
