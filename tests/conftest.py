"""Shared test set-up: offline, a private ZOOENS_HOME, seeded, quiet progress bars."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="zooens-test-home-"))
os.environ["ZOOENS_HOME"] = str(_SESSION_HOME)
# a test that unsets ZOOENS_HOME gets the user's default home (platformdirs): keep it out of the real one too
os.environ["XDG_DATA_HOME"] = str(_SESSION_HOME / "xdg-data")
os.environ.pop("ZOOENS_DATABASE_URL", None)

import huggingface_hub.constants  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tests.hub_stand_in import hub  # noqa: E402, F401  the `hub` fixture: a local Hugging Face hub stand-in
from zooens.settings import get_settings  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
POSTGRES_ADMIN_URL = os.environ.get("ZOOENS_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture
def zooens_home(tmp_path, monkeypatch) -> Path:
    """A fresh ZOOENS_HOME for one test; settings re-read."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ZOOENS_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache and torch hub dir of our own."""
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch-hub"))
    yield cache
    torch.hub.set_dir(old)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
