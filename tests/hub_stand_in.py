"""A small Hugging Face hub stand-in the tests start themselves (no network needed).

It serves what huggingface_hub 2.4.0 asks when `zooens.zoo.pull` runs:

- `GET /api/models/{repo_id}` and `GET /api/models/{repo_id}/revision/{revision}` (`HfApi.model_info`,
  `?blobs=True` gives each file's size, git blob id and, for weight files, `lfs.sha256`);
- `HEAD` and `GET /{repo_id}/resolve/{revision}/{filename}` with `X-Repo-Commit`, `ETag`,
  `X-Linked-Etag`, `X-Linked-Size`, `Content-Length`, `Accept-Ranges`; a `Range: bytes=N-` request gets
  206 with `Content-Range`. An unknown repository or file gets 404 with huggingface_hub's `X-Error-Code`.

`stall_after(repo, filename, n)` makes the next GET of that file send n body bytes, then block until
`release()`: a test waits for the partial file to hold n bytes, with no sleep as synchronisation.
`truncate(repo, filename, n, close=...)` makes GETs of that file end at byte n: with `close=False` the
response says so (`Content-Length` of the short body: a file served short), with `close=True` it announces
the whole body and the connection is closed after byte n (a dropped connection).

A repository added with `token=` is gated as on the hub: its metadata answers anyone, its files only a
request with `Authorization: Bearer <token>` (401 `GatedRepo` without a token, 403 with another one);
`private=True` asks the token of its metadata too (401 `RepoNotFound` without it, as the hub answers).

Every request is logged (`requests`: method, path, Range header, the request's headers, status, body
bytes sent), and `served_bytes(repo, filename)` counts the body bytes sent for a file across requests.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".npz", ".h5", ".onnx", ".msgpack")
_CHUNK = 4096


def git_blob_sha1(data: bytes) -> str:
    """git's object id of a file: sha1 of `blob <size>\\0` + content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def timm_weights(name: str, seed: int = 0) -> tuple[str, bytes, dict]:
    """(hub repo id, safetensors bytes, state dict) of random weights for timm's pretrained tag `name`
    (e.g. `test_vit.r160_in1k`), seeded: the repository the catalogue names, holding a file timm loads."""
    import timm
    import torch
    from safetensors.torch import save
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"{name!r} is not a timm pretrained tag with a hub repository")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(name.split(".", 1)[0], pretrained=False, num_classes=cfg.num_classes or 1000)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return cfg.hf_hub_id, save(state), state


@dataclass
class Request:
    """One request the stand-in answered."""

    method: str
    path: str
    range: str | None
    headers: dict[str, str] = field(default_factory=dict)  # as received, names lower-cased
    status: int = 0
    sent: int = 0  # body bytes sent

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass
class _File:
    data: bytes
    etag: str  # sha256 (LFS) or git blob id, as announced
    size: int  # as announced
    lfs: bool


@dataclass
class _Repo:
    commit: str
    files: dict[str, _File] = field(default_factory=dict)
    token: str | None = None  # gated: its files need `Authorization: Bearer <token>`
    private: bool = False  # its metadata needs the token too


