"""A live zooens server (API, worker and dashboard) and a headless Chromium for the browser tests."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.service._tiny import register_tiny_zoo

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = (
    Path(os.environ.get("ZOOENS_TEST_ARTIFACTS") or Path(__file__).resolve().parents[3] / "artifacts") / "screenshots"
)
"""Where the browser tests save their screenshots: $ZOOENS_TEST_ARTIFACTS/screenshots when that is set, else the
repository's artifacts/screenshots (git-ignored)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving create_app(with_worker=True) in a thread, on a free local port."""

    def __init__(self, home: Path) -> None:
        import uvicorn

        from zooens.service.app import create_app

        self.home = home
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(with_worker=True), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="live-uvicorn")

    def start(self, timeout: float = 60.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/api/v1/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the live server did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def get_json(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def live_server():
    """A fresh ZOOENS_HOME with the tiny user zoo registered and one API token; the server runs for one module.

    Module scope, not package scope: the in-process worker reads the settings (ZOOENS_HOME, hence its database)
    whenever it polls, so a server left running while a later module's tests point ZOOENS_HOME at a fresh,
    empty home made its worker poll a database without tables (`no such table: jobs` in a thread)."""
    from zooens.settings import get_settings

    home = Path(tempfile.mkdtemp(prefix="zooens-dashboard-home-"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOOENS_HOME", str(home))
        mp.setenv("ZOOENS_HEARTBEAT_SECONDS", "1")
        get_settings.cache_clear()
        from zooens.service import registry
        from zooens.service.db.session import session_scope, upgrade_to_head

        upgrade_to_head()
        register_tiny_zoo(home / "weights")
        with session_scope() as s:
            token, _ = registry.create_token(s, "dashboard-tests")
        server = LiveServer(home).start()
        server.token = token
        try:
            yield server
        finally:
            server.stop()
            get_settings.cache_clear()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def digits_zip(tmp_path_factory) -> Path:
    """An ImageFolder zip of scikit-learn digits: train/ (60 a class) and test/ (15 a class), 32 px PNGs."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path_factory.mktemp("upload") / "digits-small.zip"
    taken: dict[tuple[str, int], int] = {}
    with zipfile.ZipFile(path, "w") as zf:
        for i, (img, label) in enumerate(zip(digits.images, digits.target, strict=False)):
            n_train = taken.get(("train", label), 0)
            n_test = taken.get(("test", label), 0)
            if n_train < 60:
                split = "train"
            elif n_test < 15:
                split = "test"
            else:
                continue
            taken[(split, label)] = taken.get((split, label), 0) + 1
            pixels = (np.asarray(img) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels, mode="L").resize((32, 32), Image.NEAREST).save(buf, format="PNG")
            zf.writestr(f"{split}/{label}/{i:04d}.png", buf.getvalue())
    return path


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM) or not os.path.exists(CHROMEDRIVER):
        pytest.skip(
            f"headless Chromium needs {CHROMIUM} and {CHROMEDRIVER} "
            "(Debian packages chromium, chromium-driver; `make setup` installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="zooens-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
