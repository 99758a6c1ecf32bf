"""What can be tested of docker/ without a Docker engine (images cannot be pulled here): the entrypoint, the
settings passed, migrations once, restart policies, the GPU reservation, the torch build guard, the HF cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from zooens.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
LONG_RUNNING = ("postgres", "ray-head", "api", "worker", "worker-gpu")


def compose_services() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert match, f"the Dockerfile declares no ARG {name}=<default>"
    return match.group(1)


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "ZOOENS_HOME": str(home),
        "ZOOENS_DATABASE_URL": f"sqlite:///{home / 'db.sqlite'}",
    }


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
    settings = Settings(**{k[len("ZOOENS_") :].lower(): v for k, v in env.items() if k.startswith("ZOOENS_")})
    assert settings.resolved_database_url.startswith("postgresql+psycopg2://")
    assert settings.executor == "ray" and settings.ray_address
    assert services["api"]["command"] == ["api"] and services["worker"]["command"] == ["worker"]
    text = ENTRYPOINT.read_text()
    for role in ("api)", "worker)"):
        block = text.split(role, 1)[1].split(";;", 1)[0]
        assert block.index("zooens db upgrade") < block.index("exec "), f"{role} must migrate before it starts"
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "ARG BASE=" in dockerfile and "ENTRYPOINT" in dockerfile


def test_compose_migrates_once_before_the_api_and_the_workers_start():
    services = compose_services()
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"] and migrate.get("restart", "no") == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker", "worker-gpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    assert "migrate)" in ENTRYPOINT.read_text() and "exec zooens db upgrade" in ENTRYPOINT.read_text()


def test_long_running_services_restart():
    services = compose_services()
    assert set(LONG_RUNNING) | {"migrate"} == set(services)
    for name in LONG_RUNNING:
        assert services[name].get("restart") == "unless-stopped", name


def test_a_gpu_worker_reserves_an_nvidia_gpu_and_runs_cuda_torch_on_it():
    gpu = compose_services()["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["command"] == ["worker"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert re.fullmatch(r"cu\d{3}", gpu["build"]["args"]["TORCH"])
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile" and gpu["image"] != compose_services()["api"]["image"]
    env = gpu["environment"]
    settings = Settings(**{k[len("ZOOENS_") :].lower(): v for k, v in env.items() if k.startswith("ZOOENS_")})
    assert settings.device == "cuda" and settings.executor == "local"  # units run on its own GPU
    cpu_args = [compose_services()[name]["build"]["args"]["TORCH"] for name in ("api", "worker")]
    assert cpu_args == ["cpu", "cpu"] and dockerfile_arg("TORCH") == "cpu"


def test_the_torch_build_arg_selects_the_pytorch_wheel_index():
    text = DOCKERFILE.read_text()
    index = re.escape('--index-url "https://download.pytorch.org/whl/${TORCH}" torch torchvision')
    assert re.search(rf"pip install [^\n]*{index}", text)
    assert text.index("ARG TORCH=") > text.index("FROM ")  # an ARG before FROM is not visible to RUN


def torch_guard(variant: str) -> subprocess.CompletedProcess:
    """The Dockerfile's own check that the installed torch is the build TORCH names, run on this venv's torch."""
    instructions = DOCKERFILE.read_text().replace("\\\n", "")  # joined as Docker joins continued lines
    command = re.search(r'^RUN (python -c ".*")$', instructions, re.M)
    assert command, 'the Dockerfile has no `RUN python -c "..."` torch check'
    env = {**os.environ, "TORCH": variant, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", command.group(1)], env=env, capture_output=True, text=True)


def test_the_build_fails_when_torch_is_not_the_requested_build():
    here = "cu" + torch.version.cuda.replace(".", "") if torch.version.cuda else "cpu"
    other = "cpu" if here != "cpu" else "cu124"
    assert torch_guard(here).returncode == 0
    refused = torch_guard(other)
    assert refused.returncode != 0 and f"build, not {other}: check --build-arg TORCH" in refused.stderr


def test_the_hugging_face_cache_is_a_volume_at_hf_home():
    text = DOCKERFILE.read_text()
    assert "HF_HOME=/cache/huggingface" in text and re.search(r'^VOLUME \[.*"/cache/huggingface"\]$', text, re.M)
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert "hf-cache" in compose["volumes"]
    for name in ("ray-head", "api", "worker", "worker-gpu", "migrate"):
        service = compose["services"][name]
        assert service["environment"]["HF_HOME"] == "/cache/huggingface", name
        assert "hf-cache:/cache/huggingface" in service["volumes"], name
