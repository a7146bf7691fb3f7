"""The run's Lightning logger(s) as the lab's CLI sees them: which write into the run folder, which are refused, how
they are named, and the ``config.yaml`` that pins the run folder whatever the logger.

TensorBoard and CSV write into the run folder (``checkpoints/<name>/version_<n>``); MLflow and W&B log to their own
store (an MLflow tracking URI; W&B's ``save_dir``), with the run named ``<name>/version_<n>``. The lab's files
(``config.yaml``, ``checkpoints/``, ``metrics.jsonl``, run records) are in the run folder whatever the logger, so
resume, ``tapa-lab eval`` and the grid runner never read a logger's own files. MLflow and W&B are optional
(``pip install 'tapa-lab[loggers]'``); nothing here imports them unless such a logger is configured.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

from tapa_lab.errors import ConfigError

LOGGER_PACKAGES = {"MLFlowLogger": "mlflow", "WandbLogger": "wandb", "CometLogger": "comet_ml",
                   "NeptuneLogger": "neptune"}


def names_its_run(config: Namespace) -> bool:
    """Whether the config pins its run folder (``run_dir``, or a TensorBoard/CSV logger's ``version``)."""
    return config.get("run_dir") is not None or any(
        logger.init_args.get("version") is not None for logger in folder_loggers(logger_configs(config)))


def logger_configs(config: Namespace) -> list[Namespace]:
    """The ``trainer.logger`` entries of a parsed config (``class_path``/``init_args`` namespaces; none for false).

    Raises:
        ConfigError: naming ``trainer.logger`` when it is ``true`` (Lightning would pick a folder of its own), or when
            a logger's package is not installed (``pip install 'tapa-lab[loggers]'``).
    """
    logger = config.trainer.get("logger")
    if logger is True:
        raise ConfigError("trainer.logger = true is not allowed: name a logger class (the default is "
                          "lightning.pytorch.loggers.TensorBoardLogger; CSVLogger, MLFlowLogger, WandbLogger work "
                          "too), or false for none.")
    loggers = [] if logger in (None, False) else logger if isinstance(logger, list) else [logger]
    for entry in loggers:
        package = LOGGER_PACKAGES.get(logger_class(entry).__name__)
        if package is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(f"trainer.logger = {entry.class_path} needs the {package} package, which is not "
                              "installed: pip install 'tapa-lab[loggers]', or use the default TensorBoardLogger.")
        if issubclass(logger_class(entry), MLFlowLogger):
            check_mlflow_store(entry.init_args)
    return loggers


def folder_loggers(loggers: list[Namespace]) -> list[Namespace]:
    """The entries that write into a folder of their own (TensorBoard, CSV): the CLI points them at the run folder."""
    return [logger for logger in loggers if issubclass(logger_class(logger), (TensorBoardLogger, CSVLogger))]


def check_mlflow_store(args: Namespace) -> None:
    """Refuse an MLflow file store (``file:./mlruns``, the default) that the installed MLflow would refuse itself.

    Raises:
        ConfigError: naming ``trainer.logger.init_args.tracking_uri``, with the two ways out.
    """
    uri = args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or f"file:{args.get('save_dir')}"
    if "://" in uri and not uri.startswith("file:"):
        return
    switches = importlib.import_module("mlflow.environment_variables")  # only MLflow users get here
    if hasattr(switches, "MLFLOW_ALLOW_FILE_STORE") and not switches.MLFLOW_ALLOW_FILE_STORE.get():
        raise ConfigError(f"trainer.logger.init_args.tracking_uri = {uri!r} is a file store, which this MLflow "
                          "refuses: use a local database (e.g. sqlite:///mlflow.db), or set "
                          "MLFLOW_ALLOW_FILE_STORE=true.")


def logger_class(logger: Namespace) -> type:
    """The class a ``class_path``/``init_args`` logger entry names."""
    module, _, name = str(logger.class_path).rpartition(".")
    return getattr(importlib.import_module(module), name)


def name_external_run(logger: Namespace, run_dir: Path) -> None:
    """Name an MLflow or W&B run after the run folder (``<name>/version_<n>``) unless the config names it."""
    names: dict[type, str] = {MLFlowLogger: "run_name", WandbLogger: "name"}
    key = names.get(logger_class(logger))
    if key is not None and logger.init_args.get(key) is None:
        logger.init_args[key] = f"{run_dir.parent.name}/{run_dir.name}"


def reads_back_as_text(value: object) -> bool:
    """Whether a string written unquoted into a YAML config is read back as the same string.

    jsonargparse reads ``13139e899592`` (a hexadecimal cell id) as the float ``inf`` and ``2024`` as an int, and then
    refuses them where a string is expected, so a saved config holding such a logger name could not be passed back.
    """
    if not isinstance(value, str):
        return value is None
    try:
        float(value)
        return False
    except ValueError:
        return isinstance(yaml.safe_load(value), str)


class RunConfigSaver(SaveConfigCallback):
    """Saves ``config.yaml`` into the run folder (``run_dir``) whatever the logger; Lightning's saves to ``log_dir``.

    The run is pinned by ``run_dir`` alone: a TensorBoard/CSV logger's ``version`` is left out of the file, so removing
    ``run_dir`` from a saved config starts a new run.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        run_dir = self.config.get("run_dir")
        if self.already_saved or run_dir is None:
            return
        if trainer.is_global_zero:
            config = self.config.clone()
            for logger in folder_loggers(logger_configs(config)):
                logger.init_args.version = None
                if not reads_back_as_text(logger.init_args.get("name")):
                    logger.init_args.name = None  # run_dir pins the folder; removing it starts <PE class>/version_n
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            self.parser.save(config, str(Path(run_dir) / self.config_filename), skip_none=False, overwrite=True,
                             multifile=self.multifile)
        self.already_saved = True
