"""One settings class for every part of zooens, read from `ZOOENS_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_HOME = Path(".zooens")
"""A project's own home: used, when the current directory holds one, unless ZOOENS_HOME is set."""


def user_home() -> Path:
    """The user's zooens folder: `platformdirs.user_data_dir("zooens")` (`~/.local/share/zooens` on Linux,
    `~/Library/Application Support/zooens` on macOS, `%LOCALAPPDATA%\\zooens` on Windows)."""
    return Path(platformdirs.user_data_dir("zooens", appauthor=False))


def default_home() -> Path:
    """Where zooens keeps its files when ZOOENS_HOME is not set: `./.zooens` (absolute) if the current
    directory holds that folder (a project's own registry, as earlier versions made one in every
    directory), else the user's folder (`user_home`), the same from any directory."""
    if PROJECT_HOME.is_dir():
        return PROJECT_HOME.resolve()
    return user_home()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZOOENS_", env_file=".env", extra="ignore")

    home: Path = Field(
        default_factory=default_home,
        description="Where zooens keeps its files: ZOOENS_HOME when set, else ./.zooens when the current directory "
        "holds one, else the user's data folder (platformdirs: ~/.local/share/zooens on Linux).",
    )
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default a SQLite file in `home`.")
    cache_dir: Path | None = Field(default=None, description="Embedding cache; default `home`/cache.")
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    num_workers: int | Literal["auto"] = Field(
        default="auto",
        description="DataLoader worker processes that decode images for embedding; 'auto': all but one "
        "core on a CUDA host, none on a CPU-only one (measured: bench/embed_throughput.py).",
    )
    embed_model_cache_size: int = Field(
        default=3,
        ge=0,
        description="Built models an embedding process keeps for the next split of the same model.",
    )
    embed_freeze_min_images: int = Field(
        default=1000,
        ge=0,
        description="On a CPU, datasets of at least this many images (all splits) are embedded by a TorchScript-"
        "traced, frozen copy of each model (batch norm folded, ops fused: 1.3-1.8x faster, measured by "
        "bench/embed_throughput.py); smaller ones by the eager model, as tracing costs 0.2-3 s a model. "
        "0: always; set it above your dataset size to never freeze.",
    )
    decoded_memory_bytes: int = Field(
        default=2 * 1024**3,
        ge=0,
        description=(
            "Most bytes of decoded (resized uint8) splits held in memory, shared by models of one preprocessing."
        ),
    )
    decoded_disk_bytes: int = Field(
        default=4 * 1024**3,
        ge=0,
        description="Most bytes of decoded splits kept on disk under the cache dir (oldest evicted first).",
    )
    executor: str = Field(default="local", description="'local' or 'ray'.")
    ray_address: str | None = Field(default=None, description="Ray cluster address; None starts a local one.")
    # inputs: every one bounded before it is decoded or stored (README, "Security limits")
    max_image_pixels: int = Field(
        default=40_000_000,
        ge=1,
        description="Most pixels (width x height, read from the header before decoding) of one image.",
    )
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1, description="Largest dataset upload.")
    max_archive_files: int = Field(default=50_000, ge=1, description="Most entries in an uploaded archive.")
    max_archive_uncompressed_bytes: int = Field(
        default=4 * 1024 * 1024 * 1024,
        ge=1,
        description="Most bytes an archive (or the arrays of an .npz) may expand to.",
    )
    max_request_bytes: int = Field(default=1024 * 1024, ge=1, description="Largest JSON or form body.")
    max_predict_files: int = Field(default=16, ge=1, description="Most images in one predict request.")
    max_predict_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="Largest predict request body.")
    data_roots: list[Path] = Field(
        default_factory=list, description="Server-side dirs a dataset may be registered from."
    )
    protect_reads: bool = Field(default=False, description="Require a token for reads too.")
    # jobs
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    stale_after_seconds: float = Field(default=60.0, gt=0)
    unit_time_limit_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="A unit running longer than this is stopped and fails."
    )
    unit_max_attempts: int = Field(default=3, ge=1, description="A unit that failed this many times fails its job.")

    @property
    def home_origin(self) -> str:
        """Why `home` is where it is, in words, for commands that say which registry they read."""
        if "home" in self.model_fields_set:
            return "ZOOENS_HOME"
        if self.home == user_home():
            return "the user's data folder (set ZOOENS_HOME to use another)"
        return "the .zooens folder of the directory zooens started in (set ZOOENS_HOME to use another)"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'zooens.db').resolve()}"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def user_zoo_file(self) -> Path:
        return self.home / "user_zoo.json"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"


@lru_cache
def get_settings() -> Settings:
    return Settings()
