"""Where zooens keeps its registry when ZOOENS_HOME is not set: the user's folder, the same from any directory,
or a `.zooens` folder the current directory already holds; never a new registry per directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from zooens.settings import Settings, user_home


@pytest.fixture
def no_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ZOOENS_HOME unset, the user's data folder under tmp_path (XDG_DATA_HOME), and a fresh current directory."""
    monkeypatch.delenv("ZOOENS_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_the_default_home_is_the_users_data_folder(no_home, tmp_path):
    settings = Settings()
    assert settings.home == user_home() == tmp_path / "xdg" / "zooens"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'xdg' / 'zooens' / 'zooens.db'}"
    assert settings.home_origin.startswith("the user's data folder")


def test_a_zooens_folder_in_the_current_directory_is_kept(no_home):
    (no_home / ".zooens").mkdir()
    settings = Settings()
    assert settings.home == no_home / ".zooens" and settings.home.is_absolute()
    assert ".zooens folder" in settings.home_origin


def test_zooens_home_wins(no_home, tmp_path, monkeypatch):
    (no_home / ".zooens").mkdir()
    monkeypatch.setenv("ZOOENS_HOME", str(tmp_path / "mine"))
    settings = Settings()
    assert (settings.home, settings.home_origin) == (tmp_path / "mine", "ZOOENS_HOME")


def test_commands_in_two_new_directories_share_one_registry(no_home, tmp_path, monkeypatch):
    """The issue: a command in a new directory made a new, empty registry there (`./.zooens`)."""
    from typer.testing import CliRunner

    from zooens.service.cli import app
    from zooens.service.db.session import dispose_engines
    from zooens.settings import get_settings

    outputs = []
    for name, args in (("a", ["tokens", "create", "from-a"]), ("b", ["tokens", "list"])):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(app, args)
        finally:
            dispose_engines()
            get_settings.cache_clear()
        assert result.exit_code == 0, result.output
        assert not (folder / ".zooens").exists()
        outputs.append(result.stdout)
    assert (tmp_path / "xdg" / "zooens" / "zooens.db").is_file()
    assert "from-a" in outputs[1]  # b reads the registry a wrote
