"""Errors a user can cause and fix.

Every one of them says what went wrong, where (file, line, key, column) and how to fix it.
The CLI prints them without a traceback and exits with status 2.
"""


class ModelyardError(Exception):
    """Base class for every error that is the user's to fix."""


class ConfigError(ModelyardError):
    """The experiment config, an override or a CLI argument is invalid."""


class DataError(ModelyardError):
    """A data source is missing, malformed or inconsistent."""


class ModelError(ModelyardError):
    """A model cannot be built or its weights cannot be loaded."""


class RunError(ModelyardError):
    """A run directory or model artifact is missing or incomplete."""


class NotFittedError(ModelyardError, ValueError):
    """An estimator was asked to predict before `fit`."""
