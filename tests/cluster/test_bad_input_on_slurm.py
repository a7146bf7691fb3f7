"""Settings the real scheduler refuses are one line naming the field, before anything is submitted or written: a
partition the cluster lacks, and a time limit over the partition's MaxTime (which SLURM's default
``EnforcePartLimits=NO`` would accept and leave pending forever)."""

from __future__ import annotations

import subprocess

import pytest
from slurm_cases import NOPE, lab, write_grid

from tapa_lab.ablation.scheduler import partitions


def queued_jobs() -> str:
    return subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True, timeout=30,
                          check=True).stdout


@pytest.mark.parametrize("flags,message", [
    (("--slurm.partition", "nope"), "--slurm.partition = 'nope': not a partition of this cluster; one of: "),
    (("--slurm.time", "{over}"), "--slurm.time = {over}: partition '{default}' allows at most {limit} minutes"),
])
def test_a_partition_or_time_limit_the_scheduler_refuses_is_one_line_and_nothing_is_submitted(flags, message,
                                                                                                tmp_path):
    (default,) = [p for p in partitions() if p.default]
    assert default.max_minutes is not None, "the test needs a partition with a MaxTime"
    fill = {"over": str(int(default.max_minutes) + 1), "default": default.name, "limit": f"{default.max_minutes:g}"}
    grid = write_grid(tmp_path / "grid.yaml", "bad", {"nope": NOPE}, 6)
    before = queued_jobs()
    done = lab("ablation", "run", "--grid", str(grid), "--out_dir", str(tmp_path / "out"), "--executor", "slurm",
               "--wait", "false", *(flag.format(**fill) for flag in flags))
    assert done.returncode == 2
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("tapa-lab: error:")]
    assert message.format(**fill) in line
    assert not (tmp_path / "out").exists() and queued_jobs() == before  # nothing written, nothing submitted
