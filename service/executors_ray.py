"""Ray executor: each unit is a Ray task; it asks for a GPU when the cluster has GPUs.

Tasks return their results; the driver (the worker that claimed the job) writes them to the
registry exactly as the local executor does. The cluster must share ZOOENS_HOME's file system
(artifacts and the embedding cache) with the driver.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from zooens.service.pipeline import JobSpec, execute_unit
from zooens.errors import ConfigError

logger = logging.getLogger(__name__)


def _run_remote(spec: JobSpec, key: str) -> dict[str, Any]:
    """Runs in a Ray worker: point its settings at the job's home, then do the unit."""
    import logging as _logging
    import os

    from zooens.settings import get_settings

    _logging.basicConfig(level=_logging.INFO)
    if os.environ.get("ZOOENS_HOME") != spec.home:
        os.environ["ZOOENS_HOME"] = spec.home
        get_settings.cache_clear()
    return execute_unit(spec, key, progress=False)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("ZOOENS_EXECUTOR=ray needs Ray: pip install 'zooens[ray]'.") from None
        self._ray = ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = num_cpus
                kwargs["include_dashboard"] = False
            ray.init(**kwargs)
        gpus = ray.cluster_resources().get("GPU", 0)
        self.gpus_per_task = 1 if gpus >= 1 else 0
        self._remote = ray.remote(num_gpus=self.gpus_per_task, max_retries=1)(_run_remote)
        logger.info("Ray executor on %s (GPUs in the cluster: %s)", address or "a local instance", gpus)

    def map(
        self, spec: JobSpec, keys: list[str], on_done: Callable[[str, dict[str, Any]], None], progress: bool = True
    ) -> None:
        ray = self._ray
        pending = {self._remote.remote(spec, key): key for key in keys}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                key = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception:
                    for other in pending:
                        ray.cancel(other)
                    raise
                on_done(key, result)
