"""A two-task DDP cell on a real scheduler: ``trainer.devices: 2`` (CPU, gloo) is one job of two tasks
(``--ntasks-per-node=2``) started by srun, whose ``fit`` processes join one process group through Lightning's
``SLURMEnvironment`` and train the cell to its end."""

from __future__ import annotations

from slurm_cases import NOPE, cells, fits, status_rows, submit, wait_for, write_grid

from tapa_lab.ablation.layout import cell_dir
from tapa_lab.ablation.results import read_result

STEPS = 6


def test_a_two_task_ddp_cell_rendezvous_through_slurm_and_trains(tmp_path, partition):
    grid = write_grid(tmp_path / "ddp.yaml", "ddp", {"nope": NOPE}, STEPS,
                      **{"trainer.devices": 2, "trainer.strategy": "ddp", "trainer.val_check_interval": 3})
    out = tmp_path / "out"
    submit(grid, out, "--slurm.partition", partition, "--slurm.time", "10", "--slurm.cpus_per_task", "1")
    cell = cells(out)["nope"]
    result = wait_for(lambda: read_result(out, cell), "the DDP cell to end", timeout=400)
    log = (cell_dir(out, cell) / "log.txt").read_text()
    assert result.status == "finished", result.error
    assert result.metrics["steps"] == STEPS and len(fits(out, cell)) == 1
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log  # task 0 of a world of two
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (cell_dir(out, cell) / "log.rank1.txt").read_text()  # task 1 joined it
    assert " done " in status_rows(out)["nope"]
