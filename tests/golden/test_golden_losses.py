"""Golden losses: a fresh tiny run of every encoding gives the committed first training losses (tests/golden/).

Tolerance: |fresh - golden| <= 2e-5 at every step (``golden_run.TOLERANCE``), about twice the largest spread measured
on the fixed run (1 thread, 12 steps): 0 between torch 2.13.0 and 2.14.1, 0 between two runs, 1.67e-6 between 1 and 2
threads (FIRE), 9.1e-6 on another CPU (TAPA's linear phase; MKL/oneDNN sum in another order there). Scaling ALiBi's
slopes by 1.01 moves its losses by 3.6e-3, 180x the bound; the two closest cases (TAPA with and without a learnable
alpha) differ by 8.2e-5, 4x. A case without a golden line fails, asking for ``python tests/golden/regenerate.py``;
``--names <case>`` rewrites a line whose maths changed on purpose.
"""

from __future__ import annotations

import pytest
from golden_run import GOLDEN_FILE, REGENERATE, RUN, TOLERANCE, Case, cases, deviation, quiet_lightning, read_golden
from golden_run import train_losses as golden_losses

import tapa_lab.posenc.alibi as alibi_module

GOLDEN = read_golden()
CASES = cases()


@pytest.fixture(scope="module")
def train_losses(tmp_path_factory):
    """``train_losses(case) -> [loss, ...]``, the golden run with the fixture corpus cached once for the module."""
    quiet_lightning()
    data_dir = tmp_path_factory.mktemp("golden-data")
    return lambda case: golden_losses(case, data_dir)


def check(case: Case, fresh: list[float]) -> None:
    """Fail unless ``fresh`` is within the tolerance of the case's golden line (or say how to write that line)."""
    if case.name not in GOLDEN["losses"]:
        pytest.fail(f"{case.name} ({case.class_path}) has no golden losses in {GOLDEN_FILE}: run `{REGENERATE}` "
                    "and commit the file.")
    golden = GOLDEN["losses"][case.name]
    gap = deviation(fresh, golden)
    assert gap <= TOLERANCE, (
        f"{case.name}: the first {len(golden)} training losses moved by up to {gap:.3g} (tolerance {TOLERANCE:g}).\n"
        f"golden {golden}\nfresh  {fresh}\nIf the maths changed on purpose, run `{REGENERATE} --names {case.name}`.")


def test_the_golden_file_is_for_this_run_and_these_cases():
    """The file's run is :data:`golden_run.RUN`, and it has no lines for cases that no longer exist."""
    assert GOLDEN.get("run") == RUN, f"{GOLDEN_FILE} was written for another golden run: run `{REGENERATE} --all`"
    stale = sorted(set(GOLDEN["losses"]) - {case.name for case in CASES})
    assert not stale, f"golden lines for cases that no longer exist: {stale}; run `{REGENERATE}` to drop them"


def test_every_discovered_class_and_fragment_is_a_case():
    from tapa_lab.posenc import pe_classes

    trained = {case.class_path.rsplit(".", 1)[-1] for case in CASES}
    assert trained == set(pe_classes())
    assert {"tapa", "tapa-linear", "tapa-static", "tapa-learnable-alpha", "tapa-temperature", "tapa-phase-norm",
            "tapa-phase-offset", "tapa-phase-init", "alibi", "rope"} <= {case.name for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_fresh_run_matches_the_golden_losses(case, train_losses):
    check(case, train_losses(case))


def test_a_one_percent_change_of_alibis_slopes_is_caught(train_losses, monkeypatch):
    """ALiBi with every head's slope x 1.01 fails the comparison, by a wide margin (> 10x the tolerance)."""
    (case,) = [case for case in CASES if case.name == "alibi"]
    slopes = alibi_module.alibi_slopes
    monkeypatch.setattr(alibi_module, "alibi_slopes", lambda n_heads: slopes(n_heads) * 1.01)
    fresh = train_losses(case)
    assert deviation(fresh, GOLDEN["losses"]["alibi"]) > 10 * TOLERANCE
    with pytest.raises(AssertionError, match=f"alibi: the first {RUN['steps']} training losses moved"):
        check(case, fresh)


def test_a_case_without_a_golden_line_asks_for_the_command():
    with pytest.raises(pytest.fail.Exception, match="run `python tests/golden/regenerate.py`"):
        check(Case("new-pe", "tapa_lab.posenc.NoPE"), [])
