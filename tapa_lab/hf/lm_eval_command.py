"""``tapa-lab lm-eval``: lm-evaluation-harness 0.4 tasks on a finished run, through HFLM and the Hugging Face wrapper.

    tapa-lab lm-eval --run checkpoints/TAPA/version_0 --tasks '[tapa_rolling, tapa_niah_single_1]' \\
        --multiples '[1, 2, 4, 8]'

For each evaluated length (a multiple of the run's training length, or ``--lengths``) lm-eval's ``max_length`` is that
length; the lab writes its own tasks for it (``tapa_rolling``: the split's documents; ``tapa_niah_single_1`` and
``tapa_passkey``: needles sized to fit) under ``<run>/<out_name>/tasks/L<length>/`` and evaluates them, plus any lm-eval
task whose data is on the machine. Results: lm-eval's JSON per length (``<run>/<out_name>/lm_eval_L<length>.json``),
``results.json`` with every headline metric per length (and, for ``tapa_rolling``, the lab's non-overlapping
perplexity on the same documents), and TensorBoard scalars ``<out_name>/<task>/<metric>`` (step = length) in the run
folder. Offline by default: a task that needs the network fails at once naming the tasks that run offline.
lm-eval and transformers are imported inside the command only (the ``hf`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from tapa_lab.devices import resolve_device
from tapa_lab.errors import ConfigError, require
from tapa_lab.eval.command import EvalData, eval_datamodule
from tapa_lab.eval.load import load_run
from tapa_lab.hf.lm_eval_niah import (
    NIAH_DIGITS,
    NIAH_TASK,
    PASSKEY_TASK,
    NeedleConfig,
    max_gen_toks,
    niah_documents,
    passkey_documents,
    write_needle_task,
)
from tapa_lab.hf.lm_eval_rolling import (
    ROLLING_TASK,
    document_texts,
    lab_nonoverlapping,
    rolling_documents,
    write_rolling_task,
)


def _lengths(multiples: list[float], lengths: list[int] | None, train_seq_len: int) -> list[int]:
    if lengths is not None:
        require(len(lengths) > 0 and all(n >= 2 for n in lengths), "lengths",
                "null or a non-empty list of lengths >= 2", lengths)
        return [int(n) for n in lengths]
    require(len(multiples) > 0 and all(m > 0 for m in multiples), "multiples",
            "a non-empty list of positive multiples of the training length", multiples)
    return [max(2, round(m * train_seq_len)) for m in multiples]


def lm_eval_command(run: str, tasks: list[str] | None = None, multiples: list[float] | None = None,
                    lengths: list[int] | None = None, checkpoint: str = "best", data: EvalData = EvalData(),
                    documents: int | None = None, needle: NeedleConfig = NeedleConfig(), batch_size: int = 1,
                    offline: bool = True, out_name: str = "lm_eval", device: str = "auto") -> dict:
    """Run lm-evaluation-harness tasks on a finished run at multiples of its training length.

    Writes ``<run>/<out_name>/results.json``, lm-eval's own results per length and the task files, and logs the
    headline metrics to the run's TensorBoard as ``<out_name>/<task>/<metric>`` (step = length).

    Args:
        run: the run folder, ``checkpoints/<name>/version_<n>``.
        tasks: lm-eval task names; offline: tapa_rolling (rolling log-likelihood of the split's documents: word and
            byte perplexity, bits per byte), tapa_niah_single_1 (RULER's needle in a repeated haystack),
            tapa_passkey (the lab's passkey prompts); any other lm-eval task whose data is on this machine.
            Null: [tapa_rolling].
        multiples: evaluated lengths (lm-eval's max_length) as multiples of the training length; null: [1].
        lengths: absolute evaluated lengths in tokens; when set, replaces multiples.
        checkpoint: ``best``, ``last`` or a .ckpt path.
        data: the split and corpus of tapa_rolling's documents.
        documents: tapa_rolling scores at most this many documents per length (the first of those with at least
            length + 1 tokens, the ones the lab's perplexity uses); null: all.
        needle: examples of tapa_niah_single_1 and tapa_passkey.
        batch_size: lm-eval's batch size (rows are padded to the longest; the wrapper masks the padding).
        offline: keep the Hugging Face hub and datasets offline (tasks whose data is not here fail at once).
        out_name: sub-folder of the run for the results (and TensorBoard tag prefix).
        device: auto (CUDA when available), cpu or cuda[:n].

    Returns:
        The dict written to results.json.
    """
    tasks = list(tasks) if tasks is not None else [ROLLING_TASK]
    require(len(tasks) > 0 and len(set(tasks)) == len(tasks), "tasks", "a non-empty list of distinct task names",
            tasks)
    require(bool(out_name) and "/" not in out_name and out_name not in (".", ".."), "out_name",
            "a folder name (non-empty, no '/')", out_name)
    require(batch_size >= 1, "batch_size", ">= 1", batch_size)
    require(documents is None or documents >= 1, "documents", ">= 1 or null", documents)
    needle.validate()
    target = resolve_device(device)
    loaded = load_run(run, checkpoint, str(target))
    train_seq_len = loaded.train_seq_len
    evaluated = _lengths(multiples if multiples is not None else [1.0], lengths, train_seq_len)
    datamodule = eval_datamodule(loaded, data)
    split_documents = datamodule.documents(data.split)
    tokenizer = datamodule.tokenizer

    field = "lengths" if lengths is not None else "multiples"
    plans: dict[int, dict] = {}
    for length in evaluated:
        plan: dict = {}
        if ROLLING_TASK in tasks:
            chosen = rolling_documents(split_documents, length, documents)
            if not chosen:
                longest = max((len(d) for d in split_documents), default=0)
                raise ConfigError(f"{field}: the evaluated length {length} is longer than every document of the "
                                  f"{data.split} split (the longest has {longest} tokens), so {ROLLING_TASK} has "
                                  "nothing to score; lower it or use another split or corpus (data.*).")
            plan[ROLLING_TASK] = [split_documents[i] for i in chosen]
            plan["texts"] = document_texts(plan[ROLLING_TASK], tokenizer)
        if NIAH_TASK in tasks:
            plan[NIAH_TASK] = niah_documents(tokenizer, length, needle, field)
        if PASSKEY_TASK in tasks:
            plan[PASSKEY_TASK] = passkey_documents(tokenizer, length, needle, field)
        plans[length] = plan

    from tapa_lab.hf.export import wrap_decoder
    from tapa_lab.hf.lm_eval_harness import external_tasks, headline_metrics, hub_offline, run_tasks
    from tapa_lab.hf.tokenizer import hf_tokenizer

    with hub_offline(offline):
        external = external_tasks(tasks)
        hf_model = wrap_decoder(loaded.model.model, tokenizer, train_seq_len)
        hf_tok = hf_tokenizer(tokenizer)
        out = loaded.run_dir / out_name
        rows = []
        for length in evaluated:
            task_dir = out / "tasks" / f"L{length}"
            plan = plans[length]
            lab: dict = {}
            if ROLLING_TASK in plan:
                write_rolling_task(task_dir, plan["texts"])
                lab[ROLLING_TASK] = lab_nonoverlapping(loaded.model, plan[ROLLING_TASK], length, target)
            for task in (NIAH_TASK, PASSKEY_TASK):
                if task in plan:
                    digits = needle.digits if task == PASSKEY_TASK else NIAH_DIGITS
                    write_needle_task(task_dir, task, plan[task], max_gen_toks(tokenizer, digits))
            results = run_tasks(hf_model, hf_tok, length, task_dir, tasks, external, batch_size)
            (out / f"lm_eval_L{length}.json").write_text(json.dumps(results, indent=1))
            rows.append({"length": length, "multiple": length / train_seq_len, "metrics": headline_metrics(results),
                         "lab": lab})
    result = {"checkpoint": str(loaded.checkpoint), "train_seq_len": train_seq_len, "tasks": tasks,
              "protocol": {"split": data.split, "corpus": datamodule.corpus.recipe(), "documents": documents,
                           "needle": vars(needle), "batch_size": batch_size, "device": str(target)},
              "lengths": rows}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    _log_tensorboard(loaded.run_dir, out_name, rows)
    return result


def _log_tensorboard(run_dir: Path, prefix: str, rows: list[dict]) -> None:
    """Every headline metric as ``<prefix>/<task>/<metric>`` and the lab's comparison numbers; step = length."""
    writer = SummaryWriter(log_dir=str(run_dir))
    for row in rows:
        for task, metrics in row["metrics"].items():
            for metric, value in metrics.items():
                writer.add_scalar(f"{prefix}/{task}/{metric}", value, row["length"])
        for task, metrics in row["lab"].items():
            writer.add_scalar(f"{prefix}/{task}/lab_nonoverlapping_bits_per_token", metrics["bits_per_token"],
                              row["length"])
    writer.close()
