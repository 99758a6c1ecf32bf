"""zooens: rank a pre-trained zoo on a small dataset, fine-tune the best, ensemble them."""
from zooens.errors import (
    ZooensError,
    UnknownModelError,
    MissingWeightsError,
    WeightsMismatchError,
    DatasetError,
    ConfigError,
    JobError,
    NotFoundError,
    ConflictError,
    TooLargeError,
)

__version__ = "0.1.0"

__all__ = [
    "ZooensError",
    "UnknownModelError",
    "MissingWeightsError",
    "WeightsMismatchError",
    "DatasetError",
    "ConfigError",
    "JobError",
    "NotFoundError",
    "ConflictError",
    "TooLargeError",
    "__version__",
]
