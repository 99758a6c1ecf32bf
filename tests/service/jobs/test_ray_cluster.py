"""A real Ray cluster on this machine: a head node that runs no task and two worker nodes, each
its own raylet; `zooens run --json` drives a job on it and one worker node's raylet is killed
mid-job, with the Ray workers under it. The job succeeds, no unit is recorded twice, every unit
ran on a worker node, stdout is the JSON report alone (Ray's notices of the lost node and the
retried task go to stderr), and nothing of the cluster listens or connects beyond loopback.

Ray gives a node the machine's interface address, even when told 127.0.0.1, unless
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (`ray._private.ray_constants.ENABLE_RAY_CLUSTER`, read by
`services.get_node_ip_address`): it is set for this process and every process it starts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.service._tiny import register_tiny_zoo
from tests.service.conftest import empty_postgres

ZOOENS = str(Path(sys.executable).parent / "zooens")
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
RAN_ON = r"unit (\S+) ran on Ray node ([0-9a-f]+)"
"""The driver's log line for each unit's result (`zooens -v`)."""
FAST_FAILURE_DETECTION = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


@pytest.fixture
def ray_cluster(monkeypatch: pytest.MonkeyPatch):
    """(cluster, [worker node, worker node]): a head with no CPU for tasks and two 1-CPU worker nodes."""
    pytest.importorskip("ray")
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    for name, value in LOOPBACK_ONLY.items():
        monkeypatch.setenv(name, value)  # every process the cluster and the job start
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # this one, which may have imported Ray already
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": FAST_FAILURE_DETECTION},
    )
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        yield cluster, workers
    finally:
        cluster.shutdown()


def _cluster_pids(nodes) -> set[int]:
    """Every process of the nodes: their Ray services and, below the raylets, the Ray workers."""
    import psutil

    pids: set[int] = set()
    for node in nodes:
        for infos in node.all_processes.values():
            for info in infos:
                pids.add(info.process.pid)
                try:
                    pids.update(child.pid for child in psutil.Process(info.process.pid).children(recursive=True))
                except psutil.NoSuchProcess:
                    pass
    return pids


def _beyond_loopback(pids: set[int]) -> list[str]:
    """Sockets of `pids` bound to, or connected to, an address that is not loopback."""
    import psutil

    def loopback(host: str) -> bool:
        address = ipaddress.ip_address(host.split("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        return (mapped or address).is_loopback

    bad = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid not in pids:
            continue
        for end in (conn.laddr, conn.raddr):
            if end and not loopback(end.ip):
                bad.append(f"pid {conn.pid}: {conn.laddr} -> {conn.raddr} ({conn.status})")
    return bad


def _kill_node(raylet_pid: int) -> None:
    """SIGKILL a node's raylet, then the Ray workers under it: a unit it was running is lost (a Ray
    worker outlives its raylet long enough to hand its result back) and Ray must retry it elsewhere."""
    import psutil

    raylet = psutil.Process(raylet_pid)
    below = raylet.children(recursive=True)
    raylet.kill()
    for process in below:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _units(job_id: int):
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        return registry.list_units(s, job_id)


def _job_id(deadline: float, cli: subprocess.Popen, err: Path) -> int:
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    while time.monotonic() < deadline:
        with session_scope() as s:
            jobs, _ = registry.list_jobs(s)
        if jobs:
            return jobs[0].id
        assert cli.poll() is None, err.read_text()[-3000:]
        time.sleep(0.2)
    pytest.fail("`zooens run` submitted no job in time")


def test_ray_notices_reach_stderr_not_stdout(capsys):
    """The printer Ray's driver uses for the cluster's notices (`listen_error_messages`: a raylet's
    death with its log's tail) writes to stderr once a Ray executor was set up; the test below
    shows it with a real killed raylet."""
    ray = pytest.importorskip("ray")
    from zooens.service.jobs.executors import _ray_notices_to_stderr

    _ray_notices_to_stderr(ray)
    _ray_notices_to_stderr(ray)  # twice, as a second executor in one process does: wrapped once
    notice = {"lines": ["Raylet is terminated. Termination is unexpected."], "pid": "raylet", "is_err": False}
    ray._private.worker.print_to_stdstream(notice, ignore_prefix=False)
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.count("Raylet is terminated") == 1


@pytest.mark.slow
def test_a_job_survives_a_killed_worker_node_and_prints_only_json(
    ray_cluster, zooens_home, postgres_url, monkeypatch, tmp_path
):
    from ray._private import ray_constants

    from zooens.service import registry
    from zooens.service.db.session import dispose_engines, session_scope
    from zooens.settings import get_settings

    cluster, workers = ray_cluster
    empty_postgres(postgres_url)  # one PostgreSQL, as a multi-node deployment has
    monkeypatch.setenv("ZOOENS_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet", "tiny-resnet"])
    env = {
        **os.environ,
        **LOOPBACK_ONLY,
        "ZOOENS_HOME": str(zooens_home),
        "ZOOENS_DATABASE_URL": postgres_url,
        "ZOOENS_EXECUTOR": "ray",
        "ZOOENS_RAY_ADDRESS": cluster.address,
    }
    args = ["-v", "run", "--dataset", "digits", "--zoo", "user", "--resolution", "32", "--steps", "30"]
    args += ["--strategies", "linear", "--lr", "0.1,0.5", "--top-k", "2", "--seed", "0", "--json"]
    args += ["--taps", "none"]
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        cli = subprocess.Popen([ZOOENS, *args], env=env, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 240
        job_id = _job_id(deadline, cli, err)
        while time.monotonic() < deadline:  # a first unit is done; the other node is likely busy with the second
            first = re.search(RAN_ON, err.read_text())
            if first:
                break
            assert cli.poll() is None, err.read_text()[-3000:]
            time.sleep(0.1)
        else:
            pytest.fail("no unit was done in time")
        assert _beyond_loopback(_cluster_pids([cluster.head_node, *workers])) == []
        victim, survivor = sorted(workers, key=lambda w: w.node_id == first[2])
        _kill_node(victim.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
        assert cli.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, err.read_text()[-3000:]
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        dispose_engines()

    log = err.read_text()
    notice = re.search(r"\(raylet\).*(will be retried|marked dead|Raylet is terminated)", log)
    assert notice, "no notice of the lost node on stderr"  # Ray printed one: it went to stderr
    report = json.loads(out.read_text())  # stdout is the report and nothing else
    assert report["job"]["status"] == "succeeded"

    units = _units(job_id)
    assert len(units) == 2 + 2 * 2 + 1
    assert all(u.status == "done" and u.attempts == 1 for u in units), [(u.key, u.status, u.attempts) for u in units]
    with session_scope() as s:
        runs = registry.list_finetune_runs(s, job_id)
        assert sorted(r.unit_key for r in runs) == sorted(u.key for u in units if u.key.startswith("finetune:"))
        assert len(registry.get_ranking(s, job_id)) == 2
        assert registry.get_job_ensemble(s, job_id) is not None

    ran_on = re.findall(RAN_ON, log)
    assert sorted(key for key, _ in ran_on) == sorted(u.key for u in units)  # each unit's result was taken once
    nodes = {node for _, node in ran_on}
    assert nodes <= {w.node_id for w in workers}, "a unit ran on the head node, which has no CPU for tasks"
    assert survivor.node_id in nodes, "the surviving worker node ran nothing"
