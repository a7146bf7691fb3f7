"""The lab's LightningCLI: Lightning's subcommands (fit, validate, test, predict) with the lab's defaults.

    tapa-lab fit --config experiments/smoke.yaml
    tapa-lab fit --config checkpoints/<name>/version_<n>/config.yaml --ckpt_path last     # resume exactly
    tapa-lab test --config checkpoints/<name>/version_<n>/config.yaml --ckpt_path best

The ``tapa-lab`` entry point itself (Lightning's subcommands plus the lab's) is :mod:`tapa_lab.__main__`.

Every run lives in ``checkpoints/<name>/version_<n>/`` (TensorBoard events, ``config.yaml``, ``checkpoints/``, the
reproducibility record). The saved config pins its version, so passing it back resumes or evaluates that same run.
"""

from __future__ import annotations

import os
from pathlib import Path

from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    RichModelSummary,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from tapa_lab.errors import ConfigError
from tapa_lab.lit.callbacks import RunRecord, StepProgressBar, TokenThroughputMonitor
from tapa_lab.lit.checkpoint_io import load_checkpoint
from tapa_lab.lit.datamodule import TextDataModule
from tapa_lab.lit.module import LanguageModel

set_parsing_settings(docstring_parse_attribute_docstrings=True)  # dataclass field docstrings become --help text

PINNED_VERSION_ENV = "TAPA_LAB_RUN_VERSION"
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "checkpoints", "name": "auto"},
}


class LabCLI(LightningCLI):
    """LightningCLI with the lab's defaults: TensorBoard under checkpoints/, always-on callbacks, pinned run folders."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/loss",
            "checkpoint.mode": "min",
            "checkpoint.save_last": True,
            "checkpoint.save_top_k": 1,
            "checkpoint.filename": "best-{step}",
            "checkpoint.auto_insert_metric_name": False,
        })

    def _parse_ckpt_path(self) -> None:
        """Check an explicit checkpoint file before Lightning reads it, so a bad one is a clear error."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path is not None and ckpt_path not in ("last", "best"):
            load_checkpoint(Path(ckpt_path), field="ckpt_path")
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand is not None else self.config
        if config.trainer.get("enable_progress_bar") is False:
            self.trainer_defaults["callbacks"] = [c for c in self.trainer_defaults["callbacks"]
                                                  if not isinstance(c, RichProgressBar)]
        if self.subcommand is None:  # run=False: parse and instantiate only
            pin_run_folder(config)
            return
        run_dir = pin_run_folder(config)
        config.ckpt_path = resolve_ckpt_path(config.get("ckpt_path"), run_dir, self.subcommand)


def pin_run_folder(config: Namespace) -> Path | None:
    """Give the TensorBoard logger an explicit version so the saved config points back at this run folder.

    The logger name ``auto`` (the default) becomes the PE's class name, e.g. ``checkpoints/TAPA/version_0``.
    A config that already names a version (a saved ``config.yaml``) resumes or evaluates that run; a fresh config
    gets the next free ``version_<n>``. Starting ``fit`` from scratch in a folder that holds checkpoints is refused,
    so nothing already trained is overwritten.

    Returns:
        The run folder, or ``None`` when there is no TensorBoard logger.
    """
    logger = config.trainer.get("logger")
    if not isinstance(logger, Namespace) or "TensorBoardLogger" not in str(logger.get("class_path", "")):
        return None
    args = logger.init_args
    if args.get("name") in (None, "auto"):
        args.name = str(config.model.posenc.class_path).rsplit(".", 1)[-1]
    base = Path(args.save_dir) / args.name
    if args.get("version") is None:
        if os.environ.get("LOCAL_RANK", "0") != "0" and PINNED_VERSION_ENV in os.environ:
            args.version = int(os.environ[PINNED_VERSION_ENV])  # a DDP worker: use the folder rank 0 chose
        else:
            taken = [int(p.name.split("_", 1)[1]) for p in base.glob("version_*")
                     if p.name.split("_", 1)[1].isdigit()]
            args.version = max(taken, default=-1) + 1
            os.environ[PINNED_VERSION_ENV] = str(args.version)  # inherited by the workers DDP launches
    version = args.version
    return base / (version if isinstance(version, str) else f"version_{version}")


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path | None, subcommand: str) -> str | None:
    """Turn ``last``/``best`` into files of this run folder and check that they load.

    Raises:
        ConfigError: naming ``ckpt_path`` when the checkpoint is missing or unreadable, or when ``fit`` would
            start from scratch over a run folder that already has checkpoints.
    """
    checkpoint_dir = run_dir / "checkpoints" if run_dir is not None else None
    if ckpt_path is None:
        if subcommand == "fit" and checkpoint_dir is not None and any(checkpoint_dir.glob("*.ckpt")):
            raise ConfigError(
                f"the run folder {run_dir} already holds checkpoints: pass --ckpt_path last to resume it, or start a "
                "new run (drop trainer.logger.init_args.version from the config, or change trainer.logger.init_args."
                "name).")
        return None
    if ckpt_path in ("last", "best"):
        if checkpoint_dir is None:
            raise ConfigError(f"ckpt_path = {ckpt_path!r} needs a TensorBoard logger run folder; pass a file path.")
        last = checkpoint_dir / "last.ckpt"
        state = load_checkpoint(last, field="ckpt_path")
        if ckpt_path == "last":
            return str(last)
        best = next((s.get("best_model_path") for k, s in state.get("callbacks", {}).items()
                     if k.startswith("ModelCheckpoint") and s.get("best_model_path")), None)
        if best is None:
            raise ConfigError(f"ckpt_path = 'best': {last} records no best checkpoint (was validation ever run?). "
                              "Use --ckpt_path last or a file path.")
        load_checkpoint(Path(best), field="ckpt_path (best)")
        return best
    return ckpt_path


def always_on_callbacks() -> list:
    """Callbacks every run gets in addition to ``trainer.callbacks`` (LightningCLI appends trainer_defaults')."""
    return [StepProgressBar(), RichModelSummary(max_depth=2), LearningRateMonitor("step"), TokenThroughputMonitor(),
            RunRecord()]


def run_lightning(args: list[str] | None = None, run: bool = True, epilog: str | None = None) -> LabCLI:
    """Build the LightningCLI (``run=False`` parses and instantiates only, as the config tests do).

    Args:
        args: the command line after ``tapa-lab`` (default ``sys.argv[1:]``).
        run: run the subcommand; false parses and instantiates only.
        epilog: text at the end of ``--help`` (the entry point lists the lab's own commands there).
    """
    return LabCLI(
        LanguageModel,
        TextDataModule,
        trainer_defaults={"logger": DEFAULT_LOGGER, "default_root_dir": "checkpoints",
                          "callbacks": always_on_callbacks()},
        seed_everything_default=1234,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # LanguageModel configures AdamW + warm-up/cosine from model.optim
        parser_kwargs={"epilog": epilog},
        args=args,
        run=run,
    )