class HubStandIn:
    """A threaded hub stand-in on 127.0.0.1 (a free port); use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[Request] = []
        self._served: dict[tuple[str, str], int] = {}
        self._stalls: dict[tuple[str, str], int] = {}
        self._truncations: dict[tuple[str, str], tuple[int, bool]] = {}
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content --------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        announce: dict[str, str] | None = None,
        announce_size: dict[str, int] | None = None,
        token: str | None = None,
        private: bool = False,
    ) -> str:
        """Serve `files` in `repo_id`; `announce` overrides the checksum announced for a file (a
        tampered file), `announce_size` its announced size; `token` gates the files (and with `private`
        the metadata too) behind that bearer token. Returns the repository's commit sha."""
        if private and not token:
            raise ValueError("a private repository needs a token")
        commit = hashlib.sha1(repo_id.encode() + b"".join(sorted(files.values())), usedforsecurity=False).hexdigest()
        repo = _Repo(commit, token=token, private=private)
        for name, data in files.items():
            lfs = name.endswith(LFS_SUFFIXES)
            etag = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
            etag = (announce or {}).get(name, etag)
            size = (announce_size or {}).get(name, len(data))
            repo.files[name] = _File(data, etag, size, lfs)
        with self._lock:
            self.repos[repo_id] = repo
        return commit

    def add_timm_model(self, name: str, seed: int = 0, **kwargs) -> dict:
        """Serve random weights for the timm tag `name` as its repository's `model.safetensors`; returns
        the state dict served. `kwargs` go to `add_repo` (`announce`, `announce_size`, `token`, `private`)."""
        repo_id, data, state = timm_weights(name, seed)
        self.add_repo(repo_id, {"model.safetensors": data}, **kwargs)
        return state

    def file_bytes(self, repo_id: str, filename: str) -> bytes:
        return self.repos[repo_id].files[filename].data

    def stall_after(self, repo_id: str, filename: str, nbytes: int) -> None:
        """The next GET of the file sends `nbytes` of its body, then blocks until `release()`."""
        with self._lock:
            self._release.clear()
            self._stalls[(repo_id, filename)] = nbytes

    def release(self) -> None:
        """Let every stalled response go on."""
        self._release.set()

    def truncate(self, repo_id: str, filename: str, nbytes: int, *, close: bool) -> None:
        """Every GET of the file ends at byte `nbytes` of the file (a Range request past it gets no body) until
        `untruncate`: `close=False` sends a `Content-Length` of the short body (served short, the response
        complete), `close=True` the full one, then closes the connection after byte `nbytes`."""
        with self._lock:
            self._truncations[(repo_id, filename)] = (nbytes, close)

    def untruncate(self, repo_id: str, filename: str) -> None:
        with self._lock:
            self._truncations.pop((repo_id, filename), None)

    # -- what was asked -------------------------------------------------------------------------

    def served_bytes(self, repo_id: str, filename: str) -> int:
        """Body bytes sent for the file, over every request."""
        with self._lock:
            return self._served.get((repo_id, filename), 0)

    def requests_for(self, repo_id: str, filename: str | None = None, method: str | None = None) -> list[Request]:
        """Logged requests of a file's resolve URL (or of a repository's files when `filename` is None)."""
        prefix = f"/{repo_id}/resolve/"
        with self._lock:
            found = [r for r in self.requests if r.path.startswith(prefix)]
        if filename is not None:
            found = [r for r in found if r.path.rsplit("/", 1)[-1] == filename]
        return [r for r in found if method is None or r.method == method]

    def api_requests(self, repo_id: str) -> list[Request]:
        """Logged requests of a repository's metadata (`/api/models/{repo_id}...`)."""
        prefix = f"/api/models/{repo_id}"
        with self._lock:
            return [r for r in self.requests if r.path == prefix or r.path.startswith(prefix + "/")]

    def body_requests(self) -> list[Request]:
        """Every GET of a file (not the metadata API)."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path]

    # -- server ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the stand-in is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubStandIn:
        stand_in = self

        class Handler(_Handler):
            hub = stand_in

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler --------------------------------------------------------------------

    def _log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _count(self, key: tuple[str, str], request: Request, n: int) -> None:
        with self._lock:
            self._served[key] = self._served.get(key, 0) + n
            request.sent += n

    def _take_stall(self, key: tuple[str, str]) -> int | None:
        with self._lock:
            return self._stalls.pop(key, None)

    def _truncation(self, key: tuple[str, str]) -> tuple[int, bool] | None:
        with self._lock:
            return self._truncations.get(key)


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, path, self.headers.get("Range"), headers)
        self.hub._log(request)
        try:
            if path.startswith("/api/models/"):
                self._model_info(request, path[len("/api/models/") :])
            elif "/resolve/" in path:
                self._resolve(request, path, body)
            else:
                self._error(request, 404, "EntryNotFound", f"no route {path}")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (killed mid-file)

    def _error(self, request: Request, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        request.status = status
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _refused(self, request: Request, repo_id: str, repo: _Repo, files: bool) -> bool:
        """Answer 401/403 when `repo` asks a token this request lacks; True when answered so."""
        if repo.token is None or not (files or repo.private):
            return False
        sent = request.authorization
        if sent == f"Bearer {repo.token}":
            return False
        if repo.private and not files:
            self._error(request, 401, "RepoNotFound", "Repository not found")
        elif sent is None:
            self._error(
                request,
                401,
                "GatedRepo",
                f"Access to model {repo_id} is restricted. You must have access to it and be authenticated to "
                "access it. Please log in.",
            )
        else:
            self._error(
                request,
                403,
                "GatedRepo",
                f"Access to model {repo_id} is restricted and you are not in the authorized list.",
            )
        return True

    def _model_info(self, request: Request, rest: str) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(request, 404, "RepoNotFound", f"Repository {repo_id} not found")
            return
        if self._refused(request, repo_id, repo, files=False):
            return
        if revision and revision not in ("main", repo.commit):
            self._error(request, 404, "RevisionNotFound", f"Revision {revision} not found")
            return
        siblings = []
        for name, f in repo.files.items():
            sib: dict = {"rfilename": name, "size": f.size, "blobId": git_blob_sha1(f.data)}
            if f.lfs:
                sib["lfs"] = {"sha256": f.etag, "size": f.size, "pointerSize": 134}
            else:
                sib["blobId"] = f.etag
            siblings.append(sib)
        data = json.dumps({"id": repo_id, "modelId": repo_id, "sha": repo.commit, "siblings": siblings}).encode()
        request.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _resolve(self, request: Request, path: str, body: bool) -> None:
        head, _, filename = path.lstrip("/").partition("/resolve/")
        revision, _, filename = filename.partition("/")
        repo = self.hub.repos.get(head)
        if repo is None:
            self._error(request, 404, "RepoNotFound", f"Repository {head} not found")
            return
        if self._refused(request, head, repo, files=True):
            return
        f = repo.files.get(filename)
        if f is None or revision not in ("main", repo.commit):
            self._error(request, 404, "EntryNotFound", f"{filename} not found at {revision}")
            return
        size = len(f.data)
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[len("bytes=") :].split("-", 1)[0] or 0)
            if start >= size:
                request.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        key = (head, filename)
        truncation = self.hub._truncation(key) if self.command == "GET" else None
        end_at = size  # the body ends here
        length = size - start  # the Content-Length sent
        if truncation is not None:
            end_at = max(start, min(size, truncation[0]))
            if not truncation[1]:
                length = end_at - start
        status = 206 if start else 200
        request.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{f.etag}"')
        if f.lfs:
            self.send_header("X-Linked-Etag", f'"{f.etag}"')
            self.send_header("X-Linked-Size", str(f.size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + length - 1}/{size}")
        self.end_headers()
        if not body:
            return
        stall = self.hub._take_stall(key)
        pos = start
        while pos < end_at:
            if stall is not None and pos - start >= stall:
                self.hub._release.wait()
                stall = None
            end = min(end_at, pos + _CHUNK)
            if stall is not None:
                end = min(end, start + stall)
            self.wfile.write(f.data[pos:end])
            self.wfile.flush()
            self.hub._count(key, request, end - pos)
            pos = end


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A running `HubStandIn`; HF_ENDPOINT points to it, HF_HOME is a fresh folder, offline mode is off."""
    home = tmp_path / "hf-home"
    home.mkdir()
    with HubStandIn() as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        monkeypatch.setenv("HF_HOME", str(home))
        for name in (
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "HF_TOKEN_PATH",
        ):
            monkeypatch.delenv(name, raising=False)
        yield stand_in
