"""Reading and writing the registry: plain functions over a SQLAlchemy session, one module per aggregate.

The job runner, CLI and API all go through these; none of them commits (the caller's
`session_scope()` does), so several calls form one transaction. Callers use the package:
`from zooens.service import registry; registry.get_job(s, job_id)`.

- `zoo_models`: the weight sets jobs have seen;
- `datasets`: registered datasets, found by content, deleted;
- `jobs`: jobs, claiming, heartbeats, release, cancellation, reopening (resume) and deletion;
- `units`: a job's units of work and their results;
- `results`: the embedding-cache index, kNN scores, fine-tune runs;
- `ensembles`: a job's ensembles and their members;
- `tokens`: API tokens;
- `workers`: workers' liveness (last seen, current job) and the queue's age.
"""

from __future__ import annotations

from zooens.service.registry.datasets import (
    create_dataset,
    delete_dataset,
    find_uploaded_dataset,
    get_dataset,
    get_or_create_dataset,
    list_datasets,
)
from zooens.service.registry.ensembles import create_ensemble, get_ensemble, get_job_ensemble
from zooens.service.registry.jobs import (
    add_job_warnings,
    check_finished,
    claim_job,
    create_job,
    delete_job,
    get_job,
    heartbeat,
    is_cancel_requested,
    list_jobs,
    release_job,
    reopen_job,
    request_cancel,
    set_job_progress,
    set_job_split_sizes,
    set_job_status,
    set_job_warnings,
    set_ranking_audit,
)
from zooens.service.registry.results import (
    add_finetune_run,
    add_knn_score,
    get_finetune_run,
    get_ranking,
    list_finetune_runs,
    record_embedding,
)
from zooens.service.registry.tokens import (
    TOKEN_PREFIX,
    create_token,
    hash_token,
    list_tokens,
    revoke_token,
    verify_token,
)
from zooens.service.registry.units import (
    claim_unit,
    done_units,
    ensure_units,
    fail_unit,
    finish_unit,
    get_unit,
    list_units,
    pending_units,
    requeue_running_units,
)
from zooens.service.registry.workers import beat_worker, count_live_workers, oldest_queued_age, remove_worker
from zooens.service.registry.zoo_models import upsert_zoo_model

__all__ = [
    "TOKEN_PREFIX",
    "add_finetune_run",
    "add_knn_score",
    "beat_worker",
    "check_finished",
    "claim_job",
    "claim_unit",
    "count_live_workers",
    "create_dataset",
    "create_ensemble",
    "create_job",
    "create_token",
    "delete_dataset",
    "delete_job",
    "done_units",
    "ensure_units",
    "fail_unit",
    "find_uploaded_dataset",
    "finish_unit",
    "get_dataset",
    "get_ensemble",
    "get_finetune_run",
    "get_job",
    "get_job_ensemble",
    "get_or_create_dataset",
    "get_ranking",
    "get_unit",
    "hash_token",
    "heartbeat",
    "is_cancel_requested",
    "list_datasets",
    "list_finetune_runs",
    "list_jobs",
    "list_tokens",
    "list_units",
    "oldest_queued_age",
    "pending_units",
    "record_embedding",
    "remove_worker",
    "release_job",
    "reopen_job",
    "request_cancel",
    "requeue_running_units",
    "revoke_token",
    "set_job_progress",
    "set_ranking_audit",
    "set_job_split_sizes",
    "set_job_status",
    "set_job_warnings",
    "add_job_warnings",
    "upsert_zoo_model",
    "verify_token",
]
