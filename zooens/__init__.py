"""zooens: rank a pre-trained zoo on a small dataset, fine-tune the best, ensemble them.

    import zooens
    fitted = zooens.fit("photos/", zoo="embedded")     # a folder, .npz, .csv, a built-in name or arrays
    fitted.leaderboard()                               # a pandas DataFrame
    fitted.save("photos.zooens")                       # one file
    zooens.load("photos.zooens").predict(["cat.jpg"])  # anywhere, no registry

The functions below are imported on first use, so `import zooens` stays light (no torch).
"""

from typing import TYPE_CHECKING, Any

from zooens._version import __version__
from zooens.errors import (
    ConfigError,
    ConflictError,
    DatasetError,
    JobError,
    MissingWeightsError,
    NotFoundError,
    TooLargeError,
    UnknownModelError,
    WeightsMismatchError,
    ZooensError,
)

if TYPE_CHECKING:  # the annotations' names only; the functions import their layer on first use
    import zooens.ensemble
    import zooens.selection.datasets
    import zooens.service.library


def fit(data: Any, labels: Any = None, **kwargs: Any) -> "zooens.service.library.FittedEnsemble":
    """Rank, fine-tune and ensemble in this process; see `zooens.service.library.fit`."""
    from zooens.service.library import fit as _fit  # imported on use: torch and the service are heavy

    return _fit(data, labels, **kwargs)


def load(path: str, *, device: str = "cpu") -> "zooens.ensemble.EnsemblePredictor":
    """A predictor from a `.zooens` file (`zooens export`, `FittedEnsemble.save`); needs no registry."""
    from zooens.ensemble import EnsemblePredictor  # imported on use: torch is heavy

    return EnsemblePredictor.load(path, device=device)


def list_models(pattern: str | None = None, *, available_only: bool = False) -> list[str]:
    """Names of the zoo's weight sets matching the glob `pattern` (timm's `list_models`)."""
    from zooens.zoo import list_weight_sets  # imported on use: timm is heavy

    return [ws.name for ws in list_weight_sets(pattern, available_only=available_only)]


def load_dataset(spec: str, data: str | None = None) -> "zooens.selection.datasets.ImageDataset":
    """A built-in name, an ImageFolder directory, a `.npz` file or a `.csv` manifest as an `ImageDataset`."""
    from zooens.selection.datasets import load_dataset as _load_dataset  # imported on use: heavy

    return _load_dataset(spec, data)


def __getattr__(name: str) -> Any:
    if name == "FittedEnsemble":
        from zooens.service.library import FittedEnsemble  # imported on use

        return FittedEnsemble
    raise AttributeError(f"module 'zooens' has no attribute {name!r}")


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
    "FittedEnsemble",
    "__version__",
    "fit",
    "list_models",
    "load",
    "load_dataset",
]
