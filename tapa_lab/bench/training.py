"""Training-throughput benchmark: tokens/s and peak memory of a full training step, per PE and sequence length.

Each (PE, length) cell runs in a fresh process, so the peak memory of one cell is not hidden by an earlier one: on
CUDA ``torch.cuda.max_memory_allocated``, on CPU the growth of the process's peak resident set over its state just
before the first step (``ru_maxrss``). A step is forward + backward + AdamW on random tokens; the first
``warmup_steps`` are not timed. With ``compile``, each cell's decoder is compiled (``torch.compile``, inductor) and its
first warm-up step compiles.

Only the YAML parsing (:func:`architecture_of`, :func:`posenc_of`) needs ``jsonargparse``; :func:`measure_cells` runs
without it (the GPU acceptance run's image has none).
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import platform
import queue as queue_module
import resource
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
import yaml
from rich.console import Console

from tapa_lab.bench.table import write_report
from tapa_lab.devices import resolve_device
from tapa_lab.errors import ConfigError, require
from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import PositionalEncoding

if TYPE_CHECKING:
    from jsonargparse import Namespace

POSENC_FRAGMENTS = Path("experiments/posenc")
DEFAULT_POSENCS = ["experiments/posenc/rope.yaml", "experiments/posenc/tapa.yaml", "experiments/posenc/alibi.yaml",
                   "experiments/posenc/nope.yaml"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _model_section(path: str, field: str) -> dict:
    """The ``model`` mapping of a YAML file (a preset or a PE fragment), or a ConfigError naming ``field``."""
    require(Path(path).is_file(), field, "an existing YAML file (see experiments/)", path)
    try:
        model: Any = (yaml.safe_load(Path(path).read_text()) or {}).get("model")  # checked below
    except yaml.YAMLError as error:
        raise ConfigError(f"{field} = {path!r} is not valid YAML: {str(error).splitlines()[0]}") from None
    require(isinstance(model, dict), field, "a YAML file with a model: section", path)
    return model


def _parse(section: dict, field: str) -> Namespace:
    """Validate a ``model`` section with the same jsonargparse types the training CLI uses."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--architecture", type=DecoderConfig, default=DecoderConfig())
    parser.add_argument("--posenc", type=PositionalEncoding | None, default=None)
    try:
        return parser.parse_object({k: v for k, v in section.items() if k in ("architecture", "posenc")})
    except Exception as error:  # jsonargparse's ArgumentError: report it as the lab's one-line error
        raise ConfigError(f"{field}: {str(error).splitlines()[0]}") from None


def architecture_of(model_config: str) -> DecoderConfig:
    """The ``model.architecture`` of a preset YAML (e.g. experiments/model/small.yaml), validated."""
    architecture = _parse(_model_section(model_config, "model_config"), "model_config").architecture
    config = architecture if isinstance(architecture, DecoderConfig) else DecoderConfig(**vars(architecture))
    config.validate()
    return config


def posenc_of(spec: str) -> tuple[str, dict]:
    """A PE to benchmark, from a fragment (``experiments/posenc/tapa.yaml``, or its stem ``tapa``) or a class path
    (``tapa_lab.posenc.TAPA``).

    Returns:
        ``(name, config)``: the fragment's stem or the class name in lower case, and ``{"class_path", "init_args"}``.
    """
    if "." not in spec and "/" not in spec:  # a fragment's stem: rope, tapa, alibi, ...
        fragments = sorted(path.stem for path in POSENC_FRAGMENTS.glob("*.yaml"))
        require(spec in fragments, "posencs", f"a PE fragment's stem ({', '.join(fragments)}), a fragment's path or a "
                "class path", spec)
        spec = str(POSENC_FRAGMENTS / f"{spec}.yaml")
    if spec.endswith((".yaml", ".yml")):
        posenc = _parse(_model_section(spec, "posencs"), "posencs").posenc
        require(posenc is not None, "posencs", "PE fragments with a model.posenc section", spec)
        return Path(spec).stem, {"class_path": posenc.class_path, "init_args": vars(posenc.get("init_args") or {})}
    posenc = _parse({"posenc": spec}, "posencs").posenc
    return posenc.class_path.rsplit(".", 1)[-1].lower(), {"class_path": posenc.class_path, "init_args": {}}


def _build_posenc(config: dict, backend: str) -> PositionalEncoding:
    """The PE of a ``{"class_path", "init_args"}`` config (already validated by :func:`posenc_of`), on ``backend``."""
    module, name = config["class_path"].rsplit(".", 1)
    posenc = getattr(importlib.import_module(module), name)(**{**config["init_args"], "backend": backend})
    require(isinstance(posenc, PositionalEncoding), "posencs", "positional encodings (tapa_lab.posenc.<Class>)",
            config["class_path"])
    return posenc


def _measure(architecture: DecoderConfig, posenc: str, posenc_config: dict, seq_len: int, batch_size: int,
             steps: int, warmup_steps: int, device: str, backend: str, compile: bool) -> dict:
    """Time ``steps`` training steps of one cell (runs inside a child process)."""
    torch.manual_seed(0)
    pe = _build_posenc(posenc_config, backend)
    model = DecoderLM(258, architecture, pe).to(device)
    if compile:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, 258, (batch_size, seq_len + 1), device=device)
    autocast = torch.autocast("cuda", torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def step() -> None:
        with autocast:
            logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    rss_before = _peak_rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup_steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    step_times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        step_times.append(time.perf_counter() - start)
    elapsed = sum(step_times)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _peak_rss_mb() - rss_before)
    return {"posenc": posenc, "seq_len": seq_len, "batch_size": batch_size,
            "tokens_per_s": steps * batch_size * seq_len / elapsed, "step_ms": 1000 * elapsed / steps,
            "step_spread_pct": 100 * (max(step_times) - min(step_times)) / statistics.median(step_times),
            "peak_memory_mb": peak, "status": "ok"}


