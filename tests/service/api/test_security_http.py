"""The HTTP surface under attack (issue 10): refusals before the body, protected reads, headers, no internals, 4xx
for every malformed input. On SQLite and PostgreSQL (`db_url`); hostile inputs are made here."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
import time
import zlib

from fastapi.testclient import TestClient

from tests.service._tiny import register_tiny_zoo
from tests.service.api.conftest import imagefolder_zip, png_bytes

HOSTILE_SIZE = 200 * 1024 * 1024


# --------------------------------------------------------------------------------------
# helpers


def _asgi_call(app, method: str, path: str, headers: dict[str, str], body_chunks=None):
    """Run one request through the ASGI app; returns (status, headers, body, bytes the app pulled, receive calls).

    `body_chunks` is an iterator of byte chunks (endless for a hostile stream); every pull is counted.
    """
    pulled = {"bytes": 0, "calls": 0}
    chunks = iter(body_chunks or [])
    out: dict = {"status": None, "headers": [], "body": b""}

    async def receive():
        pulled["calls"] += 1
        try:
            chunk = next(chunks)
        except StopIteration:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled["bytes"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = message.get("headers", [])
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    return out["status"], dict(out["headers"]), out["body"], pulled


def _endless(chunk_size: int = 64 * 1024, head: bytes = b""):
    if head:
        yield head
    chunk = b"x" * chunk_size
    while True:
        yield chunk


MULTIPART_HEAD = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n'
"""The start of a well-formed upload whose file part never ends."""


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (its pixel data is never reached: the header is refused)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _set_env(monkeypatch, **values: str) -> None:
    from zooens.settings import get_settings

    for k, v in values.items():
        monkeypatch.setenv(f"ZOOENS_{k.upper()}", v)
    get_settings.cache_clear()


def _upload(client, auth, data: bytes, filename: str = "data.zip", **form):
    return client.post("/api/v1/datasets", files={"file": (filename, data, "application/zip")}, data=form, headers=auth)


# --------------------------------------------------------------------------------------
# 1. authentication and size before the body (case 7)


def test_write_without_token_is_refused_before_the_body(db_url):
    from zooens.service.app import create_app

    app = create_app()
    for path, ctype in (("/api/v1/datasets", "multipart/form-data; boundary=x"), ("/api/v1/jobs", "application/json")):
        status, headers, body, pulled = _asgi_call(
            app, "POST", path, {"content-type": ctype, "content-length": str(HOSTILE_SIZE)}, _endless()
        )
        assert status == 401 and b"Authorization: Bearer" in body, body
        assert pulled == {"bytes": 0, "calls": 0}
        assert headers[b"content-type"] == b"application/json"
    bad = _asgi_call(app, "POST", "/api/v1/jobs", {"authorization": "Bearer nope", "content-length": "10"}, _endless())
    assert bad[0] == 401 and b"unknown or revoked" in bad[2] and bad[3]["calls"] == 0
    # chunked, no Content-Length, no token: refused just the same
    status, _, _, pulled = _asgi_call(app, "POST", "/api/v1/datasets", {"transfer-encoding": "chunked"}, _endless())
    assert status == 401 and pulled["calls"] == 0


def test_too_large_is_refused_before_the_body_and_chunked_is_cut(db_url, token, monkeypatch):
    from zooens.service.app import create_app

    _set_env(monkeypatch, max_upload_bytes="100000", max_request_bytes="5000", max_predict_bytes="20000")
    app = create_app()
    auth = {"authorization": f"Bearer {token}"}
    for path, limit in (("/api/v1/datasets", 100000), ("/api/v1/jobs", 5000), ("/api/v1/ensembles/1/predict", 20000)):
        status, _, body, pulled = _asgi_call(
            app, "POST", path, {**auth, "content-length": str(HOSTILE_SIZE)}, _endless()
        )
        assert status == 413 and f"{limit:,}".encode() in body.replace(b"\\u202f", b""), (path, body)
        assert pulled["calls"] == 0
    # a chunked body is counted as it streams and cut at the limit: at most one chunk past it is ever pulled
    status, _, body, pulled = _asgi_call(
        app,
        "POST",
        "/api/v1/datasets",
        {**auth, "content-type": "multipart/form-data; boundary=x", "transfer-encoding": "chunked"},
        _endless(16 * 1024, MULTIPART_HEAD),
    )
    assert status == 413 and b"limit" in body
    assert 100000 + 64 * 1024 < pulled["bytes"] <= 100000 + 64 * 1024 + 16 * 1024 + len(MULTIPART_HEAD)
    status, _, _, pulled = _asgi_call(
        app,
        "POST",
        "/api/v1/jobs",
        {**auth, "content-type": "application/json", "transfer-encoding": "chunked"},
        _endless(1024),
    )
    assert status == 413 and pulled["bytes"] <= 5000 + 1024
    assert _asgi_call(app, "POST", "/api/v1/jobs", {**auth, "content-length": "12abc"})[0] == 400


def test_real_server_answers_401_without_reading_the_body(db_url):
    """Over a real socket: only the headers of a 200 MiB upload are sent; the 401 comes back at once."""
    import uvicorn

    from zooens.service.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                (
                    f"POST /api/v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                    f"boundary=x\r\nContent-Length: {HOSTILE_SIZE}\r\n\r\n"
                ).encode()
            )
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                part = sock.recv(65536)
                if not part:
                    break
                answer += part
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b'{"detail":' in answer and b"content-security-policy" in answer.lower()
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# --------------------------------------------------------------------------------------
# 2. ZOOENS_PROTECT_READS covers every page, image and read (case 6)


def _dataset_with_thumbnails(client, auth) -> int:
    r = _upload(client, auth, imagefolder_zip({"cats": 4, "dogs": 4}))
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    page = client.get(f"/dashboard/datasets/{dataset_id}", headers=auth)
    assert page.status_code == 200
    return dataset_id


def _pages(dataset_id: int) -> list[str]:
    return [
        "/",
        "/dashboard",
        "/dashboard/jobs",
        "/dashboard/jobs/1",
        "/dashboard/submit",
        "/dashboard/datasets",
        f"/dashboard/datasets/{dataset_id}",
        "/dashboard/zoo",
    ]


def _thumbnail_url(client, auth, dataset_id: int) -> str:
    page = client.get(f"/dashboard/datasets/{dataset_id}", headers=auth).text
    found = re.search(r'src="(/dashboard/datasets/\d+/images/[^"]+\.png)"', page)
    assert found, "the dataset page links its thumbnails"
    return found.group(1)


def test_protect_reads_covers_pages_thumbnails_and_api_with_a_cookie_for_reads_only(client, auth, token, monkeypatch):
    dataset_id = _dataset_with_thumbnails(client, auth)
    thumb = _thumbnail_url(client, auth, dataset_id)
    assert client.get(thumb).status_code == 200  # reads are public by default
    _set_env(monkeypatch, protect_reads="true")
    api_reads = [
        "/api/v1/jobs",
        "/api/v1/datasets",
        f"/api/v1/datasets/{dataset_id}",
        "/api/v1/zoo",
        "/api/v1/zoo/sets",
        "/api/v1/ensembles/1",
        "/api/v1/jobs/1/ranking",
    ]

    for path in _pages(dataset_id) + [thumb]:
        r = client.get(path)
        assert r.status_code == 401 and r.headers["content-type"].startswith("text/html"), path
        assert 'action="/dashboard/session"' in r.text and "cats" not in r.text
    for path in api_reads:
        r = client.get(path)
        assert r.status_code == 401 and r.headers["content-type"] == "application/json", path
        assert "Bearer" in r.json()["detail"]
    assert client.get("/dashboard/static/common.js").status_code == 200
    assert client.get("/api/v1/healthz").status_code == 200
    predict = client.post("/api/v1/ensembles/1/predict", files={"files": ("a.png", png_bytes(0))})
    assert predict.status_code == 401

    # a wrong token does not sign in
    refused = client.post("/dashboard/session", data={"token": "nope"}, follow_redirects=False)
    assert refused.status_code == 401 and "set-cookie" not in refused.headers
    # sign in: an HttpOnly, SameSite=Strict cookie on /, then every page, image and API read works
    signed = client.post(
        "/dashboard/session", data={"token": token, "next": f"/dashboard/datasets/{dataset_id}"}, follow_redirects=False
    )
    assert signed.status_code == 303 and signed.headers["location"] == f"/dashboard/datasets/{dataset_id}"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; https sets it
    for path in _pages(dataset_id) + [thumb] + api_reads[:4]:
        assert client.get(path).status_code == 200, path
    # ... but never a write: the cookie is not a bearer token (no cross-site writes)
    assert client.post("/api/v1/jobs", json={"dataset_id": dataset_id}).status_code == 401
    assert _upload(client, {}, imagefolder_zip({"a": 2, "b": 2})).status_code == 401
    assert client.post("/api/v1/ensembles/1/predict", files={"files": ("a.png", png_bytes(0))}).status_code == 401
    # an open redirect is not followed
    evil = client.post("/dashboard/session", data={"token": token, "next": "//evil.example/x"}, follow_redirects=False)
    assert evil.headers["location"] == "/dashboard/jobs"
    # sign out clears the cookie
    out = client.post("/dashboard/session/end", follow_redirects=False)
    assert out.status_code == 303 and 'zooens_session=""' in out.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/dashboard/jobs").status_code == 401


def test_https_sign_in_sets_a_secure_cookie(db_url, token, monkeypatch):
    from zooens.service.app import create_app

    _set_env(monkeypatch, protect_reads="true")
    with TestClient(create_app(), base_url="https://zooens.test") as client:
        signed = client.post("/dashboard/session", data={"token": token}, follow_redirects=False)
        assert signed.status_code == 303 and "Secure" in signed.headers["set-cookie"]


# --------------------------------------------------------------------------------------
# 3. headers on every answer, no inline script or style (case 13)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _assert_security_headers(r) -> None:
    if re.search(r"/dashboard/jobs/\d+$", str(r.request.url)):  # plotly draws with inline styles; scripts stay strict
        plot_csp = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
        assert r.headers["content-security-policy"] == plot_csp
    else:
        assert r.headers["content-security-policy"] == CSP, r.request.url
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_security_headers_and_no_inline_code_on_every_page(client, auth):
    dataset_id = _dataset_with_thumbnails(client, auth)
    thumb = _thumbnail_url(client, auth, dataset_id)
    for path in _pages(dataset_id) + ["/dashboard/session"]:
        r = client.get(path)
        assert r.status_code == 200, path
        _assert_security_headers(r)
        html = r.text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"inline script on {path}"
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), f"inline event handler on {path}"
        assert not re.search(r"\sstyle\s*=", html, re.I), f"inline style on {path}"
        assert "javascript:" not in html.lower()
    for path in (
        "/api/v1/jobs",
        "/api/v1/healthz",
        "/dashboard/static/common.js",
        "/dashboard/static/dashboard.css",
        "/dashboard/static/plotly.min.js",
        thumb,
        "/api/v1/jobs/999999",
        "/dashboard/datasets/999999",
    ):
        _assert_security_headers(client.get(path))
    _assert_security_headers(client.post("/api/v1/jobs", json={}))  # 401
    docs = client.get("/docs")
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]


# --------------------------------------------------------------------------------------
# 4. no internals in answers (case 12)


def test_dataset_answers_carry_no_server_paths(client, auth, zooens_home):
    r = _upload(client, auth, imagefolder_zip({"cats": 3, "dogs": 3}))
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"id", "name", "classes", "counts", "fingerprint", "created_at"}
    home = str(zooens_home.resolve())
    for text in (
        r.text,
        client.get("/api/v1/datasets").text,
        client.get(f"/api/v1/datasets/{body['id']}").text,
        client.get(f"/dashboard/datasets/{body['id']}").text,
    ):
        assert home not in text and str(zooens_home) not in text and '"source"' not in text
    refused = _upload(client, auth, b"not a zip")
    assert refused.status_code == 422 and home not in refused.text and "/tmp" not in refused.text


def test_unexpected_errors_answer_a_generic_500_with_headers(db_url, caplog):
    from zooens.service.app import create_app

    app = create_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret /srv/zooens/internal/path and postgresql://user:pw@db/zooens")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert "secret" not in r.text and "/srv" not in r.text and "postgresql" not in r.text
    assert "log" in r.json()["detail"]
    _assert_security_headers(r)
    assert "secret /srv/zooens" in caplog.text  # the traceback is logged


# --------------------------------------------------------------------------------------
# 5. predict bounded (cases 2, 11)


def test_predict_limits_files_bytes_and_pixels(client, monkeypatch):
    _set_env(monkeypatch, max_predict_files="3", max_predict_bytes="200000")
    many = [("files", (f"{i}.png", png_bytes(i))) for i in range(4)]
    r = client.post("/api/v1/ensembles/1/predict", files=many)
    assert r.status_code == 413 and "ZOOENS_MAX_PREDICT_FILES" in r.json()["detail"]
    big = client.post("/api/v1/ensembles/1/predict", files={"files": ("a.png", b"\0" * 300_000)})
    assert big.status_code == 413 and "limit of 200,000 bytes" in big.json()["detail"]
    huge = client.post("/api/v1/ensembles/1/predict", files={"files": ("huge.png", _png_header_only(30000, 30000))})
    assert huge.status_code == 413 and "30000x30000" in huge.json()["detail"], huge.text
    not_image = client.post("/api/v1/ensembles/1/predict", files={"files": ("x\0y/../a.png", b"GIF89a-junk")})
    assert not_image.status_code == 422 and "not a readable image" in not_image.json()["detail"]
    assert "\0" not in not_image.json()["detail"] and ".." not in not_image.json()["detail"]
    # a readable, small image reaches the ensemble lookup (none here): 404, not 500
    assert client.post("/api/v1/ensembles/1/predict", files={"files": ("a.png", png_bytes(0))}).status_code == 404


# --------------------------------------------------------------------------------------
# 7. no 500s on malformed input; the catalogue is built once (cases 11, 13)


def test_malformed_inputs_answer_4xx_json(client, auth):
    long_name = "n" * 300
    cases = [
        client.post(
            "/api/v1/datasets",
            content=b"--x\r\nnonsense",
            headers={**auth, "content-type": "multipart/form-data; boundary=x"},
        ),
        client.post("/api/v1/datasets", content=b"whatever", headers={**auth, "content-type": "multipart/form-data"}),
        client.post("/api/v1/datasets", data={"name": "x"}, headers=auth),  # no file
        _upload(client, auth, imagefolder_zip({"a": 2, "b": 2}), name="bad\0name"),
        client.post("/api/v1/datasets/register", json={"path": "/data/\0/x"}, headers=auth),
        client.post("/api/v1/datasets/register", json={"path": ""}, headers=auth),
        client.post("/api/v1/datasets/register", json={"path": "x", "name": "a\0b"}, headers=auth),
        client.post("/api/v1/jobs", content=b"{not json", headers={**auth, "content-type": "application/json"}),
        client.post("/api/v1/jobs", json={"dataset_id": 2**70}, headers=auth),
        client.get("/api/v1/jobs", params={"status": "queued\0"}),
        client.get("/api/v1/jobs", params={"limit": str(10**30)}),
        client.get("/api/v1/zoo", params={"filter": "a" * 300}),
        client.get("/api/v1/zoo/" + "\u00e9\u6f22" * 200),
        client.get("/api/v1/zoo/a%00b"),
        client.get("/dashboard/static/a%00b.js"),
        client.get("/dashboard/jobs/" + "9" * 30),
        client.get("/dashboard/zoo", params={"page": str(10**30)}),
        client.get("/dashboard/datasets/1/images/train/" + "9" * 30 + ".png"),
        client.get("/dashboard/datasets/1/images/tr%00ain/1.png"),
        client.post(
            "/api/v1/ensembles/1/predict", content=b"--x--", headers={"content-type": "multipart/form-data; boundary=x"}
        ),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith(("application/json", "text/html")), r.request.url
    # unicode and 300-character file names are stored under a bounded, clean name (PostgreSQL too)
    ok = _upload(client, auth, imagefolder_zip({"a": 2, "b": 2}), filename="d\u00e9j\u00e0-\u6f22\u5b57.zip")
    assert ok.status_code == 201 and ok.json()["name"] == "d\u00e9j\u00e0-\u6f22\u5b57"
    long_upload = _upload(client, auth, imagefolder_zip({"a": 2, "b": 3}), filename=long_name + ".zip")
    assert long_upload.status_code == 201 and len(long_upload.json()["name"]) <= 200


def test_the_catalogue_is_built_once_and_warmed_at_start_up(db_url):
    from zooens.service import reports
    from zooens.service.app import create_app

    with TestClient(create_app()) as client:
        first = client.get("/api/v1/zoo", params={"limit": 5})
        assert first.status_code == 200 and first.json()["count"] > 1000
    built = reports.catalogue()
    start = time.perf_counter()
    assert reports.catalogue() is built  # cached: the same rows, no rebuilding
    assert time.perf_counter() - start < 0.5
    from zooens.service.dashboard.router import catalogue_rows

    assert catalogue_rows() is catalogue_rows() and len(catalogue_rows()) == len(built)


def test_zoo_answers_name_a_user_weight_file_without_its_server_path(client, zooens_home):
    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    one = client.get("/api/v1/zoo/tiny-resnet")
    assert one.status_code == 200, one.text
    source = one.json()["facts"]["source"]
    assert source["kind"] == "file" and source["path"] and "/" not in source["path"]
    listed = client.get("/api/v1/zoo", params={"filter": "tiny-resnet"})
    for body in (one.text, listed.text):
        assert str(zooens_home) not in body
