"""The Hugging Face hub settings zooens uses, read from the environment at call time.

huggingface_hub reads `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE` and `HF_TOKEN` once,
when it is imported (`huggingface_hub.constants`); zooens reads them again at each call, so that a
variable changed later (a service's settings, a test's `monkeypatch.setenv`) is honoured. A value set
in code on `huggingface_hub.constants.HF_HUB_CACHE` after import wins over the environment.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub import constants

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "ON", "YES", "TRUE"}
_IMPORTED_HUB_CACHE = constants.HF_HUB_CACHE  # to tell a value set in code from the import-time one

_online_lock = threading.Lock()
_online_depth = 0
_saved_offline: bool = False


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def hf_home() -> Path:
    """`HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`."""
    home = _env("HF_HOME")
    if home:
        return Path(home).expanduser()
    xdg = _env("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface"


def hub_cache_dir() -> Path:
    """The hub cache folder (`models--org--name/...` lives there): `HF_HUB_CACHE`, else `HF_HOME/hub`."""
    if constants.HF_HUB_CACHE != _IMPORTED_HUB_CACHE:  # set in code after import
        return Path(constants.HF_HUB_CACHE).expanduser()
    cache = _env("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
    if cache:
        return Path(cache).expanduser()
    return hf_home() / "hub"


def hub_endpoint() -> str:
    """`HF_ENDPOINT` without a trailing slash, else https://huggingface.co."""
    return (_env("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """`HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set to a true value."""
    value = _env("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return bool(value) and value.strip().upper() in _TRUE


def hub_token(token: str | bool | None = None) -> str | None:
    """The token to send: `token` when a string, none when False; else `HF_TOKEN`, then the token file
    (`HF_TOKEN_PATH`, else `HF_HOME/token`). None when there is none."""
    if token is False:
        return None
    if isinstance(token, str) and token:
        return token
    found = _env("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    if found:
        return found.strip() or None
    path = Path(_env("HF_TOKEN_PATH") or hf_home() / "token").expanduser()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@contextlib.contextmanager
def hub_online() -> Iterator[None]:
    """Within the block huggingface_hub's HTTP client sends requests even when its import-time
    `HF_HUB_OFFLINE` said offline (the caller has checked `hub_offline()` now). Nested and
    concurrent blocks are counted; the import-time value is put back when the last one ends."""
    global _online_depth, _saved_offline
    with _online_lock:
        if _online_depth == 0:
            _saved_offline = constants.HF_HUB_OFFLINE
            constants.HF_HUB_OFFLINE = False
        _online_depth += 1
    try:
        yield
    finally:
        with _online_lock:
            _online_depth -= 1
            if _online_depth == 0:
                constants.HF_HUB_OFFLINE = _saved_offline
