"""Where a registered dataset's files may live: the one home of that rule.

An uploaded dataset lives in its own stored folder (`ZOOENS_HOME/datasets/<id>/`); a dataset
registered from the server lives under one of `ZOOENS_DATA_ROOTS`. Whoever loads a registered
dataset again (thumbnails, the worker) passes `allowed_roots(...)` as the loaders' `confine_to`,
so a path that leads elsewhere (a manifest row, a symbolic link) is refused however the row got
into the registry.
"""

from __future__ import annotations

import os
from pathlib import Path

from zooens.settings import Settings

__all__ = ["allowed_roots"]


def allowed_roots(settings: Settings, source: str) -> list[Path] | None:
    """The folders a registered dataset's files must stay in, for loading it again.

    An upload: its own stored folder (`ZOOENS_HOME/datasets/<id>/`). A dataset under one of
    ZOOENS_DATA_ROOTS (registered through the API): that root. Anything else was registered by
    a local operator through the CLI (`zooens run --dataset PATH`, a built-in name): None, no
    confinement; its content is still checked against the recorded fingerprint.
    """
    uploads = Path(os.path.realpath(settings.home / "datasets"))
    try:
        real = Path(os.path.realpath(source))
    except (OSError, ValueError):
        return []
    if real == uploads:
        return []  # the datasets folder itself is no dataset
    if real.is_relative_to(uploads):
        return [uploads / real.relative_to(uploads).parts[0]]
    roots = [Path(os.path.realpath(r)) for r in settings.data_roots]
    inside = [r for r in roots if real == r or real.is_relative_to(r)]
    return inside or None
