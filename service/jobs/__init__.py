"""A job's life in the service, one role per module (as arq splits a worker); the work itself is
`zooens.pipeline`'s:

- `units`: each unit calls one pipeline stage and returns its record; recorders write records;
- `executors`: where units run (`LocalExecutor`, `RayExecutor`, `get_executor`);
- `submit`: the one way a job is created (API, `zooens run`, `zooens vtab run`, `zooens.fit`);
- `run`: drive a claimed job through its stages; `worker`: claim jobs and run them;
- `here`: `run_here`, submit a job claimed by this process and run it here (CLI, Python API, VTAB).
"""

from zooens.service.jobs.executors import LocalExecutor, RayExecutor, get_executor
from zooens.service.jobs.here import run_here
from zooens.service.jobs.run import job_spec, require_success, run_job
from zooens.service.jobs.submit import check_dataset, register_dataset, resume_job, retry_job, submit_job
from zooens.service.jobs.units import JobSpec, execute_unit, job_dataset
from zooens.service.jobs.worker import default_worker_id, start_background_worker, work

__all__ = [
    "JobSpec",
    "LocalExecutor",
    "RayExecutor",
    "check_dataset",
    "default_worker_id",
    "execute_unit",
    "get_executor",
    "job_dataset",
    "job_spec",
    "register_dataset",
    "require_success",
    "resume_job",
    "retry_job",
    "run_here",
    "run_job",
    "start_background_worker",
    "submit_job",
    "work",
]
