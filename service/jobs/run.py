"""Drive one claimed job through its stages, unit by unit, writing each result as it comes.

A job's state lives in the registry, so running it again skips every finished unit. The
process that owns the job (a worker, or `zooens run`, which claims its job like any worker)
claims each unit before it runs and records it only while it still owns it; a heartbeat
thread keeps the claim fresh. When the heartbeat finds the job taken over (this process was
silent too long and another worker claimed it), or a unit's result cannot be recorded
because its unit changed hands, the run stops and writes nothing more: the new owner
finishes the job.

A unit stops within seconds, not at its end: the job runs inside a `zooens.cancel` scope that
the heartbeat thread cancels when a cancel is requested or the job is taken over, and each
unit inside its own scope with the per-unit time limit (`unit_time_limit_seconds`); the
training and embedding loops check them every step or batch. A cancel ends the job
`cancelled`; the time limit fails the unit and its job with the limit's message. A unit
claimed more than `unit_max_attempts` times (its workers kept vanishing) fails its job.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from zooens.cancel import CancelScope, cancel_scope
from zooens.errors import Cancelled, ConflictError, JobError, NotFoundError, ZooensError
from zooens.pipeline import (
    EMBED,
    ENSEMBLE,
    FINETUNE,
    PULL,
    EmbedRecord,
    JobParams,
    RunRecord,
    UnitKey,
    plan_finetune_units,
    plan_pull_units,
    rank_models,
)
from zooens.progress import UnitProgress, inner_bars, inner_sink, unit_kind, unit_label
from zooens.service import registry
from zooens.service.db.session import session_scope
from zooens.service.jobs.executors import Executor, get_executor
from zooens.service.jobs.units import JobSpec, UnitResult, record_unit, result_from_json
from zooens.settings import get_settings

logger = logging.getLogger(__name__)

INNER_EVERY_SECONDS = 1.0
"""How often, at most, a unit's inner progress (images embedded) is written to the job."""

__all__ = ["JobCancelled", "JobLost", "job_spec", "require_success", "run_job"]


class JobCancelled(Exception):
    """A cancel was requested; raised between units."""


class JobLost(Exception):
    """Another worker owns the job now; raised between units."""


def job_spec(job_id: int) -> JobSpec:
    """The serialisable description of a job that its units need."""
    settings = get_settings()
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        dataset = registry.get_dataset(s, job.dataset_id)
        return JobSpec(
            job_id=job.id,
            dataset_source=dataset.source,
            dataset_fingerprint=dataset.fingerprint,
            zoo_models=list(job.zoo_models or []),
            params=JobParams.model_validate(job.params),
            home=str(settings.home.resolve()),
            cache_dir=str(settings.resolved_cache_dir.resolve()),
        )


class _Ownership(threading.Thread):
    """Beats the job's (and the worker's) heartbeat; cancels the job's scope when a cancel is
    requested or the job is no longer this worker's, so the running unit stops within a step.

    The heartbeat (a write) comes every `every` seconds; between beats the job's row is read every
    `poll_seconds`, so a cancel reaches the running unit within about that plus one training
    micro-batch or embedding batch, however long the heartbeat interval."""

    poll_seconds = 1.0

    def __init__(self, job_id: int, worker_id: str, every: float, scope: CancelScope) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.job_id, self.worker_id, self.every, self.scope = job_id, worker_id, every, scope
        self.stopped = threading.Event()
        self.lost = threading.Event()
        self.cancel_requested = threading.Event()

    def run(self) -> None:
        poll = min(self.every, self.poll_seconds)
        next_beat = time.monotonic() + self.every
        while not self.stopped.wait(poll):
            beat = time.monotonic() >= next_beat - poll / 2
            try:
                with session_scope() as s:
                    if beat:
                        owned = registry.heartbeat(s, self.job_id, self.worker_id)
                        registry.beat_worker(s, self.worker_id, job_id=self.job_id)
                        cancel = owned and registry.is_cancel_requested(s, self.job_id)
                    else:  # a read: the job's owner and cancel flag
                        try:
                            job = registry.get_job(s, self.job_id)
                        except NotFoundError:  # deleted: no longer this worker's
                            job = None
                        owned = job is not None and job.worker_id == self.worker_id and job.status == "running"
                        cancel = owned and bool(job.cancel_requested)
            except Exception:  # a missed beat is not fatal; the next one may succeed
                logger.warning("heartbeat for job %s failed", self.job_id, exc_info=True)
                continue
            if beat:
                next_beat = time.monotonic() + self.every
            if not owned:
                logger.warning(
                    "job %s is no longer owned by %s; stopping its running unit", self.job_id, self.worker_id
                )
                self.lost.set()
                self.scope.cancel("the job was taken over by another worker")
                return
            if cancel and not self.cancel_requested.is_set():
                logger.info("job %s: cancel requested; stopping its running unit", self.job_id)
                self.cancel_requested.set()
                self.scope.cancel("a cancel was requested")


