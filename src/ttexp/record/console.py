"""The one console that log lines and the progress bar share (so neither overwrites the other)."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

from ttexp.errors import redact

CONSOLE = Console(soft_wrap=True)


class _PlainFormatter(logging.Formatter):
    """INFO as the bare message; WARNING and above prefixed with their level."""

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno <= logging.INFO else f"{record.levelname}: {msg}"


class RedactFilter(logging.Filter):
    """Replaces secret values in every record (:func:`ttexp.errors.redact`) before a handler writes
    it: on the console and training.log handlers (conf/hydra/job_logging/ttexp.yaml)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def console_handler() -> logging.Handler:
    """Rich handler on a terminal; a plain stdout handler elsewhere (CI logs, pipes, tee),
    where rich would wrap long lines at 80 columns. Used by conf/hydra/job_logging/ttexp.yaml.
    Secret values are redacted (:class:`RedactFilter`)."""
    if CONSOLE.is_terminal:
        handler: logging.Handler = RichHandler(console=CONSOLE, show_path=False, show_time=False,
                                               markup=False)
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_PlainFormatter("%(message)s"))
    handler.addFilter(RedactFilter())
    return handler
