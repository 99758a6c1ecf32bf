"""`zooens.zoo._pull`: weights pulled from a hub stand-in with the real huggingface_hub client.

Resumption after SIGKILL and concurrent pulls run in subprocesses; they synchronise on the stand-in's
stall (`stall_after` / `release`), on the partial file's size and on the events the subprocess prints,
never on sleeps (the polls below only re-check a condition until a generous failure guard).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import try_to_load_from_cache

from tests.hub_stand_in import HubStandIn
from zooens.errors import OfflineError, PullError, WeightsMismatchError
from zooens.zoo import create_model, get_weight_set
from zooens.zoo._hubenv import hub_cache_dir
from zooens.zoo._loading import clear_cache
from zooens.zoo._pull import PARTIAL_SUFFIX, PullEvent, pull
from zooens.zoo._types import WeightSet, WeightSource

ROOT = Path(__file__).resolve().parents[2]
GUARD_S = 180.0  # a failure guard only: every wait below ends as soon as its condition holds
CHUNK = 4096  # huggingface_hub writes what it receives in chunks of DOWNLOAD_CHUNK_SIZE; small in subprocesses
STALL = 16 * CHUNK

VIT = "test_vit.r160_in1k"
CONVNEXT = "test_convnext.r160_in1k"

SCRIPT = """
import dataclasses, json, sys
import huggingface_hub.constants as constants
constants.DOWNLOAD_CHUNK_SIZE = int(sys.argv[2])  # small chunks: a partial file grows as bytes arrive
from zooens.zoo._pull import pull
def show(event):
    print(json.dumps({"event": dataclasses.asdict(event)}), flush=True)
