"""Exceptions raised by taskeval. Every message names the offending file, key or shape."""


class TaskevalError(Exception):
    """Base class of all taskeval errors; the CLI prints these without a traceback."""


class DataError(TaskevalError, ValueError):
    """A dataset, label file or image on disk is missing, corrupt or inconsistent."""


class ConfigError(TaskevalError, ValueError):
    """A configuration key or value is unknown or of the wrong type."""


class RegistryError(TaskevalError, KeyError):
    """An unknown or duplicate name in a registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class WeightsError(TaskevalError, ValueError):
    """A checkpoint does not fit the architecture (lists missing/unexpected keys and shape mismatches)."""


class TrainingError(TaskevalError, RuntimeError):
    """Training stopped (for example on a NaN or infinite loss)."""
