"""One module per task (scratch, finetune, eval): what it resolves and builds, in which order.

Each module is a :class:`Task`: ``resolve`` returns the config as the task will really run it
(before validation; it never mutates its argument), ``run`` builds the inputs and hands them to
:mod:`ttexp.train` (or evaluates). The loop itself is :mod:`ttexp.train.loop`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:  # annotations only: tasks/ sits above these layers and imports them anyway
    from ttexp.config.schema import RunConfig
    from ttexp.record.run_record import NullRecord, RunRecord
    from ttexp.train.plan import RunPlan
    from ttexp.train.ranks import Ranks


class Task(Protocol):
    """What the runner asks of a task module."""

    def resolve(self, cfg: RunConfig, overrides: Sequence[str] = ()) -> RunConfig:
        """The config with what the task's inputs decide (a model directory's shape, a fine-tune's
        held-out split), keeping what the command line (``overrides``) set; called once, before
        validation. Raises TtexpError for missing inputs."""

    def run(self, cfg: RunConfig, plan: RunPlan, ranks: Ranks, record: RunRecord | NullRecord) -> None:
        """Build the inputs and train or evaluate; failures raise a TtexpError with their status."""
