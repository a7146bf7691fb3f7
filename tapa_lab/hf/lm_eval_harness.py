"""lm-evaluation-harness 0.4 on an in-memory Hugging Face wrapper: task lookup, offline mode, one evaluation.

Imported only by ``tapa-lab lm-eval`` (inside the command), never by the core: it imports ``lm_eval``.

The lab's tasks (``tapa_rolling``, ``tapa_niah_single_1``, ``tapa_passkey``) are YAML files the command writes per
evaluated length; they are indexed from that folder alone (``include_path``, no default index). Any other name is
looked up in lm-eval's own index (about 10 s to build) and its dataset is loaded once before any work, so a task that
needs the network fails at once, offline, with one line naming the tasks that run offline.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import datasets.config
import huggingface_hub.constants
import lm_eval
import numpy as np
import torch
from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED
from lm_eval.evaluator import evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from lm_eval.utils import handle_non_serializable
from torch import nn

from tapa_lab.errors import ConfigError
from tapa_lab.hf.lm_eval_niah import NIAH_TASK, PASSKEY_TASK
from tapa_lab.hf.lm_eval_rolling import ROLLING_TASK

LAB_TASKS = (ROLLING_TASK, NIAH_TASK, PASSKEY_TASK)
OFFLINE_TASKS = (f"the lab's tasks run offline: {ROLLING_TASK} (rolling log-likelihood of a split), {NIAH_TASK} "
                 f"(RULER's needle in a repeated haystack) and {PASSKEY_TASK} (the lab's passkey)")
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@contextmanager
def hub_offline(enabled: bool) -> Iterator[None]:
    """Switch the Hugging Face hub and ``datasets`` offline (environment and the flags they read at import)."""
    if not enabled:
        yield
        return
    saved_env = {name: os.environ.get(name) for name in _OFFLINE_ENV}
    saved = (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    os.environ.update({name: "1" for name in _OFFLINE_ENV})
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@cache
def lm_eval_index() -> TaskManager:
    """lm-eval's index of its own tasks, built once per process (it parses every task YAML it ships)."""
    return TaskManager()


def external_tasks(names: list[str]) -> TaskManager | None:
    """lm-eval's own index when ``names`` holds tasks other than the lab's, after checking each exists and loads.

    Raises:
        ConfigError: naming ``tasks`` for a name lm-eval does not know, or whose dataset cannot be loaded (offline:
            the task needs the network), with the tasks that run offline.
    """
    others = [name for name in names if name not in LAB_TASKS]
    if not others:
        return None
    manager = lm_eval_index()
    unknown = [name for name in others if name not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"tasks: {unknown} are not lm-eval {lm_eval.__version__} tasks (list them with "
                          f"`lm_eval ls tasks`); {OFFLINE_TASKS}.")
    for name in others:
        try:
            manager.load([name])
        except (ConnectionError, OSError) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigError(f"tasks: {name!r} needs data that is not on this machine ({first_line}); "
                              f"{OFFLINE_TASKS}.") from None
    return manager


def run_tasks(model: nn.Module, tokenizer: object, max_length: int, task_dir: Path, names: list[str],
              external: TaskManager | None, batch_size: int) -> dict:
    """Evaluate ``names`` at one length with lm-eval's HFLM around the in-memory wrapper (``simple_evaluate``'s
    steps: fixed seeds, zero-shot; no bootstrap standard errors).

    Args:
        model: the Hugging Face wrapper (a ``transformers.PreTrainedModel``), in eval mode.
        tokenizer: its Hugging Face tokenizer.
        max_length: lm-eval's ``max_length`` (the evaluated length, in tokens).
        task_dir: folder of the lab's task YAMLs for this length.
        names: the tasks, lab and lm-eval ones.
        external: lm-eval's own index (from :func:`external_tasks`), ``None`` when only lab tasks are asked.
        batch_size: HFLM's batch size.

    Returns:
        lm-eval's results dict, made JSON-safe (non-serialisable values as strings).
    """
    lm = HFLM(pretrained=model, tokenizer=tokenizer, max_length=max_length, batch_size=batch_size)
    specs: list = [name for name in names if name in LAB_TASKS]
    if external is not None:
        specs += list(external.load([name for name in names if name not in LAB_TASKS])["tasks"].values())
    task_dict = TaskManager(include_path=str(task_dir), include_defaults=False).load(specs)
    random.seed(DEFAULT_RANDOM_SEED)  # simple_evaluate's seeds and zero-shot default, without its environment
    np.random.seed(DEFAULT_OTHER_SEED)  # report (a `pip list` per call, seconds each)
    torch.manual_seed(DEFAULT_OTHER_SEED)
    for task in task_dict["tasks"].values():
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
    results = evaluate(lm=lm, task_dict=task_dict, bootstrap_iters=0, log_samples=False)
    results["config"] = {"model": type(model).__name__, "max_length": max_length, "batch_size": batch_size,
                         "lm_eval_version": lm_eval.__version__, "bootstrap_iters": 0}
    return json.loads(json.dumps(results, default=handle_non_serializable))


def headline_metrics(results: dict) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}``: the numeric metrics of lm-eval's results (filters dropped; no stderr, no sample
    count)."""
    metrics: dict[str, dict[str, float]] = {}
    for task, values in results["results"].items():
        for key, value in values.items():
            name = key.split(",")[0]
            if isinstance(value, int | float) and not isinstance(value, bool) and not name.endswith("_stderr") \
                    and name != "sample_len":
                metrics.setdefault(task, {})[name] = float(value)
    return metrics
