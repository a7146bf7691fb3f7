"""The ``tapa-lab`` command: Lightning's subcommands (fit, validate, test, predict) plus the lab's own.

    tapa-lab fit --config experiments/smoke.yaml
    tapa-lab fit --config checkpoints/<name>/version_<n>/config.yaml --ckpt_path last     # resume exactly
    tapa-lab <lab command> --help                                                         # see lab_commands()

This module is the top of the import graph: it may import every package of the lab, and nothing imports it.
``python -m tapa_lab`` runs the same command.
"""

from __future__ import annotations

import signal
import sys
import warnings
from collections.abc import Callable

import torch
from jsonargparse import CLI

from tapa_lab.ablation.command import report_grid, run_grid, status_grid
from tapa_lab.bench.attention import bench_attention
from tapa_lab.bench.compile import bench_compile
from tapa_lab.bench.decode import bench_decode
from tapa_lab.bench.training import bench_training
from tapa_lab.cli import run_lightning
from tapa_lab.data.prepare import prepare_corpus
from tapa_lab.errors import ConfigError
from tapa_lab.eval.bias_theory import bias_theory
from tapa_lab.eval.command import evaluate
from tapa_lab.hf.command import export, generate
from tapa_lab.hf.lm_eval_command import lm_eval_command


def lab_commands() -> dict[str, Callable | dict[str, Callable]]:
    """The lab's own subcommands, each a typed function whose docstring is its ``--help``."""
    return {
        "data": {"prepare": prepare_corpus},
        "bench": {"attention": bench_attention, "training": bench_training, "decode": bench_decode,
                  "compile": bench_compile},
        "ablation": {"run": run_grid, "status": status_grid, "report": report_grid},
        "eval": evaluate,
        "lm-eval": lm_eval_command,
        "bias-theory": bias_theory,
        "export": export,
        "generate": generate,
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tapa-lab`` console script."""
    # Imported here, after the lab's modules: importing lightning.pytorch before rich changes how jsonargparse reads
    # an `int | float` value (`trainer.limit_val_batches: 8` resolves to 8 instead of 8.0). Cell ids no longer depend
    # on it (ablation.spec.cell_digest), but the configs a grid writes keep the values every earlier grid wrote.
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    args = sys.argv[1:] if argv is None else argv
    torch.set_float32_matmul_precision("high")
    # Lightning 2.6 calls a pytree API that torch >= 2.10 deprecates: noise on every run, nothing for users to do.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    commands = lab_commands()
    try:
        if args and args[0] in commands:
            CLI(commands, args=args, as_positional=False)
        else:
            epilog = f"Lab commands: {', '.join(commands)} (tapa-lab <command> --help)."
            run_lightning(argv, epilog=epilog)
    except ConfigError as error:
        print(f"tapa-lab: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except SIGTERMException:
        # Lightning stops at the next step on SIGTERM and raises a SystemExit without a code, i.e. exit status 0: a
        # run stopped half-way would read as finished to whatever started it (a grid runner, a job script).
        print("tapa-lab: stopped by SIGTERM before the end of the run; its last checkpoint is kept: rerun with "
              "--ckpt_path last to resume it", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None


if __name__ == "__main__":
    main()
