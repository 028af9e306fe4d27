"""Exceptions raised for bad user input; messages say what, where and what was expected."""


class LamkitError(Exception):
    """Base class of lamkit's user-facing errors."""


class DataError(LamkitError, ValueError):
    """A data file is missing, malformed or inconsistent."""


class ConfigError(LamkitError, ValueError):
    """An input.json/YAML configuration is invalid."""


class ModelFileError(LamkitError, ValueError):
    """A model or checkpoint file cannot be read or is of an unknown kind."""
