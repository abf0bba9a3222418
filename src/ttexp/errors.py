"""Errors a user can act on. They are printed as one message, without a traceback."""


class TtexpError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(TtexpError):
    """The composed config breaks a rule (see :mod:`ttexp.config.validate`)."""


class DataError(TtexpError):
    """A data file is missing, unreadable, corrupt or too small."""


class BackendUnavailable(TtexpError):
    """The requested backend or device cannot be used on this machine."""
