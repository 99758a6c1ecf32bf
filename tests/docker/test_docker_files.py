"""What can be tested of docker/ without a Docker engine: the entrypoint and the settings passed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zooens.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "ZOOENS_HOME": str(home),
            "ZOOENS_DATABASE_URL": f"sqlite:///{home / 'db.sqlite'}"}


def test_migrate_role_brings_the_database_to_head(tmp_path):
    from zooens.service.db.session import head_revision

    out = subprocess.run(["sh", str(ENTRYPOINT), "migrate"], env=_env(tmp_path), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert head_revision() in out.stdout


def test_other_commands_pass_through(tmp_path):
    out = subprocess.run(["sh", str(ENTRYPOINT), "echo", "hello"], env=_env(tmp_path), capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "hello"


def test_ray_worker_role_needs_an_address(tmp_path):
    env = _env(tmp_path)
    env.pop("ZOOENS_RAY_ADDRESS", None)
    out = subprocess.run(["sh", str(ENTRYPOINT), "ray-worker"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "ZOOENS_RAY_ADDRESS" in out.stderr


def test_compose_passes_only_real_settings_and_runs_migrations_first():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"api", "worker", "postgres", "ray-head"} <= set(services)
    known = {f"ZOOENS_{name.upper()}" for name in Settings.model_fields}
    for name in ("api", "worker", "ray-head"):
        env = services[name]["environment"]
        unknown = {k for k in env if k.startswith("ZOOENS_")} - known
        assert not unknown, f"{name} sets unknown settings {unknown}"
    env = services["api"]["environment"]
    settings = Settings(**{k[len("ZOOENS_"):].lower(): v for k, v in env.items() if k.startswith("ZOOENS_")})
    assert settings.resolved_database_url.startswith("postgresql+psycopg2://")
    assert settings.executor == "ray" and settings.ray_address
    assert services["api"]["command"] == ["api"] and services["worker"]["command"] == ["worker"]
    text = ENTRYPOINT.read_text()
    for role in ("api)", "worker)"):
        block = text.split(role, 1)[1].split(";;", 1)[0]
        assert block.index("zooens db upgrade") < block.index("exec "), f"{role} must migrate before it starts"
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "ARG BASE=" in dockerfile and "ENTRYPOINT" in dockerfile
