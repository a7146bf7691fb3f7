"""The lab's LightningCLI: Lightning's subcommands (fit, validate, test, predict) with the lab's defaults.

    tapa-lab fit --config experiments/smoke.yaml
    tapa-lab fit --config checkpoints/<name>/version_<n>/config.yaml --ckpt_path last     # resume exactly
    tapa-lab test --config checkpoints/<name>/version_<n>/config.yaml --ckpt_path best

The ``tapa-lab`` entry point itself (Lightning's subcommands plus the lab's) is :mod:`tapa_lab.__main__`.

Every run lives in ``checkpoints/<name>/version_<n>/`` (``config.yaml``, ``checkpoints/``, ``metrics.jsonl``, the
reproducibility record, and the TensorBoard or CSV logger's files) whatever Lightning logger it uses
(:mod:`tapa_lab.lit.run_folder`, :mod:`tapa_lab.lit.loggers`). The saved config pins it (``run_dir``), so passing it
back resumes or evaluates that same run; a resume is checked before anything is written (:mod:`tapa_lab.lit.resume`)
and never rewrites the run's ``config.yaml`` (it writes ``config.resume-<n>.yaml``). ``--optimizer`` /
``--lr_scheduler`` take any torch optimizer and step-based scheduler by class path (e.g. experiments/optim/); without
them the model trains with AdamW + warm-up + cosine (``model.optim``). The learning rate is ``model.optim.lr`` whatever
the optimizer (linked into ``optimizer.init_args.lr``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import set_parsing_settings
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    RichModelSummary,
    RichProgressBar,
)
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple
from torch.optim import Optimizer

from tapa_lab.cli_parser import LabArgumentParser, check_config_files, config_files
from tapa_lab.errors import ConfigError, require
from tapa_lab.lit.callbacks import RunRecord, StepProgressBar, TokenThroughputMonitor
from tapa_lab.lit.checkpoint_callbacks import IntervalCheckpoint, RunIdentity
from tapa_lab.lit.checkpoint_io import AtomicCheckpointIO, best_model_path, load_checkpoint
from tapa_lab.lit.datamodule import TextDataModule
from tapa_lab.lit.loggers import RunConfigSaver, names_its_run
from tapa_lab.lit.metrics_file import MetricsFile
from tapa_lab.lit.module import LanguageModel
from tapa_lab.lit.resume import check_resume, later_config_name, run_identity
from tapa_lab.lit.run_folder import pin_run_folder

set_parsing_settings(docstring_parse_attribute_docstrings=True)  # dataclass field docstrings become --help text

ATOMIC_CHECKPOINT_IO = {"class_path": f"{AtomicCheckpointIO.__module__}.{AtomicCheckpointIO.__qualname__}"}
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "checkpoints", "name": "auto"},
}


class LabCLI(LightningCLI):
    """LightningCLI with the lab's defaults: TensorBoard under checkpoints/, always-on callbacks, pinned run folders."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="The run folder (config.yaml, checkpoints/, metrics.jsonl, run records). null: "
                                 "<root>/<name>/version_<n>, the next free n (see "
                                 "tapa_lab.lit.run_folder.pin_run_folder); a saved config.yaml names its own, so "
                                 "passing it back resumes or evaluates that run.")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/loss",
            "checkpoint.mode": "min",
            "checkpoint.save_last": True,
            "checkpoint.save_top_k": 1,
            "checkpoint.filename": "best-{step}",
            "checkpoint.auto_insert_metric_name": False,
            "checkpoint.enable_version_counter": False,  # IntervalCheckpoint writes the same last.ckpt
        })
        parser.add_lightning_class_args(IntervalCheckpoint, "interval_checkpoint")
        parser.link_arguments("checkpoint.dirpath", "interval_checkpoint.dirpath")
        parser.add_optimizer_args((Optimizer,))
        parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        parser.link_arguments("model.optim.lr", "optimizer.init_args.lr")  # one learning-rate key for every optimizer

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        if args is None or isinstance(args, list):
            check_config_files(sys.argv[1:] if args is None else args)
            check_optimizer_lr_not_given(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """Hand ``--optimizer`` / ``--lr_scheduler`` to the model (:meth:`LanguageModel.use_optimizer`), which keeps its
        weight-decay groups and steps the schedule every optimizer step (LightningCLI's own steps it every epoch)."""
        config = self.config.get(str(subcommand), self.config)
        specs = [config.get(key) for key in ("optimizer", "lr_scheduler")]
        self.model.use_optimizer(*(spec.as_dict() if spec is not None else None for spec in specs))

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
            self.point_callbacks_at(pin_run_folder(config))
            return
        if self.subcommand == "fit":
            max_steps = config.trainer.get("max_steps")
            require(max_steps is None or max_steps == -1 or max_steps > 0, "trainer.max_steps",
                    "> 0, or -1 for no limit", max_steps)
            self.trainer_defaults["callbacks"] = [*self.trainer_defaults["callbacks"],
                                                  RunIdentity(run_identity(config.model))]
        fresh = not names_its_run(config)
        run_dir = pin_run_folder(config, create=True)
        config.run_dir = str(run_dir)
        self.point_callbacks_at(run_dir)
        self.created_run_dir = run_dir if fresh and os.environ.get("LOCAL_RANK", "0") == "0" else None
        with self.discard_empty_run_dir():
            config.ckpt_path = resolve_ckpt_path(config.get("ckpt_path"), run_dir, self.subcommand)
        if run_dir is not None and (run_dir / "config.yaml").is_file() and \
                (self.subcommand != "fit" or config.ckpt_path is not None):  # never rewrite the run's config
            self.save_config_kwargs = {**self.save_config_kwargs,
                                       "config_filename": later_config_name(run_dir, self.subcommand)}

    def before_fit(self) -> None:
        """Check the data and a resumed checkpoint before anything is written to the run folder."""
        if self.datamodule is not None and os.environ.get("LOCAL_RANK", "0") == "0":
            self.datamodule.setup("fit")  # e.g. data.seq_len longer than a split: refused before any write
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path is not None:
            check_resume(ckpt_path, run_identity(self.config[self.subcommand].model), self.model, self.datamodule,
                         self.trainer)

    def point_callbacks_at(self, run_dir: Path) -> None:
        """Tell the always-on callbacks that write into the run folder where it is (``trainer.log_dir`` is the
        logger's folder, which for MLflow or W&B is not the run folder)."""
        for callback in self.trainer_defaults["callbacks"]:
            if isinstance(callback, (RunRecord, MetricsFile)):
                callback.run_dir = run_dir

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer; the lab's checkpoint callbacks write to ``<run dir>/checkpoints`` unless told otherwise."""
        run_dir = self._get(self.config, "run_dir")
        for key in ("checkpoint", "interval_checkpoint"):
            callback = self._get(self.config_init, key)
            if callback is not None and callback.dirpath is None and run_dir is not None:
                callback.dirpath = os.path.realpath(Path(run_dir) / "checkpoints")
        return super().instantiate_trainer(**kwargs)

    def instantiate_classes(self) -> None:
        with self.discard_empty_run_dir():
            super().instantiate_classes()

    def _run_subcommand(self, subcommand: str) -> None:
        with self.discard_empty_run_dir():
            super()._run_subcommand(subcommand)

    @contextmanager
    def discard_empty_run_dir(self) -> Iterator[None]:
        """Remove the run folder this command created if it fails while the folder is still empty."""
        try:
            yield
        except BaseException:
            created = getattr(self, "created_run_dir", None)
            if created is not None and created.is_dir() and not any(created.iterdir()):
                created.rmdir()
            raise


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path, subcommand: str) -> str | None:
    """Turn ``last``/``best`` into files of this run folder (``<run dir>/checkpoints``) and check that they load.

    Raises:
        ConfigError: naming ``ckpt_path`` when the checkpoint is missing or unreadable, or when ``fit`` would
            start from scratch over a run folder that already has checkpoints.
    """
    checkpoint_dir = run_dir / "checkpoints"
    if ckpt_path is None:
        if subcommand == "fit" and any(checkpoint_dir.glob("*.ckpt")):
            raise ConfigError(
                f"the run folder {run_dir} already holds checkpoints: pass --ckpt_path last to resume it, or start a "
                "new run (remove run_dir, and trainer.logger.init_args.version if set, from the config).")
        return None
    if ckpt_path in ("last", "best"):
        last = checkpoint_dir / "last.ckpt"
        state = load_checkpoint(last, field="ckpt_path", mmap=True)
        if ckpt_path == "last":
            return str(last)
        best = best_model_path(state, checkpoint_dir)
        if best is None:
            raise ConfigError(f"ckpt_path = 'best': {last} records no best checkpoint (was validation ever run?). "
                              "Use --ckpt_path last or a file path.")
        load_checkpoint(best, field="ckpt_path (best)", mmap=True)
        return str(best)
    return ckpt_path


