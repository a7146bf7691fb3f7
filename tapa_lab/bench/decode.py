"""Decoding-throughput benchmark: generated tokens/s with and without the KV cache, per PE and prompt length.

For each PE and prompt length P (multiples of the training length), greedy decoding of ``new_tokens`` tokens after a
prompt of P random tokens, timed two ways on the lab's decoder (:class:`~tapa_lab.model.DecoderLM`):

- cached: one forward over the prompt (the prefill, timed apart), then one token per step with a
  :class:`~tapa_lab.model.cache.KVCache` (RoPE re-rotates every cached key per step; TAPA, ALiBi and NoPE read them as
  they are);
- uncached: every step is a full forward over the prompt and the tokens generated so far.

Decoding tokens/s is ``new_tokens`` over the time of the decoding steps. Both ways must pick the same tokens (they
compute the same logits); the table says so per cell. Models come from a run (its trained weights and training
length) or from a preset and PE fragments (random weights: speed does not depend on them).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from rich.console import Console

from tapa_lab.bench.table import write_report
from tapa_lab.bench.training import _build_posenc, architecture_of, posenc_of
from tapa_lab.devices import resolve_device
from tapa_lab.errors import require
from tapa_lab.eval.load import load_run
from tapa_lab.model import DecoderLM
from tapa_lab.model.cache import KVCache

DEFAULT_POSENCS = ["experiments/posenc/rope.yaml", "experiments/posenc/tapa.yaml"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def time_decoding(model: DecoderLM, prompt: torch.Tensor, new_tokens: int, cached: bool,
                  clock: Callable[[], float] = time.perf_counter) -> tuple[list[int], float, float]:
    """Greedy decoding after ``prompt`` ``(1, P)``, timed by ``clock`` (seconds).

    Returns:
        ``(tokens, prefill_s, decode_s)``: the generated ids, the seconds of the first forward (over the prompt) and
        of the ``new_tokens - 1`` steps after it.
    """
    device = prompt.device
    cache = KVCache() if cached else None
    _sync(device)
    start = clock()
    logits = model(prompt, cache=cache)
    generated = [int(logits[0, -1].argmax())]
    _sync(device)
    prefill = clock() - start
    sequence = prompt
    start = clock()
    for _ in range(new_tokens - 1):
        last = torch.tensor([[generated[-1]]], device=device)
        if cached:
            logits = model(last, cache=cache)
        else:
            sequence = torch.cat([sequence, last], dim=1)
            logits = model(sequence)
        generated.append(int(logits[0, -1].argmax()))
    _sync(device)
    return generated, prefill, clock() - start


def _models(run: str | None, checkpoint: str, model_config: str, posencs: list[str], backend: str,
            device: torch.device) -> tuple[dict[str, DecoderLM], int, str]:
    """``({name: model}, training length, description)`` from a run or from a preset and PE fragments."""
    if run is not None:
        loaded = load_run(run, checkpoint, str(device))
        name = loaded.config["model"]["posenc"]["class_path"].rsplit(".", 1)[-1].lower()
        return {name: loaded.model.model}, loaded.train_seq_len, f"run {run} ({loaded.checkpoint.name})"
    architecture = architecture_of(model_config)
    seq_len: Any = ((yaml.safe_load(Path(model_config).read_text()) or {}).get("data") or {}).get("seq_len")
    require(isinstance(seq_len, int) and seq_len >= 1, "model_config", "a preset YAML with data.seq_len",
            model_config)
    models = {}
    for spec in posencs:
        name, config = posenc_of(spec)
        torch.manual_seed(0)
        models[name] = DecoderLM(258, architecture, _build_posenc(config, backend)).to(device).eval()
    return models, seq_len, f"{Path(model_config).stem} preset, random weights"


def bench_decode(
    run: str | None = None,
    checkpoint: str = "last",
    model_config: str = "experiments/model/tiny.yaml",
    posencs: list[str] = DEFAULT_POSENCS,  # noqa: B006 - read-only default shown in --help
    multiples: list[float] = [1.0, 4.0, 16.0],  # noqa: B006
    new_tokens: int = 32,
    device: str = "auto",
    backend: str = "auto",
    threads: int | None = None,
    clock: Literal["wall", "cpu"] = "wall",
    out_dir: str = "checkpoints/bench",
) -> list[dict]:
    """Measure greedy decoding tokens/s with and without the KV cache per PE and prompt length.

    Args:
        run: a run folder to benchmark (its PE, weights and training length); null: model_config and posencs.
        checkpoint: the run's checkpoint: best, last or a .ckpt path.
        model_config: a preset YAML (model.architecture and data.seq_len) when no run is given.
        posencs: PE fragments (experiments/posenc/*.yaml) or class paths, when no run is given.
        multiples: prompt lengths as multiples of the training length.
        new_tokens: tokens generated per cell (>= 2).
        device: cpu, cuda or auto (cuda when available).
        backend: attention backend of every PE when no run is given: auto, triton or torch.
        threads: torch intra-op threads (default: torch's choice).
        clock: wall (elapsed time) or cpu (CPU time of this process: with --threads 1 and --device cpu, the compute
            time alone, steady on a machine shared with other work; with more threads it adds up every thread's).
        out_dir: where decode.json and decode.md are written.

    Returns:
        One dict per (PE, length): cached and uncached decoding tokens/s, prefill seconds, whether the tokens agree.
    """
    require(new_tokens >= 2, "new_tokens", ">= 2", new_tokens)
    require(clock in ("wall", "cpu"), "clock", "wall or cpu", clock)
    timer = time.perf_counter if clock == "wall" else time.process_time
    require(len(multiples) > 0 and all(m > 0 for m in multiples), "multiples", "a non-empty list of positive numbers",
            multiples)
    target = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    models, train_seq_len, source = _models(run, checkpoint, model_config, posencs, backend, target)
    results = []
    console = Console()
    with console.status("benchmarking") as status:
        for multiple in multiples:
            length = max(1, round(multiple * train_seq_len))
            prompt = torch.randint(0, 256, (1, length), generator=torch.Generator().manual_seed(0)).to(target)
            for name, model in models.items():
                status.update(f"{name} at P = {length}")
                for warm in (True, False):  # warm-up: first-call allocations of each path
                    time_decoding(model, prompt[:, :8], 2, cached=warm)
                cached, prefill, cached_s = time_decoding(model, prompt, new_tokens, True, timer)
                uncached, _, uncached_s = time_decoding(model, prompt, new_tokens, False, timer)
                steps = new_tokens - 1
                results.append({"posenc": name, "multiple": multiple, "prompt": length, "new_tokens": new_tokens,
                                "cached_tokens_per_s": steps / cached_s, "uncached_tokens_per_s": steps / uncached_s,
                                "speedup": uncached_s / cached_s, "prefill_s": prefill,
                                "same_tokens": cached == uncached})
    machine = torch.cuda.get_device_name() if target.type == "cuda" else \
        f"{platform.processor() or 'cpu'} ({torch.get_num_threads()} threads)"
    _report(results, f"{machine}, {source}, {clock} clock", Path(out_dir), console)
    return results


def _report(results: list[dict], machine: str, out_dir: Path, console: Console) -> None:
    """Print a rich table and write decode.json and decode.md."""
    header = ["PE", "x L", "prompt", "cached tok/s", "uncached tok/s", "speedup", "prefill ms", "same tokens"]
    rows = [[r["posenc"], f"{r['multiple']:g}", str(r["prompt"]), f"{r['cached_tokens_per_s']:.0f}",
             f"{r['uncached_tokens_per_s']:.0f}", f"{r['speedup']:.1f}", f"{1000 * r['prefill_s']:.0f}",
             "yes" if r["same_tokens"] else "NO"] for r in results]
    write_report(f"Greedy decoding on {machine}", header, rows, {"machine": machine, "results": results}, out_dir,
                 "decode", console)
