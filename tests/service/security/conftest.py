"""A registry (SQLite and PostgreSQL), the settings pointing at the test's ZOOENS_HOME, and checks
that a refused input left nothing behind."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from zooens.service import registry
from zooens.service.db.session import session_scope
from zooens.service.uploads import ingest_upload
from zooens.settings import Settings, get_settings


@pytest.fixture
def settings(db_url, zooens_home) -> Settings:
    return get_settings()


def limited(settings: Settings, **limits: Any) -> Settings:
    """The same settings with some limits changed."""
    return settings.model_copy(update=limits)


def ingest(settings: Settings, data: bytes, filename: str = "d.zip", name: str | None = None):
    with session_scope() as s:
        return ingest_upload(s, io.BytesIO(data), filename, settings, name=name)


def assert_nothing_left(settings: Settings) -> None:
    """No dataset row, no stored or staging folder, no thumbnails."""
    with session_scope() as s:
        assert registry.list_datasets(s)[1] == 0
    for folder in (settings.home / "datasets", settings.home / "thumbnails"):
        assert not folder.exists() or sorted(p.name for p in folder.iterdir()) == []


def assert_no_server_path(message: str, *paths: Path) -> None:
    for path in paths:
        assert str(path) not in message, message


@pytest.fixture
def token(db_url) -> str:
    """A valid API token in the test's registry."""
    with session_scope() as s:
        plain, _ = registry.create_token(s, "security-tester")
    return plain
