"""Where units run: `LocalExecutor` (one after another, in this process) or `RayExecutor`
(each unit a Ray task, with a GPU when the cluster has GPUs).

Both hand each finished unit's typed result back to the caller (`on_done`), which owns the
job and writes the registry; a Ray cluster must share ZOOENS_HOME's file system (artifacts and
the embedding cache) with the driver.

Both honour `zooens.cancel`: each unit runs in its own scope with the per-unit time limit
(`unit_time_limit_seconds`), nested in the caller's (the job's) scope. Local units run in the
caller's thread, so the context variable carries the job's scope to them; the Ray driver
checks the job's scope while it waits and cancels its remote tasks when it is cancelled.

Whatever runs the units, the driver's stdout carries results only: Ray's notices go to stderr
(`_ray_notices_to_stderr`), and the driver logs the Ray node each unit ran on (INFO).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Protocol

from zooens.cancel import cancel_scope, check_cancelled
from zooens.errors import ConfigError
from zooens.service.jobs.units import JobSpec, UnitResult, execute_unit
from zooens.settings import get_settings

logger = logging.getLogger(__name__)

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "get_executor"]

OnDone = Callable[[str, UnitResult], None]


class Executor(Protocol):
    name: str

    def map(self, spec: JobSpec, keys: list[str], on_done: OnDone, progress: bool = True) -> None:
        """Run every unit of `keys`, calling `on_done(key, result)` as each one finishes."""


class LocalExecutor:
    """Runs units one after another in this process."""

    name = "local"

    def map(self, spec: JobSpec, keys: list[str], on_done: OnDone, progress: bool = True) -> None:
        time_limit = get_settings().unit_time_limit_seconds
        for key in keys:
            with cancel_scope(time_limit=time_limit):
                result = execute_unit(spec, key, progress)
            on_done(key, result)


def _run_remote(spec: JobSpec, key: str, time_limit: float) -> tuple[UnitResult, str]:
    """Runs in a Ray worker: point its settings at the job's home, then do the unit within its time limit.
    Returns the result and where it ran (Ray node id, host, pid), which the driver logs."""
    import ray

    logging.basicConfig(level=logging.WARNING)
    if os.environ.get("ZOOENS_HOME") != spec.home:
        os.environ["ZOOENS_HOME"] = spec.home
        get_settings.cache_clear()
    with cancel_scope(time_limit=time_limit):
        result = execute_unit(spec, key, progress=False)
    where = f"Ray node {ray.get_runtime_context().get_node_id()} (host {socket.gethostname()}, pid {os.getpid()})"
    return result, where


def _ray_notices_to_stderr(ray: Any) -> None:
    """Ray's driver prints the cluster's notices (a raylet's death with the tail of its log, a lost
    worker) to its stdout, which carries results only (`zooens run --json`): send them to stderr.

    Ray has no setting for this (`log_to_driver=False` silences the workers' output, not these
    notices), so its printer is wrapped; a Ray without that printer fails here, loudly, rather
    than mixing its notices into the results."""
    module = ray._private.worker
    original = getattr(module, "print_to_stdstream", None)
    if original is None:
        raise ConfigError(
            f"Ray {ray.__version__} has no ray._private.worker.print_to_stdstream, through which zooens keeps "
            "Ray's notices off stdout; install a Ray release that has it (checked with Ray 2.60)."
        )
    if getattr(original, "zooens_to_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    to_stderr.zooens_to_stderr = True  # type: ignore[attr-defined]
    module.print_to_stdstream = to_stderr


class RayExecutor:
    """Each unit a Ray task; results come back to the driver, which records them."""

    name = "ray"
    poll_seconds = 1.0
    """How often the driver looks at the job's cancel scope while remote units run."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        try:
            import ray  # optional extra: zooens[ray]
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
        _ray_notices_to_stderr(ray)
        gpus = ray.cluster_resources().get("GPU", 0)
        self.gpus_per_task = 1 if gpus >= 1 else 0
        self._remote = ray.remote(num_gpus=self.gpus_per_task, max_retries=1)(_run_remote)
        logger.info("Ray executor on %s (GPUs in the cluster: %s)", address or "a local instance", gpus)

    def map(self, spec: JobSpec, keys: list[str], on_done: OnDone, progress: bool = True) -> None:
        ray = self._ray
        time_limit = get_settings().unit_time_limit_seconds
        pending = {self._remote.remote(spec, key, time_limit): key for key in keys}
        try:
            while pending:
                check_cancelled()  # the job's scope: a cancel or a takeover stops the remote units too
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_seconds)
                for ref in ready:
                    key = pending.pop(ref)
                    result, where = ray.get(ref)
                    logger.info("unit %s ran on %s", key, where)
                    on_done(key, result)
        except BaseException:
            for other in pending:
                ray.cancel(other, force=True)
            raise


def get_executor(name: str | None = None) -> Executor:
    """The executor named by `name` or ZOOENS_EXECUTOR (`local` or `ray`)."""
    name = name or get_settings().executor
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address=get_settings().ray_address)
    raise ConfigError(f"Unknown executor {name!r}; set ZOOENS_EXECUTOR to 'local' or 'ray'.")