class _Run:
    """One attempt at a job by one worker."""

    def __init__(self, job_id: int, worker_id: str, executor: Executor, progress: bool, ownership: _Ownership) -> None:
        self.job_id, self.worker_id, self.executor, self.progress = job_id, worker_id, executor, progress
        self.ownership = ownership
        self.remaining: list[str] = []
        self.overall: UnitProgress | None = None  # the job's bar or lines (all units, ETA by kind) when `progress`

    def check(self) -> None:
        """Between units: stop if the job was cancelled or taken over."""
        if self.ownership.lost.is_set():
            raise JobLost
        with session_scope() as s:
            job = registry.get_job(s, self.job_id)
            if job.worker_id != self.worker_id or job.status != "running":
                raise JobLost
            if job.cancel_requested:
                raise JobCancelled

    def report_progress(
        self, stage: str, names: list[str], left: list[str], inner: dict[str, int] | None = None
    ) -> None:
        """The stage's progress from its units (`names`) and those not done yet (`left`, the first one being
        the current one): units done of total, the current one and, for fine-tuning, the runs left by strategy
        (`{"linear": 3, "film": 2}`: the job page's ETA times each strategy by its own finished runs, as
        `zooens.progress.estimate_eta` does); `inner`: the work done inside the current unit
        (`{"done": images, "total": images}` while a model embeds a split)."""
        with session_scope() as s:
            job = registry.get_job(s, self.job_id)
            progress = dict(job.progress or {})
            progress[stage] = {
                "done": len(names) - len(left),
                "total": len(names),
                "current": left[0] if left else None,
            }
            if inner is not None:
                progress[stage]["inner"] = inner
            if stage == "finetune":
                progress[stage]["left"] = dict(Counter(str(UnitKey.parse(k).strategy) for k in left))
            registry.set_job_progress(s, self.job_id, stage=stage, progress=progress)

    def inner_reporter(self, stage: str, names: list[str]) -> Callable[[int, int], None]:
        """A `zooens.progress.inner_sink` callback writing the current unit's inner progress to the job, at
        most once every `INNER_EVERY_SECONDS` (and at its end), for the API and the job page."""
        last = [0.0]

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done < total and now - last[0] < INNER_EVERY_SECONDS:
                return
            last[0] = now
            self.report_progress(stage, names, self.remaining, {"done": done, "total": total})

        return report

    def stage(self, spec: JobSpec, stage: str, keys: list[UnitKey]) -> dict[str, UnitResult]:
        """Run a stage's units not done yet; every result of the stage, by key, in planning order. A stage
        with no unit (`pull` in a job that pulls nothing) leaves no trace."""
        if not keys:
            return {}
        names = [str(k) for k in keys]
        with session_scope() as s:
            registry.ensure_units(s, self.job_id, [(k, stage) for k in names])
            done = registry.done_units(s, self.job_id)
        todo = [k for k in names if k not in done]
        if todo and len(todo) < len(names):
            logger.info(
                "job %s: %d of %d %s units already done, skipping them",
                self.job_id,
                len(names) - len(todo),
                len(names),
                stage,
            )
        self.report_progress(stage, names, todo)
        if self.overall is not None:
            for kind, count in Counter(unit_kind(k) for k in keys if str(k) not in todo).items():
                self.overall.skip(kind, count, label=kind.replace("finetune:", "fine-tune "))
        if todo:
            self.check()
            self.claim(todo)
            self.remaining = list(todo)

            def on_done(key: str, result: UnitResult) -> None:
                with session_scope() as s:
                    unit = registry.get_unit(s, self.job_id, key)
                    try:
                        registry.finish_unit(s, unit.id, result.model_dump(mode="json"), worker_id=self.worker_id)
                    except ConflictError:
                        raise JobLost from None
                    record_unit(s, self.job_id, key, result)
                self.remaining.remove(key)
                self.report_progress(stage, names, self.remaining)
                if self.overall is not None:
                    unit = UnitKey.parse(key)
                    self.overall.done(unit_kind(unit), unit_label(unit))
                    if self.remaining:
                        self.overall.begin(unit_label(UnitKey.parse(self.remaining[0])))
                if self.remaining:
                    self.check()

            if self.overall is not None:
                self.overall.begin(unit_label(UnitKey.parse(todo[0])))
            with inner_sink(self.inner_reporter(stage, names)):  # heard by units run in this thread (local)
                self.executor.map(spec, todo, on_done, progress=inner_bars(self.progress))
        with session_scope() as s:
            done = registry.done_units(s, self.job_id)
        return {k: result_from_json(k, done[k]) for k in names}

    def claim(self, keys: list[str]) -> None:
        """Take the stage's pending units for this worker (units left running by a worker that
        lost the job were put back to pending when the job was taken over)."""
        wanted = set(keys)
        while True:
            with session_scope() as s:
                unit = registry.claim_unit(s, self.job_id, self.worker_id)
            if unit is None:
                break
            if unit.key not in wanted:  # never happens: stages run in order
                raise JobError(f"Job {self.job_id}: unit {unit.key!r} is pending out of its stage.")
        max_attempts = get_settings().unit_max_attempts
        with session_scope() as s:
            units = [u for u in registry.list_units(s, self.job_id) if u.key in wanted]
            if any(u.status == "running" and u.worker_id != self.worker_id for u in units):
                raise JobLost
            worn = next((u for u in units if u.status == "running" and u.attempts > max_attempts), None)
            if worn is not None:
                error = (
                    f"Unit {worn.key!r} was started {worn.attempts - 1} times without finishing (its worker "
                    f"stopped each time), the most ZOOENS_UNIT_MAX_ATTEMPTS={max_attempts} allows; find why "
                    "the worker dies on it (memory, time limits, a crash in the logs) before submitting again."
                )
                registry.fail_unit(s, worn.id, error, worker_id=self.worker_id)
        if worn is not None:
            raise JobError(error)

    def record_failure(self, error: str) -> None:
        """The unit that was running gets the job's error; the ones not started go back to pending."""
        with session_scope() as s:
            if self.remaining:
                unit = registry.get_unit(s, self.job_id, self.remaining[0])
                if unit.status == "running" and unit.worker_id == self.worker_id:
                    registry.fail_unit(s, unit.id, error, worker_id=self.worker_id)
            registry.requeue_running_units(s, self.job_id)

    def stages(self) -> None:
        spec = job_spec(self.job_id)
        if self.progress:  # the sweep's kinds do not depend on the ranking's order: the plan is known now
            planned = [
                *plan_pull_units(spec.zoo_models, spec.params),
                *(UnitKey.embed(m) for m in spec.zoo_models),
                *plan_finetune_units(spec.zoo_models, spec.params),
                UnitKey.ensemble(),
            ]
            self.overall = UnitProgress([unit_kind(k) for k in planned], desc=f"job {self.job_id}")
        try:
            self._stages(spec)
        finally:
            if self.overall is not None:
                self.overall.close()

    def _stages(self, spec: JobSpec) -> None:
        self.stage(spec, PULL, plan_pull_units(spec.zoo_models, spec.params))
        embeds = self.stage(spec, EMBED, [UnitKey.embed(m) for m in spec.zoo_models])
        ranked = rank_models([r for r in embeds.values() if isinstance(r, EmbedRecord)])
        spec = dataclasses.replace(spec, ranked_models=ranked)
        runs = self.stage(spec, FINETUNE, plan_finetune_units(ranked, spec.params))
        spec = dataclasses.replace(spec, runs={k: r for k, r in runs.items() if isinstance(r, RunRecord)})
        self.stage(spec, ENSEMBLE, [UnitKey.ensemble()])


