"""Errors a user can fix: reported as one clear message and a non-zero exit, without a traceback."""


class VlxError(Exception):
    """A problem in the config or the inputs. The message names the file, row or key and what to do."""


class DataError(VlxError):
    """A data file, row or image that cannot be used as it is."""


class ConfigError(VlxError):
    """A config value that cannot work, found before any weights load."""