def _child(queue: mp.Queue, kwargs: dict) -> None:
    queue.put(_measure(**kwargs))


def measure_cells(architecture: DecoderConfig, pes: dict[str, dict], seq_lens: list[int], tokens_per_batch: int,
                  steps: int, warmup_steps: int, device: str, backend: str, compile: bool,
                  console: Console) -> list[dict]:
    """Time every (PE, length) cell, each in a fresh spawned process.

    Args:
        architecture: the decoder's shape.
        pes: ``{name: {"class_path", "init_args"}}`` (as :func:`posenc_of` gives them).
        seq_lens, tokens_per_batch, steps, warmup_steps, backend, compile: as in :func:`bench_training`.
        device: ``cpu`` or ``cuda``.
        console: shows which cell runs.

    Returns:
        One dict per cell, lengths outermost: posenc, seq_len, batch_size, and tokens_per_s, step_ms,
        peak_memory_mb, status ``ok``; or, when the cell's process died (its traceback is on stderr), status
        ``error: ...`` and no timings.
    """
    context = mp.get_context("spawn")
    results = []
    with console.status("benchmarking") as status:
        for seq_len in seq_lens:
            for name, posenc_config in pes.items():
                status.update(f"{name} at L = {seq_len}")
                queue = context.Queue()
                kwargs = dict(architecture=architecture, posenc=name, posenc_config=posenc_config, seq_len=seq_len,
                              batch_size=max(1, tokens_per_batch // seq_len), steps=steps,
                              warmup_steps=warmup_steps, device=device, backend=backend, compile=compile)
                process = context.Process(target=_child, args=(queue, kwargs))
                process.start()
                result = None
                while result is None and (process.is_alive() or not queue.empty()):
                    try:
                        result = queue.get(timeout=1.0)
                    except queue_module.Empty:
                        continue
                process.join()
                results.append(result or {"posenc": name, "seq_len": seq_len, "batch_size": kwargs["batch_size"],
                                          "status": f"error: the cell's process exited with {process.exitcode}"})
    return results


def bench_training(
    model_config: str = "experiments/model/small.yaml",
    posencs: list[str] = DEFAULT_POSENCS,  # noqa: B006 - read-only default shown in --help
    seq_lens: list[int] = [512, 1024, 2048],  # noqa: B006
    tokens_per_batch: int = 4096,
    steps: int = 5,
    warmup_steps: int = 2,
    device: str = "auto",
    backend: str = "auto",
    compile: bool = False,
    threads: int | None = None,
    out_dir: str = "checkpoints/bench",
) -> list[dict]:
    """Measure training throughput (tokens/s) and peak memory per PE and sequence length.

    Args:
        model_config: a preset YAML whose ``model.architecture`` is benchmarked.
        posencs: PEs to compare: PE fragments (experiments/posenc/*.yaml, or just their stem: rope, tapa) or class paths
            (tapa_lab.posenc.<Class>, its defaults); ratios are to the one named ``rope``.
        seq_lens: training lengths L.
        tokens_per_batch: B x L held fixed across lengths (B = tokens_per_batch // L, at least 1).
        steps: timed steps per cell.
        warmup_steps: untimed steps before timing.
        device: cpu, cuda or auto (cuda when available).
        backend: attention backend passed to every PE: auto, triton or torch.
        compile: compile the decoder with ``torch.compile`` (inductor) in every cell; needs ``warmup_steps >= 1``.
        threads: torch intra-op threads (default: torch's choice).
        out_dir: where training.json and training.md are written.

    Returns:
        One dict per cell: tokens_per_s, step_ms, peak_memory_mb and the cell's settings.
    """
    require(not compile or warmup_steps >= 1, "warmup_steps", ">= 1 with compile (the first step compiles)",
            warmup_steps)
    pes = dict(posenc_of(spec) for spec in posencs)
    architecture = architecture_of(model_config)
    device = resolve_device(device).type
    if threads is not None:
        torch.set_num_threads(threads)
    console = Console()
    results = measure_cells(architecture, pes, seq_lens, tokens_per_batch, steps, warmup_steps, device, backend,
                            compile, console)
    machine = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or 'cpu'} " \
        f"({torch.get_num_threads()} threads)"
    compiled = ", compiled" if compile else ""
    _report(results, f"{machine}, {Path(model_config).stem} model{compiled}", Path(out_dir), console)
    return results


def _report(results: list[dict], machine: str, out_dir: Path, console: Console) -> None:
    """Print a rich table (with each PE's ratio to RoPE, and the spread of its step times: (max - min) / median, a
    measure of how much to trust the ratio on this machine) and write training.json and training.md."""
    rope = {r["seq_len"]: r["tokens_per_s"] for r in results if r["posenc"] == "rope" and "tokens_per_s" in r}
    header = ["PE", "L", "batch", "tokens/s", "x RoPE", "step ms", "spread %", "peak MB"]
    rows = [[r["posenc"], str(r["seq_len"]), str(r["batch_size"]), f"{r['tokens_per_s']:.0f}",
             f"{r['tokens_per_s'] / rope[r['seq_len']]:.2f}" if r["seq_len"] in rope else "-",
             f"{r['step_ms']:.0f}", f"{r['step_spread_pct']:.0f}", f"{r['peak_memory_mb']:.0f}"] if "tokens_per_s" in r
            else [r["posenc"], str(r["seq_len"]), str(r["batch_size"]), r["status"], "-", "-", "-", "-"]
            for r in results]
    write_report(f"Training throughput on {machine}", header, rows, {"machine": machine, "results": results},
                 out_dir, "training", console)