def run_job(job_id: int, *, worker_id: str, executor: Executor | None = None, progress: bool = True) -> str:
    """Run (or resume) a job this worker has claimed, to its end; returns the final status.

    JobError if the job is not running for `worker_id`. Returns "lost" (and writes nothing)
    when another worker took the job over meanwhile.
    """
    settings = get_settings()
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        if job.status != "running" or job.worker_id != worker_id:
            raise JobError(
                f"Job {job_id} is {job.status} for worker {job.worker_id!r}, not claimed by "
                f"{worker_id!r}; claim it first (registry.claim_job, or submit_job(claim_for=...))."
            )
    with cancel_scope() as scope:
        ownership = _Ownership(job_id, worker_id, settings.heartbeat_seconds, scope)
        ownership.start()
        run = _Run(job_id, worker_id, executor or get_executor(), progress, ownership)
        try:
            status, error = _attempt(run, ownership)
        except KeyboardInterrupt:  # Ctrl-C in `zooens run`: the job ends cancelled, not "running" for a worker
            _record_interrupt(job_id, worker_id)
            raise
    if status == "lost":
        logger.warning("job %s: taken over by another worker; %s stops", job_id, worker_id)
        return "lost"
    if status == "failed":
        run.record_failure(error or "failed")
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        if job.worker_id != worker_id:
            logger.warning(
                "job %s: taken over by %s before %s could record %s", job_id, job.worker_id, worker_id, status
            )
            return "lost"
        if status == "cancelled":  # the units it had claimed did not run to their end
            registry.requeue_running_units(s, job_id)
        registry.set_job_status(s, job_id, status, error=error)
    return status


