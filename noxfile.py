"""Sessions that run the lab end to end.  ``nox -l`` lists them; ``nox -s <name> -- <args>`` passes args through.

Torch: the sessions install ``$TAPA_LAB_TORCH`` first (default ``torch==2.13.0``, the CPU build this project's
machines carry); on a CUDA machine set e.g. ``TAPA_LAB_TORCH=torch`` to let pip choose a CUDA build.
"""

from __future__ import annotations

import os
import sys

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True  # every session reuses its virtualenv

TORCH = os.environ.get("TAPA_LAB_TORCH", "torch==2.13.0")


def install(session: nox.Session, extras: str = "") -> None:
    """Torch first (``$TAPA_LAB_TORCH``), then the lab in editable mode with the given extras (none: the core)."""
    session.install(TORCH)
    session.install("-e", f".[{extras}]" if extras else ".")


PARALLEL = ["-n", "auto", "--dist", "loadfile"]
"""pytest-xdist: one worker per core, each test file on one worker (its module fixtures built once)."""


@nox.session
def tests(session: nox.Session) -> None:
    """The fast test suite on CPU (Triton kernels through the interpreter), with every extra, one pytest-xdist worker
    per core: every test not marked ``slow`` (what CI runs; minutes). Args go to pytest after those (``-n 0``:
    serial; ``-m slow``: the slow tests instead, as ``nox -s tests_slow``)."""
    install(session, "dev,hf,cluster")
    session.run("pytest", "-m", "not slow", *PARALLEL, *(session.posargs or ["-q"]))


@nox.session(default=False)
def tests_slow(session: nox.Session) -> None:
    """The long end-to-end tests (marked ``slow``: grids, resumes after kill -9, every logger, DDP, torch.compile, the
    whole compile matrix sample, the GPU run's whole CPU dry run; about 30 CPU minutes). Args go to pytest."""
    install(session, "dev,hf,cluster")
    session.run("pytest", "-m", "slow", *PARALLEL, *(session.posargs or ["-q"]))


@nox.session(default=False)
def slurm(session: nox.Session) -> None:
    """Bring up a one-node SLURM cluster on this machine (tests/cluster/slurm.sh: installs the Debian packages when
    missing; needs root or sudo), run the tests against it (tests/cluster/), and bring it down whatever happened.

    Args go to pytest (default ``-q tests/cluster``).
    """
    install(session, "cluster")
    session.install("pytest>=8")
    session.run("bash", "tests/cluster/slurm.sh", "run", "python", "-m", "pytest",
                *(session.posargs or ["-q", "tests/cluster"]), external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint with ruff."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")


@nox.session(default=False)
def golden(session: nox.Session) -> None:
    """Write the golden losses of new PEs into tests/golden/losses.json (args: --names <case>..., --all, --compare)."""
    install(session)
    session.run("python", "tests/golden/regenerate.py", *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check tapa_lab/ with mypy (settings: ``[tool.mypy]`` in pyproject.toml); args replace the default paths.

    The lab is installed with the extras tapa_lab/ imports, so mypy reads torch's, Lightning's and transformers' own
    annotations.
    """
    install(session, "hf,cluster")
    session.install("mypy==2.4.1", "types-PyYAML")
    session.run("mypy", *session.posargs)


@nox.session
def smoke(session: nox.Session) -> None:
    """Train the tiny TAPA model on the default corpus (Shakespeare) for a few minutes; args go to `tapa-lab fit`."""
    install(session)
    session.run("tapa-lab", "fit", "--config", "experiments/smoke.yaml", *session.posargs)


@nox.session(default=False)
def ablation(session: nox.Session) -> None:
    """Run an ablation grid and write its report: `nox -s ablation -- experiments/ablations/<grid>.yaml [--workers N]`.

    The first arg is the grid (default experiments/ablations/smoke.yaml); the rest go to `tapa-lab ablation run`.
    Rerunning resumes: finished cells are skipped. Regenerate a report alone with `tapa-lab ablation report`.
    Installs the `cluster` extra, so `--executor slurm` works from a login node.
    """
    install(session, "cluster")
    grid, *rest = session.posargs or ["experiments/ablations/smoke.yaml"]
    session.run("tapa-lab", "ablation", "run", "--grid", grid, *rest)


@nox.session(name="compile", default=False)
def compile_kernels(session: nox.Session) -> None:
    """Compile every Triton kernel ahead of time for sm_80 and sm_90 (no GPU needed): registers, spills, shared memory.

    Args go to `tapa-lab bench compile` (e.g. `-- --full true --workers 16` for every variant at every config).
    Fails if a compile fails or does not fit its target. CI samples the matrix (tests/kernels/test_aot_compile.py).
    """
    install(session)
    session.run("tapa-lab", "bench", "compile", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: training throughput per PE (CPU or GPU) and the attention kernels (GPU). Args go to both."""
    install(session, "hf")
    session.run("tapa-lab", "bench", "training", *session.posargs)
    session.run("tapa-lab", "bench", "attention", *session.posargs)


@nox.session(default=False, venv_backend="none")
def gpu(session: nox.Session) -> None:
    """GPU acceptance run (issue 18): kernel tests on CUDA, attention benchmark, training tokens/s, a 200-step TAPA fit.

    `nox -s gpu -- --out DIR [--dry-run] [--parts kernels,attention,training,fit]` runs
    `python -m tapa_lab.bench.acceptance` in the Python that runs nox (no virtualenv, nothing installed: the lent GPU
    machine's image has no network, no nox and neither `datasets` nor `jsonargparse`, and the run needs none of them).
    At most 8 minutes on an H100/H200; writes DIR/acceptance.json, .md (the page, naming the GPU) and .log; exit status
    1 when a target fails. `--dry-run` is the CPU version (Triton's interpreter, tiny shapes; tested in CI).

    Through the device tool, which copies the working tree to the GPU machine and brings back what lies under $OUT:
        run(command="PYTHONUNBUFFERED=1 PYTHONPATH=. python3 -m tapa_lab.bench.acceptance --out $OUT", timeout_s=540)
    then commit the page (docs/results/gpu-acceptance-<gpu>.md) with the GPU named.
    """
    args = session.posargs or ["--out", "checkpoints/acceptance"]
    session.run(sys.executable, "-m", "tapa_lab.bench.acceptance", *args, env={"PYTHONPATH": os.getcwd()})
