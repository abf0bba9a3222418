"""The one console that log lines and the progress bar share (so neither overwrites the other)."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

CONSOLE = Console(soft_wrap=True)


class _PlainFormatter(logging.Formatter):
    """INFO as the bare message; WARNING and above prefixed with their level."""

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno <= logging.INFO else f"{record.levelname}: {msg}"


def console_handler() -> logging.Handler:
    """Rich handler on a terminal; a plain stdout handler elsewhere (CI logs, pipes, tee),
    where rich would wrap long lines at 80 columns. Used by conf/hydra/job_logging/ttexp.yaml."""
    if CONSOLE.is_terminal:
        return RichHandler(console=CONSOLE, show_path=False, show_time=False, markup=False)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_PlainFormatter("%(message)s"))
    return handler
