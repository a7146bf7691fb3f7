"""``tapa-lab eval``: long-context evaluation of a finished run (perplexity by length, passkey, distance bias, and
TAPA's phase analysis).

    tapa-lab eval --run checkpoints/TAPA/version_0 --config experiments/eval/long-context.yaml
    tapa-lab eval --run <run> --checkpoint last --perplexity.mode nonoverlapping --passkey '{}' --bias '{}'
    tapa-lab eval --run <TAPA run> --perplexity null --phase '{}'

Every input is checked (run folder, checkpoint against the config, lengths against the split's documents, stride,
depths) before any evaluation work. Results go to ``<run>/<out_name>/``: ``results.json`` (every number and the protocol
used) and PNG plots; the curves and figures are also logged to the run's TensorBoard under ``<out_name>/``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.tensorboard import SummaryWriter

from tapa_lab.data.corpus import Corpus
from tapa_lab.data.split import Split
from tapa_lab.data.tokenizer import Tokenizer
from tapa_lab.devices import resolve_device
from tapa_lab.errors import ConfigError, require
from tapa_lab.eval.bias_trained import BiasConfig, evaluate_bias
from tapa_lab.eval.load import LoadedRun, load_run
from tapa_lab.eval.passkey import PasskeyConfig, evaluate_passkey
from tapa_lab.eval.perplexity import PerplexityConfig, evaluate_length, plan_windows
from tapa_lab.eval.phase import PhaseConfig, evaluate_phase
from tapa_lab.eval.plots import (
    bias_figure,
    moments_figure,
    passkey_figure,
    perplexity_figure,
    phase_figure,
    position_loss_figure,
    save_figure,
)
from tapa_lab.lit.datamodule import TextDataModule

SPLIT_STAGE = {"train": "fit", "validation": "validate", "test": "test"}


@dataclass
class EvalData:
    """The documents evaluated on: a split of the run's corpus, or of another corpus (with the run's tokenizer)."""

    split: Split = "test"
    """Split whose documents the windows come from: train, validation or test."""
    corpus: Corpus | None = None
    """Another corpus recipe (class_path, e.g. tapa_lab.data.PyStdlib); null: the run's own corpus."""
    data_dir: str | None = None
    """Folder of prepared corpora and token caches; null: the run's data.data_dir."""


def eval_datamodule(loaded: LoadedRun, data: EvalData) -> TextDataModule:
    """The run's data module, or one over ``data.corpus`` with the run's tokenizer; set up for ``data.split``.

    Raises:
        ConfigError: naming ``data.corpus`` when the run's tokenizer was trained on its corpus (BPE) and another
            corpus is asked for, and ``data.split`` when it is not a split.
    """
    require(data.split in SPLIT_STAGE, "data.split", "train, validation or test", data.split)
    run_data = loaded.datamodule
    if data.corpus is None and data.data_dir is None:
        datamodule = run_data
    else:
        tokenizer = run_data.tokenizer
        if data.corpus is not None and type(tokenizer).train is not Tokenizer.train:
            raise ConfigError(f"data.corpus: the run's tokenizer ({type(tokenizer).__name__}) was trained on its own "
                              "corpus, so another corpus cannot be tokenised the same way; use a byte-level run.")
        datamodule = TextDataModule(data.corpus or run_data.corpus, tokenizer, run_data.seq_len,
                                    data_dir=data.data_dir or run_data.data_dir, val_fraction=run_data.val_fraction,
                                    test_fraction=run_data.test_fraction)
    datamodule.prepare_data()
    datamodule.setup(SPLIT_STAGE[data.split])
    return datamodule


