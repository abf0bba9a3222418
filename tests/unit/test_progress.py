"""The pace a user watches: elapsed time, the current tokens/s and the ETA, on a fake clock."""

import pytest

from ttexp.train.progress import Pace, hms


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_eta_is_the_remaining_steps_at_the_recent_wall_pace():
    clock = FakeClock()
    pace = Pace(start_step=0, last_step=100, window=4, clock=clock)
    assert pace.eta_s is None and pace.eta_text == "?" and pace.tokens_per_s == 0.0
    tokens = train_s = 0
    for step in range(1, 11):  # 2 s of wall per step, 1.5 s of it training, 1,000 tokens a step
        clock.now += 2.0
        tokens, train_s = tokens + 1000, train_s + 1.5
        pace.update(step, tokens, train_s)
    assert pace.elapsed_s == pytest.approx(20.0)
    assert pace.eta_s == pytest.approx(90 * 2.0)
    assert pace.tokens_per_s == pytest.approx(1000 / 1.5)
    assert pace.eta_text == "3m 00s"


def test_the_rate_and_eta_follow_a_change_of_pace_within_the_window():
    clock = FakeClock()
    pace = Pace(start_step=0, last_step=50, window=4, clock=clock)
    clock.now += 60.0  # a slow first step (warm-up, compile) drops out of the window
    pace.update(1, 1000, 60.0)
    for step in range(2, 11):
        clock.now += 1.0
        pace.update(step, 1000 * step, 60.0 + (step - 1) * 1.0)
    assert pace.eta_s == pytest.approx(40 * 1.0)
    assert pace.tokens_per_s == pytest.approx(1000.0)
    assert pace.elapsed_s == pytest.approx(69.0)


def test_a_resumed_run_counts_its_eta_from_where_it_starts():
    clock = FakeClock()
    pace = Pace(start_step=90, last_step=100, clock=clock)
    clock.now += 3.0
    pace.update(91, 512, 2.5)
    assert pace.eta_s == pytest.approx(9 * 3.0)
    assert pace.elapsed_s == pytest.approx(3.0)


def test_hms_formats_durations():
    assert hms(0) == "0m 00s" and hms(59.6) == "1m 00s" and hms(3723) == "1h 02m 03s"
