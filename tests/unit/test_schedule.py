"""Learning-rate schedules: warmup, cosine and linear decay to 10%, constant."""

from __future__ import annotations

import math

import pytest

from ttexp.train.schedule import learning_rate_at


def lrs(name, peak=3e-4, warmup=10, steps=100, ratio=0.1):
    return [learning_rate_at(s, peak, warmup, steps, name, ratio) for s in range(steps)]


@pytest.mark.parametrize("name", ["warmup_cosine", "warmup_linear"])
def test_warmup_rises_linearly_then_decays_to_ten_percent(name):
    v = lrs(name)
    assert v[0] == pytest.approx(3e-5) and v[9] == pytest.approx(3e-4)
    assert all(a < b for a, b in zip(v[:9], v[1:10]))
    assert all(a >= b for a, b in zip(v[10:], v[11:]))
    assert v[10] == pytest.approx(3e-4) and v[-1] == pytest.approx(3e-5)


def test_cosine_midpoint_is_halfway():
    v = lrs("warmup_cosine", warmup=0, steps=101)
    assert v[50] == pytest.approx(3e-5 + (3e-4 - 3e-5) * 0.5)
    assert v[25] == pytest.approx(3e-5 + (3e-4 - 3e-5) * 0.5 * (1 + math.cos(math.pi / 4)))


def test_constant_is_the_peak_after_warmup():
    assert set(lrs("constant", warmup=0)) == {3e-4}


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="Unknown scheduler"):
        learning_rate_at(0, 1.0, 0, 10, "nope", 0.1)