report = pull(sys.argv[1], progress=False, on_progress=show)
print(json.dumps({"report": report.to_dict()}), flush=True)
sys.exit(0 if report.ok else 1)
"""


def _wait_for(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + GUARD_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the pull subprocess ended ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


class PullProcess:
    """`pull(name)` in a subprocess; its stdout lines (JSON events, then the report) are queued."""

    def __init__(self, name: str) -> None:
        env = dict(os.environ)
        env["HF_HUB_DOWNLOAD_TIMEOUT"] = "600"  # a stall must not end in a read timeout and a retry
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, name, str(CHUNK)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        self.report: dict | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def wait_for_event(self, state: str) -> dict:
        deadline = time.monotonic() + GUARD_S
        while True:
            try:
                msg = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {state!r} event from the pull subprocess") from None
            if "event" in msg and msg["event"]["state"] == state:
                return msg["event"]
            if "report" in msg:
                raise AssertionError(f"the pull ended before a {state!r} event: {msg}")

    def finish(self) -> tuple[int, dict]:
        rc = self.proc.wait(timeout=GUARD_S)
        self._reader.join(timeout=GUARD_S)
        while not self.lines.empty():
            msg = self.lines.get()
            if "report" in msg:
                self.report = msg["report"]
        assert self.report is not None, self.proc.stderr.read()
        return rc, self.report

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=GUARD_S)


def _storage(repo: str) -> Path:
    return hub_cache_dir() / f"models--{repo.replace('/', '--')}"


def _blob_and_partial(repo: str, data: bytes) -> tuple[Path, Path]:
    digest = hashlib.sha256(data).hexdigest()
    blobs = _storage(repo) / "blobs"
    return blobs / digest, blobs / f"{digest}{PARTIAL_SUFFIX}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _same_state(model: torch.nn.Module, served: dict[str, torch.Tensor], num_classes: int) -> None:
    own = model.state_dict()
    for key, tensor in own.items():
        assert torch.equal(tensor, served[key]), key
    assert len(own) == len(served) - (0 if num_classes else 2)  # an embedder drops the classifier head


def test_pull_puts_the_served_weights_where_timm_and_zooens_find_them(hub: HubStandIn) -> None:
    served = hub.add_timm_model(VIT, seed=3)
    repo = get_weight_set(VIT).source.hub_id
    assert not get_weight_set(VIT).weights_present
    events: list[PullEvent] = []

    report = pull(VIT, progress=False, on_progress=events.append)

    assert report.ok and report.pulled == [VIT] and report.present == [] and report.failed == []
    outcome = report.outcomes[0]
    data = hub.file_bytes(repo, "model.safetensors")
    assert outcome.bytes == len(data) and outcome.files[0].endswith("model.safetensors")
    assert events[-1] == PullEvent(VIT, "model.safetensors", len(data), len(data), "done")
    ws = get_weight_set(VIT)
    assert ws.weights_present
    path = ws.source.locate()
    blob, partial = _blob_and_partial(repo, data)
    assert path.resolve() == blob and blob.read_bytes() == data and not partial.exists()
    assert (_storage(repo) / "refs" / "main").read_text() == hub.repos[repo].commit
    assert [p.name for p in blob.parent.iterdir()] == [blob.name]  # no temp file left
    assert try_to_load_from_cache(repo, "model.safetensors", cache_dir=hub_cache_dir()) == str(path)
    classifier = create_model(VIT, num_classes=1000)
    _same_state(classifier, served, 1000)
    _same_state(create_model(VIT), served, 0)
    json.dumps(report.to_dict())


def test_a_pull_killed_mid_file_resumes_from_its_partial_bytes(hub: HubStandIn) -> None:
    hub.add_timm_model(VIT, seed=4)
    repo = get_weight_set(VIT).source.hub_id
    data = hub.file_bytes(repo, "model.safetensors")
    blob, partial = _blob_and_partial(repo, data)
    hub.stall_after(repo, "model.safetensors", STALL)

    first = PullProcess(VIT)
    _wait_for(lambda: _size(partial) == STALL, f"the partial file to hold {STALL} bytes", first.proc)
    first.kill()  # SIGKILL mid-file
    hub.release()
    assert _size(partial) == STALL and not blob.exists()

    report = pull(VIT, progress=False)

    assert report.pulled == [VIT] and report.outcomes[0].bytes == len(data) - STALL
    gets = hub.requests_for(repo, "model.safetensors", "GET")
    assert gets[0].range is None and gets[-1].range == f"bytes={STALL}-"
    assert gets[-1].status == 206 and gets[-1].sent == len(data) - STALL
    assert blob.read_bytes() == data and not partial.exists()
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert get_weight_set(VIT).weights_present


def test_a_file_whose_checksum_differs_from_the_announced_one_is_refused(hub: HubStandIn) -> None:
    wrong = "0" * 64
    hub.add_timm_model(VIT, seed=5, announce={"model.safetensors": wrong})
    hub.add_timm_model(CONVNEXT, seed=5)
    repo = get_weight_set(VIT).source.hub_id
    actual = hashlib.sha256(hub.file_bytes(repo, "model.safetensors")).hexdigest()

    report = pull([VIT, CONVNEXT], progress=False)

    assert not report.ok and report.failed == [VIT] and report.pulled == [CONVNEXT]  # the other goes on
    message = report.outcomes[0].message
    assert wrong in message and actual in message and "announced" in message
    storage = _storage(repo)
    assert list((storage / "blobs").iterdir()) == []  # no blob, no partial
    assert not (storage / "snapshots").exists() or not any((storage / "snapshots").rglob("*.safetensors"))
    assert not get_weight_set(VIT).weights_present


def test_a_pulled_file_changed_in_the_cache_is_never_loaded(hub: HubStandIn) -> None:
    hub.add_timm_model(VIT, seed=6)
    assert pull(VIT, progress=False).ok
    path = get_weight_set(VIT).source.locate()
    create_model(VIT)  # fine as pulled
    blob = path.resolve()
    raw = bytearray(blob.read_bytes())
    raw[-1] ^= 0xFF
    blob.write_bytes(bytes(raw))
    clear_cache()
    with pytest.raises(WeightsMismatchError, match=f"zooens zoo pull {VIT}"):
        create_model(VIT)


def test_offline_mode_refuses_at_once_without_a_request(hub: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_timm_model(VIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="offline") as exc:
        pull(VIT, progress=False)
    assert "HF_HOME" in str(exc.value) and "zooens zoo pull" in str(exc.value)
    assert hub.requests == []


def test_an_unreachable_hub_is_offline_within_seconds(hub: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(OfflineError, match=f"Cannot reach the hub at http://127.0.0.1:{port}"):
        pull(VIT, progress=False)
    assert time.monotonic() - start < 15


def test_two_concurrent_pulls_download_the_file_once(hub: HubStandIn) -> None:
    hub.add_timm_model(CONVNEXT, seed=7)
    repo = get_weight_set(CONVNEXT).source.hub_id
    data = hub.file_bytes(repo, "model.safetensors")
    blob, partial = _blob_and_partial(repo, data)
    hub.stall_after(repo, "model.safetensors", STALL)

    first = PullProcess(CONVNEXT)
    _wait_for(lambda: _size(partial) == STALL, "the first pull to be mid-file", first.proc)
    second = PullProcess(CONVNEXT)
    second.wait_for_event("waiting")  # it holds no lock and waits on the first's
    hub.release()

    rc1, report1 = first.finish()
    rc2, report2 = second.finish()
    assert (rc1, rc2) == (0, 0), (report1, report2)
    assert report1["pulled"] == [CONVNEXT] and report2["present"] == [CONVNEXT]
    assert hub.served_bytes(repo, "model.safetensors") == len(data)
    assert len(hub.requests_for(repo, "model.safetensors", "GET")) == 1
    assert blob.read_bytes() == data and not partial.exists()


def test_not_enough_disk_space_is_refused_before_any_download(hub: HubStandIn) -> None:
    hub.add_timm_model(VIT)
    hub.add_timm_model(CONVNEXT, announce_size={"model.safetensors": 10**18})
    with pytest.raises(PullError, match="disk space") as exc:
        pull([VIT, CONVNEXT], progress=False)
    assert str(10**18 + len(hub.file_bytes(get_weight_set(VIT).source.hub_id, "model.safetensors"))) in str(exc.value)
    assert hub.body_requests() == [] and not any(r.method == "HEAD" for r in hub.requests)


def test_a_pattern_pulls_every_match_and_present_weights_are_not_fetched_again(hub: HubStandIn) -> None:
    names = ["test_vit.r160_in1k", "test_vit2.r160_in1k", "test_vit3.r160_in1k"]
    for seed, name in enumerate(names):
        hub.add_timm_model(name, seed=seed)

    report = pull("test_vit*", progress=False, max_workers=2)
    assert sorted(report.pulled) == names and report.ok
    assert len(hub.body_requests()) == 3

    before = len(hub.requests)
    again = pull("test_vit*", progress=False)
    assert sorted(again.present) == names and again.pulled == [] and again.ok
    assert len(hub.requests) == before  # nothing asked of the hub
    assert all(get_weight_set(n).weights_present for n in names)


def test_what_the_hub_cannot_serve_is_reported(hub: HubStandIn) -> None:
    url_only = WeightSet(
        name="test_vit.url_only",
        arch="test_vit",
        tag="url_only",
        origin="catalogue",
        source=WeightSource(kind="hub", url="https://example.invalid/test_vit.pth"),
    )
    report = pull([url_only, VIT], progress=False)  # VIT's repository is not on this hub
    assert report.failed == ["test_vit.url_only", VIT]
    assert "no Hugging Face hub repository" in report.outcomes[0].message
    assert "404" in report.outcomes[1].message
    embedded = pull("embedded", progress=False)
    assert all(o.status in ("present", "failed") for o in embedded.outcomes)
    assert hub.body_requests() == []


# --- the Hugging Face token -------------------------------------------------------------------------

TOKEN = "hf_zooens_test_token"


def _hub_requests(hub: HubStandIn, repo: str) -> list:
    """Every request about `repo`: its metadata, the HEAD and GET of its files."""
    return hub.api_requests(repo) + hub.requests_for(repo)


def test_hf_token_is_sent_as_a_bearer_header_on_every_request(hub: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_timm_model(VIT, seed=8, token=TOKEN, private=True)  # metadata and file both need the token
    repo = get_weight_set(VIT).source.hub_id
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # set after huggingface_hub's import: read at call time

    report = pull(VIT, progress=False)

    assert report.pulled == [VIT], report.outcomes
    asked = _hub_requests(hub, repo)
    assert {(r.method, "/resolve/" in r.path) for r in asked} == {("GET", False), ("HEAD", True), ("GET", True)}
    assert all(r.authorization == f"Bearer {TOKEN}" for r in asked), [(r.path, r.authorization) for r in asked]
    assert get_weight_set(VIT).weights_present


@pytest.mark.parametrize("private", [False, True], ids=["gated", "private"])
def test_a_gated_repository_fails_clearly_without_the_token_and_pulls_with_it(
    hub: HubStandIn, monkeypatch: pytest.MonkeyPatch, private: bool
) -> None:
    hub.add_timm_model(VIT, seed=9, token=TOKEN, private=private)
    hub.add_timm_model(CONVNEXT, seed=9)  # open: pulled in the same call
    repo = get_weight_set(VIT).source.hub_id

    report = pull([VIT, CONVNEXT], progress=False)

    assert report.failed == [VIT] and report.pulled == [CONVNEXT]
    message = report.outcomes[0].message
    assert "401" in message and "HF_TOKEN" in message and "no Hugging Face token was sent" in message, message
    assert all(r.authorization is None for r in _hub_requests(hub, repo))
    assert hub.served_bytes(repo, "model.safetensors") == 0
    assert not _storage(repo).exists() or list((_storage(repo) / "blobs").glob("*")) == []
    assert not get_weight_set(VIT).weights_present

    monkeypatch.setenv("HF_TOKEN", "hf_another_token")  # a token without access
    refused = pull(VIT, progress=False).outcomes[0]
    assert refused.status == "failed" and ("401" if private else "403") in refused.message
    assert "has no access" in refused.message and "hf_another_token" not in refused.message  # never echoed

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert pull(VIT, progress=False).pulled == [VIT]
    assert get_weight_set(VIT).weights_present


def test_the_token_file_of_hf_home_is_used_and_an_explicit_token_wins(
    hub: HubStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hub.add_timm_model(VIT, seed=10, token=TOKEN)
    hub.add_timm_model(CONVNEXT, seed=10, token="hf_explicit")
    (tmp_path / "hf-home" / "token").write_text(TOKEN + "\n")  # what `hf auth login` writes

    assert pull(VIT, progress=False).pulled == [VIT]
    assert {r.authorization for r in hub.requests_for(get_weight_set(VIT).source.hub_id)} == {f"Bearer {TOKEN}"}

    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert pull(CONVNEXT, progress=False, token="hf_explicit").pulled == [CONVNEXT]
    assert {r.authorization for r in hub.requests_for(get_weight_set(CONVNEXT).source.hub_id)} == {"Bearer hf_explicit"}


def test_token_false_sends_none_and_token_true_without_one_is_refused(
    hub: HubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_timm_model(VIT, seed=11)
    with pytest.raises(PullError, match="token=True but no Hugging Face token is set: set HF_TOKEN"):
        pull(VIT, progress=False, token=True)
    assert hub.requests == []  # refused before asking the hub

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert pull(VIT, progress=False, token=False).pulled == [VIT]
    assert hub.requests and all(r.authorization is None for r in hub.requests)


# --- files served short -----------------------------------------------------------------------------


class _NoSleep:
    """`time` for huggingface_hub's download retries, without their one-second pauses."""

    def __getattr__(self, name: str):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


