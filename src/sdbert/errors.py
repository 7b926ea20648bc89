"""Errors a user can cause. The CLI turns them into a one-line message and exit status 2."""


class SDBertError(Exception):
    """Base class: the message is shown to the user as is, without a traceback."""


class ConfigError(SDBertError, ValueError):
    """An impossible or inconsistent configuration."""


class CheckpointError(SDBertError):
    """A model folder that is missing, corrupt or of a kind we cannot read."""


class DataError(SDBertError):
    """A data source that is missing, corrupt or has the wrong shape."""
