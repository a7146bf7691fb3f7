"""TAPA's phase-temperature schedule: tau(t) follows the written-out cosine and linear anneal, a scheduled TAPA at
step t scores exactly as a TAPA with the fixed temperature tau(t), its value travels with the weights, and bad fields
are named."""

from __future__ import annotations

import math

import pytest
import torch

from tapa_lab.errors import ConfigError
from tapa_lab.posenc import TAPA
from tapa_lab.posenc.phase_schedule import PhaseSchedule

H, HKV, D, L = 4, 2, 8, 19


def bound(pe: TAPA) -> TAPA:
    pe.bind(H, HKV, D)
    return pe


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_temperature_goes_from_start_to_end_and_stays(shape):
    schedule = PhaseSchedule(start=4.0, end=0.5, steps=8, shape=shape)
    for step in range(12):
        p = min(step, 8) / 8
        weight = (1 + math.cos(math.pi * p)) / 2 if shape == "cosine" else 1 - p
        assert schedule.temperature(step) == pytest.approx(0.5 + 3.5 * weight)
    assert schedule.temperature(0) == 4.0 and schedule.temperature(8) == schedule.temperature(100) == 0.5


def test_scheduled_tapa_at_a_step_scores_as_the_fixed_temperature_of_that_step():
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, H, L, D, generator=generator, dtype=torch.float64)
    k, v = (torch.randn(2, HKV, L, D, generator=generator, dtype=torch.float64) for _ in range(2))
    scheduled = bound(TAPA(backend="torch", phase_schedule=PhaseSchedule(start=4.0, end=1.0, steps=10)))
    for step in (0, 3, 10, 50):
        tau = scheduled.on_train_step(step)["phase_temperature"]
        fixed = bound(TAPA(backend="torch", phase_temperature=tau))
        positions = torch.arange(L)
        torch.testing.assert_close(scheduled.attend(q, k, v, positions), fixed.attend(q, k, v, positions),
                                   rtol=1e-6, atol=1e-6)  # 1/tau is an fp32 buffer


def test_the_current_value_is_saved_with_the_weights_and_loaded_back():
    schedule = PhaseSchedule(start=4.0, end=1.0, steps=10)
    trained = bound(TAPA(phase_schedule=schedule))
    trained.on_train_step(10)
    fresh = bound(TAPA(phase_schedule=schedule))
    assert fresh.phase_inverse_temperature.item() == 0.25  # before any step: 1 / start
    fresh.load_state_dict(trained.state_dict())
    assert fresh.phase_inverse_temperature.item() == 1.0  # the final value, as exported or evaluated
    assert "phase_inverse_temperature" not in bound(TAPA()).state_dict()  # the paper's TAPA: nothing new


def test_no_schedule_means_no_scalars_and_the_paper():
    assert bound(TAPA()).on_train_step(5) == {}


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"start": 0.0}, "phase_schedule.start"),
    ({"end": -1.0}, "phase_schedule.end"),
    ({"steps": 0}, "phase_schedule.steps"),
    ({"shape": "exp"}, "phase_schedule.shape"),
])
def test_bad_schedule_fields_are_named(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        PhaseSchedule(**kwargs)


@pytest.mark.parametrize("kwargs", [{"phase_temperature": 2.0}, {"learnable_temperature": True}])
def test_a_schedule_with_another_temperature_option_is_refused(kwargs):
    with pytest.raises(ConfigError, match="phase_schedule"):
        TAPA(phase_schedule=PhaseSchedule(), **kwargs)