def test_a_file_served_short_is_refused_and_deleted(hub: HubStandIn) -> None:
    hub.add_timm_model(VIT, seed=12)
    hub.add_timm_model(CONVNEXT, seed=12)
    repo = get_weight_set(VIT).source.hub_id
    data = hub.file_bytes(repo, "model.safetensors")
    half = len(data) // 2
    hub.truncate(repo, "model.safetensors", half, close=False)  # a complete response, of half the file

    report = pull([VIT, CONVNEXT], progress=False)

    assert report.failed == [VIT] and report.pulled == [CONVNEXT] and not report.ok
    message = report.outcomes[0].message
    assert f"announced {len(data)} bytes" in message and f"sent {half}" in message and "deleted" in message, message
    assert hub.served_bytes(repo, "model.safetensors") == half
    storage = _storage(repo)
    assert list((storage / "blobs").iterdir()) == []  # no blob, no partial
    assert not (storage / "snapshots").exists() or not any((storage / "snapshots").rglob("*"))
    assert not (storage / "refs").exists()
    assert not get_weight_set(VIT).weights_present
    assert try_to_load_from_cache(repo, "model.safetensors", cache_dir=hub_cache_dir()) is None

    hub.untruncate(repo, "model.safetensors")
    again = pull(VIT, progress=False)
    assert again.pulled == [VIT] and again.outcomes[0].bytes == len(data)  # from the start: nothing was kept
    assert hub.requests_for(repo, "model.safetensors", "GET")[-1].range is None
    assert get_weight_set(VIT).source.locate().read_bytes() == data