def check_optimizer_lr_not_given(args: list[str]) -> None:
    """Refuse ``optimizer.init_args.lr`` on the command line or in a ``--config`` file: the CLI links
    ``model.optim.lr`` into it (so a grid sweeps one key whatever the optimizer), which would overwrite it silently.

    Raises:
        ConfigError: naming ``optimizer.init_args.lr`` and ``model.optim.lr``.
    """
    flags = {arg.split("=", 1)[0] for arg in args}
    in_files = [path for path in config_files(args)
                if "lr" in (((yaml.safe_load(path.read_text()) or {}).get("optimizer") or {}).get("init_args") or {})]
    if flags & {"--optimizer.lr", "--optimizer.init_args.lr"} or in_files:
        where = f" (in {in_files[0]})" if in_files else ""
        raise ConfigError(f"optimizer.init_args.lr is set{where}, but the learning rate of every optimizer is "
                          "model.optim.lr (the CLI links it into the optimizer): set --model.optim.lr instead.")


def always_on_callbacks() -> list:
    """Callbacks every run gets in addition to ``trainer.callbacks`` (LightningCLI appends trainer_defaults')."""
    return [StepProgressBar(), RichModelSummary(max_depth=2), LearningRateMonitor("step"), TokenThroughputMonitor(),
            RunRecord(), MetricsFile()]


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
                          "callbacks": always_on_callbacks(), "plugins": [ATOMIC_CHECKPOINT_IO]},
        seed_everything_default=1234,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # --optimizer/--lr_scheduler are added above and go to LanguageModel
        parser_kwargs={"epilog": epilog},
        parser_class=LabArgumentParser,
        args=args,
        run=run,
    )
