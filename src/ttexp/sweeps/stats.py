"""Is the best setting of a sweep really better? Seeds grouped, mean +- std, and a verdict.

On small models the seed-to-seed spread of validation loss is often larger than the gap between
neighbouring settings. A sweep over ``training.seed`` (with other keys) is grouped by the other
keys: each setting gets n, mean and sample standard deviation of its runs' best and final
validation losses. The best setting is declared only when its mean beats the runner-up's by more
than their combined standard error, sqrt(s1^2/n1 + s2^2/n2) (the standard error of a difference of
two independent means, Welch's form); otherwise the top settings are within noise.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

SEED_KEY = "training.seed"


@dataclass
class Setting:
    """One setting of the non-seed keys and the completed runs' losses under it."""

    params: dict[str, Any]
    jobs: list[str] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.best)

    @property
    def mean(self) -> float:
        """Mean best validation loss (nats/token); inf without a completed run."""
        return statistics.fmean(self.best) if self.best else math.inf

    @staticmethod
    def _std(values: list[float]) -> Optional[float]:
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def std(self) -> Optional[float]:
        """Sample standard deviation (n - 1) of the best validation loss; None when n < 2."""
        return self._std(self.best)

    @property
    def final_mean(self) -> Optional[float]:
        return statistics.fmean(self.final) if self.final else None

    @property
    def final_std(self) -> Optional[float]:
        return self._std(self.final)

    @property
    def sem(self) -> Optional[float]:
        """Standard error of the mean best loss, std / sqrt(n); None when n < 2."""
        return self.std / math.sqrt(self.n) if self.std is not None else None


def group_settings(jobs: Sequence[tuple[str, dict[str, Any], Optional[float], Optional[float]]],
                   keys: list[str]) -> list[Setting]:
    """Group jobs by their values of ``keys`` (the swept keys other than the seed).

    Args:
        jobs: (job name, parsed overrides, best val loss or None, final val loss or None) for
            every job; a job without a best loss (failed, running) is listed but not counted.
        keys: the keys that define a setting.
    Returns:
        Settings, best (lowest mean best loss) first.
    """
    groups: dict[str, Setting] = {}
    for name, params, best, final in jobs:
        setting = {k: params.get(k) for k in keys}
        g = groups.setdefault(repr(sorted(setting.items(), key=lambda kv: kv[0])), Setting(setting))
        g.jobs.append(name)
        if best is not None and math.isfinite(best):
            g.best.append(best)
            if final is not None and math.isfinite(final):
                g.final.append(final)
    return sorted(groups.values(), key=lambda g: g.mean)


@dataclass
class Verdict:
    """``best`` is set only when the top setting is resolved; ``text`` says why, in one line."""

    best: Optional[Setting]
    text: str


def verdict(settings: list[Setting], describe: Any = str) -> Verdict:
    """Compare the top two settings (sorted best first, as :func:`group_settings` returns them).

    The top one wins when runner-up mean - top mean > sqrt(sem1^2 + sem2^2). With fewer than two
    runs in either, the spread is unknown and nothing is declared.

    Args:
        settings: from :func:`group_settings`.
        describe: turns a setting's params into text for the message.
    """
    ranked = [s for s in settings if s.n > 0]
    if not ranked:
        return Verdict(None, "no setting has a completed run with a validation loss")
    if len(ranked) == 1:
        return Verdict(ranked[0], f"only one setting completed: {describe(ranked[0].params)}")
    top, second = ranked[0], ranked[1]
    gap = second.mean - top.mean
    if top.sem is None or second.sem is None:
        return Verdict(None, f"{describe(top.params)} and {describe(second.params)} differ by "
                             f"{gap:.4f}, but a setting with one completed seed has no measured "
                             "spread: not resolved")
    se = math.hypot(top.sem, second.sem)
    if gap > se:
        return Verdict(top, f"{describe(top.params)} beats the runner-up {describe(second.params)} "
                            f"by {gap:.4f}, more than the combined standard error {se:.4f}")
    close = [describe(s.params) for s in ranked if s.mean - top.mean <= se] or [describe(top.params)]
    return Verdict(None, f"within noise: the top settings ({'; '.join(close)}) differ by less than "
                         f"the combined standard error {se:.4f} (gap to the runner-up {gap:.4f}); "
                         "no setting is marked best")


def single_seed_resolution(settings: list[Setting]) -> Optional[float]:
    """For a sweep with one seed per setting: the smallest difference between two single runs that
    the sweep resolves, sqrt(2) x the pooled seed-to-seed standard deviation of the settings that
    were repeated (n >= 2); None when no setting was repeated (the spread is unknown)."""
    repeated = [s for s in settings if s.n > 1]
    if not repeated:
        return None
    dof = sum(s.n - 1 for s in repeated)
    pooled = math.sqrt(sum((s.n - 1) * s.std ** 2 for s in repeated) / dof)
    return math.sqrt(2) * pooled


def mean_std(mean: Optional[float], std: Optional[float]) -> str:
    """``1.8523 ± 0.0120`` (``± ?`` when n = 1); ``–`` without a mean."""
    if mean is None or not math.isfinite(mean):
        return "–"
    return f"{mean:.4f} ± " + (f"{std:.4f}" if std is not None else "?")