def _finite(value: object) -> object:
    """``value`` with NaN and infinities replaced by ``None`` (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn())


def evaluate(run: str, checkpoint: str = "best", perplexity: PerplexityConfig | None = PerplexityConfig(),
             passkey: PasskeyConfig | None = None, bias: BiasConfig | None = None, phase: PhaseConfig | None = None,
             data: EvalData = EvalData(), out_name: str = "eval", device: str = "auto") -> dict:
    """Evaluate a finished run beyond its training length: perplexity by length, passkey retrieval, distance bias,
    and (TAPA runs) the phase analysis.

    Writes ``<run>/<out_name>/results.json`` and PNG plots, and logs curves and figures to the run's TensorBoard.

    Args:
        run: the run folder, ``checkpoints/<name>/version_<n>`` (holds config.yaml and checkpoints/).
        checkpoint: ``best`` (the best by val/loss), ``last`` or a .ckpt path.
        perplexity: perplexity by length; null skips it.
        passkey: passkey retrieval; null (default) skips it, ``{}`` runs it with the defaults.
        bias: distance-bias analysis of the checkpoint; null (default) skips it, ``{}`` runs it with the defaults.
        phase: phase analysis of a TAPA checkpoint (how far the phase turns the cosine over a window); null
            (default) skips it, ``{}`` runs it with the defaults.
        data: the split and corpus evaluated on.
        out_name: sub-folder of the run for the results (and TensorBoard tag prefix).
        device: auto (CUDA when available), cpu or cuda[:n].

    Returns:
        The dict written to results.json.
    """
    require(bool(out_name) and "/" not in out_name and out_name not in (".", ".."), "out_name",
            "a folder name (non-empty, no '/')", out_name)
    target = resolve_device(device)
    loaded = load_run(run, checkpoint, str(target))
    datamodule = eval_datamodule(loaded, data)
    documents = datamodule.documents(data.split)
    longest = max((len(d) for d in documents), default=0)
    train_seq_len = loaded.train_seq_len
    if perplexity is not None:
        perplexity.validate(train_seq_len, longest)
    if passkey is not None:
        passkey.validate(train_seq_len, datamodule.tokenizer, len(datamodule.packed.tokens(data.split)))
    if bias is not None:
        bias.validate(train_seq_len, longest)
    if phase is not None:
        phase.validate(train_seq_len, longest, loaded.model.model)

    model = loaded.model
    out = loaded.run_dir / out_name
    out.mkdir(parents=True, exist_ok=True)
    protocol = {"split": data.split, "corpus": datamodule.corpus.recipe(), "manifest_hash": datamodule.manifest_hash,
                "documents": len(documents), "longest_document": longest, "device": str(target),
                "mode": perplexity.mode if perplexity is not None else None,
                "stride": perplexity.stride if perplexity is not None else None,
                "perplexity": asdict(perplexity) if perplexity is not None else None,
                "passkey": asdict(passkey) if passkey is not None else None,
                "bias": asdict(bias) if bias is not None else None,
                "phase": asdict(phase) if phase is not None else None}
    result: dict = {"checkpoint": str(loaded.checkpoint), "train_seq_len": train_seq_len, "protocol": protocol,
                    "perplexity": [], "position_loss": [], "passkey": None, "bias": None,
                    "phase": None}
    figures = {}
    with _progress() as progress:
        if perplexity is not None:
            for length in perplexity.lengths_for(train_seq_len):
                stride = perplexity.stride_for(length)
                total = len(plan_windows([len(d) for d in documents], length, stride, perplexity.max_tokens))
                task = progress.add_task(f"perplexity L={length}", total=total)
                row, curve = evaluate_length(model, documents, length, stride, perplexity, target,
                                             partial(progress.advance, task))
                result["perplexity"].append({"length": length, "multiple": length / train_seq_len, **row})
                result["position_loss"].append(curve)
            figures["perplexity"] = perplexity_figure(result["perplexity"], train_seq_len)
            figures["position_loss"] = position_loss_figure(result["position_loss"], train_seq_len)
        if passkey is not None:
            lengths = passkey.lengths_for(train_seq_len)
            task = progress.add_task("passkey", total=len(lengths) * len(passkey.depths) * passkey.trials)
            source = np.asarray(datamodule.packed.tokens(data.split)) if passkey.filler == "corpus" else None
            result["passkey"] = evaluate_passkey(model, datamodule.tokenizer, passkey, lengths, source, target,
                                                 lambda n: progress.advance(task, n))
            figures["passkey"] = passkey_figure(result["passkey"])
        if bias is not None:
            task = progress.add_task("distance bias", total=bias.windows)
            result["bias"] = evaluate_bias(model.model, documents, bias, bias.length_for(train_seq_len), target,
                                           lambda n: progress.advance(task, n))
            figures["bias_histograms"] = bias_figure(result["bias"])
            figures["bias_moments"] = moments_figure(result["bias"])
        if phase is not None:
            task = progress.add_task("phase", total=phase.windows)
            result["phase"] = evaluate_phase(model.model, documents, phase, phase.length_for(train_seq_len), target,
                                             lambda n: progress.advance(task, n))
            figures["phase_turn"] = phase_figure(result["phase"])
    result = {key: _finite(value) for key, value in result.items()}
    (out / "results.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    for name, figure in figures.items():
        save_figure(figure, out / f"{name}.png")
    _log_tensorboard(loaded.run_dir, out_name, result, figures)
    return result


def _log_tensorboard(run_dir: Path, prefix: str, result: dict, figures: dict) -> None:
    """Curves as scalars (step = length, position or head) and the figures, under ``<prefix>/`` in the run folder."""
    writer = SummaryWriter(log_dir=str(run_dir))
    for row in result["perplexity"]:
        writer.add_scalar(f"{prefix}/perplexity", row["perplexity"], row["length"])
        writer.add_scalar(f"{prefix}/nll", row["nll"], row["length"])
    for curve in result["position_loss"]:
        for start, loss in zip(curve["bucket_edges"][:-1], curve["loss"], strict=True):
            writer.add_scalar(f"{prefix}/position_loss/L{curve['length']}", loss, start)
    if result["passkey"] is not None:
        for length, accuracy in zip(result["passkey"]["lengths"], result["passkey"]["accuracy"], strict=True):
            writer.add_scalar(f"{prefix}/passkey_accuracy", float(np.mean(accuracy)), length)
    if result["bias"] is not None:
        for layer in result["bias"]["layers"]:
            for head in layer["heads"]:
                writer.add_scalar(f"{prefix}/bias_difference_mean/layer{layer['layer']}", head["mean"], head["head"])
    if result["phase"] is not None:
        for layer in result["phase"]["layers"]:
            for head in layer["heads"]:
                writer.add_scalar(f"{prefix}/phase_turn_median/layer{layer['layer']}", head["turn_quantiles"]["50%"],
                                  head["head"])
    for name, figure in figures.items():
        writer.add_figure(f"{prefix}/{name}", figure, close=True)
    writer.close()
