"""Domain errors. Libraries raise these; only `service/` turns them into HTTP answers.

Every message says what was wrong and how to fix it.
"""

from __future__ import annotations


class ZooensError(Exception):
    """Base class of every error zooens raises on purpose."""


class UnknownModelError(ZooensError, KeyError):
    """A model, architecture or zoo set name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingWeightsError(ZooensError):
    """A registered weight set whose weights cannot be found on this machine."""


class WeightsMismatchError(ZooensError):
    """Weights found, but they do not fit the architecture or their checksum is wrong."""


class DatasetError(ZooensError, ValueError):
    """Bad input data: unreadable files, wrong layout, too few examples, bad labels."""


class ConfigError(ZooensError, ValueError):
    """Invalid parameters (hyper-parameters, options, settings)."""


class JobError(ZooensError):
    """A job or one of its units failed."""


class NotFoundError(ZooensError, LookupError):
    """An id that does not exist in the registry."""


class ConflictError(ZooensError):
    """An action that conflicts with the current state (cancel a finished job, ...)."""


class TooLargeError(ZooensError):
    """An upload or archive over the configured limits."""


class OfflineError(ZooensError):
    """The Hugging Face hub cannot be used: offline mode is on, or its endpoint cannot be reached."""


class PullError(ZooensError):
    """Weights cannot be pulled from the hub at all (not enough disk space, no token, ...)."""


class Cancelled(ZooensError):
    """Work stopped because a cancel was requested or its time limit passed (see `zooens.cancel`)."""
