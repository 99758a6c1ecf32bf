"""A job's life, one role per module (as arq splits a worker):

- `params`: `JobParams`, what a user chooses, validated once;
- `units`: `UnitKey`, the unit handlers and their typed results, and how each is recorded;
- `executors`: where units run (`LocalExecutor`, `RayExecutor`, `get_executor`);
- `submit`: the one way a job is created (API, `zooens run`, `zooens vtab run`);
- `run`: drive a claimed job through its stages; `worker`: claim jobs and run them.
"""

from zooens.service.jobs.executors import LocalExecutor, RayExecutor, get_executor
from zooens.service.jobs.params import JobParams, domain_error, parse_params
from zooens.service.jobs.run import job_spec, require_success, run_job
from zooens.service.jobs.submit import check_dataset, register_dataset, resume_job, retry_job, submit_job
from zooens.service.jobs.units import (
    EMBED,
    ENSEMBLE,
    FINETUNE,
    STAGES,
    JobSpec,
    UnitKey,
    execute_unit,
    job_dataset,
    prepare_job_dataset,
    prepare_splits,
)
from zooens.service.jobs.worker import default_worker_id, start_background_worker, work

__all__ = [
    "EMBED",
    "ENSEMBLE",
    "FINETUNE",
    "STAGES",
    "JobParams",
    "JobSpec",
    "LocalExecutor",
    "RayExecutor",
    "UnitKey",
    "check_dataset",
    "default_worker_id",
    "domain_error",
    "execute_unit",
    "get_executor",
    "job_dataset",
    "job_spec",
    "parse_params",
    "prepare_job_dataset",
    "prepare_splits",
    "register_dataset",
    "require_success",
    "resume_job",
    "retry_job",
    "run_job",
    "start_background_worker",
    "submit_job",
    "work",
]
