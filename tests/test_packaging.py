"""The wheel: one top-level package, `zooens`, with its data; every module imports from it
outside the checkout; pyproject lists every package folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.test_layering import ROOT, discover, package_dirs

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def _listed_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(config["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_listed_in_pyproject() -> None:
    found = set()
    for prefix, folder in package_dirs().items():
        for init in folder.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(folder)
            found.add(".".join([prefix, *rel.parts]))
    assert found == _listed_packages(), "add new package folders to [tool.setuptools] packages in pyproject.toml"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the tracked sources: an in-tree build would leave build/ behind, and
    a stale build/lib would put deleted modules into the next wheel."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file():  # a deleted but not yet committed file is still listed
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, source / rel)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("zooens-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_has_one_top_level_package_and_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"zooens"}
    for data in (
        "zooens/service/dashboard/templates/job.html",
        "zooens/service/dashboard/static/job.js",
        "zooens/migrations/script.py.mako",
        "zooens/migrations/versions/0001_initial_registry.py",
    ):
        assert data in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "zooens = zooens.service.cli:app" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_every_module_imports_from_the_installed_wheel_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # Alembic's env.py and revisions are scripts that Alembic runs, not modules to import.
    modules = sorted(
        m for m in discover() if not m.startswith(("zooens.migrations.env", "zooens.migrations.versions."))
    )
    script = (
        "import importlib, sys\n"
        f"modules = {modules!r}\n"
        "for name in modules:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(site)!r}), (name, module.__file__)\n"
        "from zooens.service.db.session import migrations_dir\n"
        "assert (migrations_dir() / 'versions').is_dir()\n"
        "print(len(modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stdout.strip()) == len(modules)
