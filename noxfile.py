"""Sessions that run the lab end to end.  ``nox -l`` lists them; ``nox -s <name> -- <args>`` passes args through.

Torch: the sessions install ``$TAPA_LAB_TORCH`` first (default ``torch==2.13.0``, the CPU build this project's
machines carry); on a CUDA machine set e.g. ``TAPA_LAB_TORCH=torch`` to let pip choose a CUDA build.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True  # every session reuses its virtualenv

TORCH = os.environ.get("TAPA_LAB_TORCH", "torch==2.13.0")


def install(session: nox.Session, extras: str = "") -> None:
    """Torch first (``$TAPA_LAB_TORCH``), then the lab in editable mode with the given extras (none: the core)."""
    session.install(TORCH)
    session.install("-e", f".[{extras}]" if extras else ".")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on CPU (Triton kernels through the interpreter), with every extra. Args go to pytest."""
    install(session, "dev,hf,cluster")
    session.run("pytest", *(session.posargs or ["-q"]))


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


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: training throughput per PE (CPU or GPU) and the attention kernels (GPU). Args go to both."""
    install(session, "hf")
    session.run("tapa-lab", "bench", "training", *session.posargs)
    session.run("tapa-lab", "bench", "attention", *session.posargs)
