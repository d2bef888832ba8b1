"""A real Redis Cluster of the tests' own: three masters with a replica each, on loopback.

Six ``redis-server --cluster-enabled yes`` processes joined by ``redis-cli --cluster
create``. A short node timeout makes a replica take over within a few seconds when a
test kills its master.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from tests.support.servers import free_port

__all__ = ["RedisCluster", "TestCluster"]


def _cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class TestCluster:
    __test__ = False  # not a test class, whatever its name

    def __init__(self, workdir: Path, nodes: int = 6) -> None:
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server is not installed; scripts/test installs it (apt-get install redis-server)")
        self.workdir = workdir
        self.ports = [_cluster_port() for _ in range(nodes)]
        self.processes: dict[int, subprocess.Popen] = {}
        for port in self.ports:
            node_dir = workdir / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            self.processes[port] = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                 "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
                 "--dir", str(node_dir), "--logfile", str(node_dir / "redis.log")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        for port in self.ports:
            self._wait_up(port)
        subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{port}" for port in self.ports], "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok()
        #: The URL chatapp takes: every node, so a client finds the cluster from any.
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:3])

    def _wait_up(self, port: int) -> None:
        client = redis.Redis(port=port, socket_timeout=2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {port} did not start") from None
                time.sleep(0.05)

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says the cluster is ok and every slot is served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for port, process in self.processes.items():
                if process.poll() is not None:
                    continue
                try:
                    info = redis.Redis(port=port, socket_timeout=2).cluster("info")
                    states.append(info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == 16384)
                except redis.RedisError:
                    states.append(False)
            if states and all(states):
                return
            time.sleep(0.2)
        raise RuntimeError("the cluster did not become ok")

    def client(self) -> RedisCluster:
        from redis.cluster import ClusterNode

        live = [ClusterNode("127.0.0.1", port) for port, process in self.processes.items() if process.poll() is None]
        return RedisCluster(startup_nodes=live, socket_timeout=5)

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        node = self.client().get_node_from_key(key)
        return int(node.port)

    def kill(self, port: int) -> None:
        self.processes[port].kill()
        self.processes[port].wait(5)

    def flush(self) -> None:
        self.client().flushall(target_nodes=RedisCluster.PRIMARIES)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
