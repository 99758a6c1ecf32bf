"""`zooens serve` and `zooens worker` (registered on the root app by `zooens.service.cli`)."""

from __future__ import annotations

import typer

from zooens.service.cli._common import fail_on_error


@fail_on_error
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    with_worker: bool = typer.Option(False, "--with-worker", help="Also run one worker in this process."),
) -> None:
    """Start the REST API and dashboard (uvicorn)."""
    import uvicorn

    from zooens.service.app import create_app
    from zooens.service.db.session import upgrade_to_head

    upgrade_to_head()
    uvicorn.run(create_app(with_worker=with_worker), host=host, port=port, log_level="info")


@fail_on_error
def worker(
    worker_id: str | None = typer.Option(None, "--id", help="Worker name (default host-pid-random)."),
    once: bool = typer.Option(False, "--once", help="Exit when the queue is empty."),
    poll: float = typer.Option(1.0, help="Seconds between looks at an empty queue."),
    executor: str | None = typer.Option(None, help="'local' or 'ray' (default ZOOENS_EXECUTOR)."),
) -> None:
    """Take queued jobs from the registry and run them."""
    import signal
    import threading

    from zooens.service.db.session import upgrade_to_head
    from zooens.service.jobs import get_executor, work
    from zooens.service.jobs.worker import ReleasingStop

    upgrade_to_head()
    stop = ReleasingStop()
    # SIGTERM (`docker stop`, systemd) hands the running job back to the queue at once and ends the loop; from a
    # thread, as the signal may come while this one holds the database's write lock
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop.set, name="zooens-stop").start())
    work(worker_id, once=once, poll_seconds=poll, executor=get_executor(executor), stop=stop)
