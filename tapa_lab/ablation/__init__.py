"""Ablation grids: expansion and validation (grid), the runner, statistics over seeds, the report and its plots."""