INTERRUPTED = "interrupted (Ctrl-C); `zooens jobs resume JOB` runs it again from its last finished unit"


def _record_interrupt(job_id: int, worker_id: str) -> None:
    """The job ends `cancelled` with INTERRUPTED as its error; its started units go back to pending."""
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        if job.worker_id == worker_id and job.status == "running":
            registry.requeue_running_units(s, job_id)
            registry.set_job_status(s, job_id, "cancelled", error=INTERRUPTED.replace("JOB", str(job_id)))


def _attempt(run: _Run, ownership: _Ownership) -> tuple[str, str | None]:
    """Run the stages; the job's final (status, error), or ("lost", None)."""
    try:
        run.stages()
    except JobLost:
        return "lost", None
    except Cancelled as exc:
        if ownership.lost.is_set():
            return "lost", None
        if ownership.cancel_requested.is_set():
            return "cancelled", None
        logger.warning("job %s: %s", run.job_id, exc)
        return "failed", str(exc)  # the unit's time limit
    except JobCancelled:
        status, error = "cancelled", None
    except ZooensError as exc:
        status, error = "failed", str(exc)
    except Exception as exc:  # recorded on the job, never swallowed silently
        logger.exception("job %s failed", run.job_id)
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    else:
        status, error = "succeeded", None
    finally:
        ownership.stopped.set()
    return status, error


def require_success(status: str, job_id: int) -> None:
    """JobError with the job's recorded reason unless it succeeded."""
    if status != "succeeded":
        with session_scope() as s:
            job = registry.get_job(s, job_id)
            raise JobError(f"Job {job_id} {status}: {job.error or 'no reason recorded'}")
