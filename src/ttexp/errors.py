"""Errors a user can act on, and the one exit policy: every error carries the run status it ends
in and the process exit code that status maps to.

They are printed as one message, without a traceback. The status goes into ``result.json``;
:func:`exit_code` turns it into the exit code of ``python -m ttexp`` and of each worker rank.
"""

from __future__ import annotations

import os
import re

SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
"""Environment variables whose values are secrets: WANDB_API_KEY, HF_TOKEN, and anything named
like a token, key, secret, password, credential or auth."""
SECRET_MIN_LEN = 6
"""Shorter values are not redacted (a "1" or "true" would blank out unrelated text)."""


def redact(text: str) -> str:
    """``text`` with the value of every secret-named environment variable (:data:`SECRET_NAME`)
    replaced by ``[NAME redacted]``: applied to every error message, log line and record file
    that could carry one (a checkpoint's config.yaml can interpolate ``${oc.env:HF_TOKEN}``)."""
    secrets = sorted(((v, k) for k, v in os.environ.items()
                      if SECRET_NAME.search(k) and len(v) >= SECRET_MIN_LEN), reverse=True,
                     key=lambda vk: len(vk[0]))
    for value, name in secrets:
        if value in text:
            text = text.replace(value, f"[{name} redacted]")
    return text

EXIT_CODES = {"completed": 0, "failed": 1, "usage": 2, "diverged": 3, "interrupted": 130}
"""Exit code per run status. ``usage`` (2): the command line or the output directory is unusable
and nothing ran (argparse's convention). 130 = 128 + SIGINT, the shell's code for Ctrl-C."""


def exit_code(status: str) -> int:
    """The exit code for a run ``status`` (completed 0, failed 1, diverged 3, interrupted 130);
    any status not listed (``running``, ``lost``: the run's process died) is a failure, 1."""
    return EXIT_CODES.get(status, 1)


class TtexpError(Exception):
    """Base class: the message names the problem and the fix. A run that raises it ends ``failed``."""

    status = "failed"
    reported = False
    """True when the message was already logged where it happened (rank 0 of a multi-rank run)."""

    @property
    def exit_code(self) -> int:
        return exit_code(self.status)


class ConfigError(TtexpError):
    """The composed config breaks a rule (see :mod:`ttexp.config.validate`)."""


class DataError(TtexpError):
    """A data file is missing, unreadable, corrupt or too small."""


class BackendUnavailable(TtexpError):
    """The requested backend or device cannot be used on this machine."""


class CheckpointError(TtexpError):
    """A checkpoint is missing, incomplete, corrupt, from another model, or cannot be written."""


class RunDirBusy(TtexpError):
    """Another live process (a run, or a rank of one) holds the run directory's lock; the message
    names its pid and host. Nothing ran and nothing in the directory was touched (exit 2)."""

    status = "usage"


class JobLost(TtexpError):
    """The job's process was killed (SIGKILL, the out-of-memory killer) before it closed its record;
    its supervisor records ``lost`` with the last step and checkpoint (exit 1)."""

    status = "lost"


class Diverged(TtexpError):
    """The loss or the gradient norm became NaN or infinite; the run ends ``diverged``."""

    status = "diverged"


class Interrupted(TtexpError):
    """SIGINT or SIGTERM arrived (Ctrl-C, a scheduler's stop); the run ends ``interrupted`` after
    saving a checkpoint at the step that was running."""

    status = "interrupted"


def error_for_status(status: str, message: str) -> TtexpError:
    """The error that ends a run with ``status`` as another process recorded (and logged) it: a
    multi-rank run's controller re-raises rank 0's outcome with this."""
    cls = next((c for c in (Diverged, Interrupted) if c.status == status), TtexpError)
    error = cls(message)
    error.reported = True
    return error