def test_a_connection_dropped_mid_file_is_never_installed_and_the_next_pull_resumes(
    hub: HubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants
    import huggingface_hub.file_download

    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)  # bytes reach the file as they come
    monkeypatch.setattr(huggingface_hub.file_download, "time", _NoSleep())
    hub.add_timm_model(VIT, seed=13)
    repo = get_weight_set(VIT).source.hub_id
    data = hub.file_bytes(repo, "model.safetensors")
    blob, partial = _blob_and_partial(repo, data)
    hub.truncate(repo, "model.safetensors", STALL, close=True)  # every GET: the connection closes at byte STALL

    report = pull(VIT, progress=False)

    assert report.failed == [VIT], report.outcomes
    assert "broke off" in report.outcomes[0].message and "run the pull again" in report.outcomes[0].message
    gets = hub.requests_for(repo, "model.safetensors", "GET")
    assert gets[0].range is None and len(gets) > 1 and gets[-1].range == f"bytes={STALL}-"  # huggingface_hub retried
    assert not blob.exists() and _size(partial) == STALL  # kept to resume, never linked
    assert not (_storage(repo) / "snapshots").exists() or not any((_storage(repo) / "snapshots").rglob("*"))
    assert not get_weight_set(VIT).weights_present

    hub.untruncate(repo, "model.safetensors")
    again = pull(VIT, progress=False)
    assert again.pulled == [VIT] and again.outcomes[0].bytes == len(data) - STALL
    last = hub.requests_for(repo, "model.safetensors", "GET")[-1]
    assert last.range == f"bytes={STALL}-" and last.status == 206 and last.sent == len(data) - STALL
    assert blob.read_bytes() == data and not partial.exists()
