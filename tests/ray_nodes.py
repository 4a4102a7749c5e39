"""A loopback Ray cluster of ``ray start`` nodes on this machine, for the tests and benchmarks that
need real nodes: each node binds 127.0.0.1, runs in a session (process group) of its own with its
own temporary folder and free ports, so that killing it kills exactly its processes and the workers
under them, never another Ray on the machine."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RAY = Path(sys.executable).parent / "ray"
START_SECONDS = 120  # for `ray start` of one node


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_ports() -> list[str]:
    """Free ports for every port a node opens that would otherwise default to a fixed number (and
    collide with the other node, or with another Ray on the machine)."""
    flags = (
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
    )
    return [item for flag in flags for item in (flag, str(free_port()))]


def process_table() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, process group)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def group_and_children(group: int) -> set[int]:
    """The live processes of process group ``group`` and all their descendants (Ray's workers run in
    process groups of their own, under their node's raylet)."""
    table = process_table()
    found = {pid for pid, (_, pgid) in table.items() if pgid == group}
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in table.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


@dataclass
class Node:
    """A node started by ``ray start`` in a session of its own: ``group`` is its process group."""

    group: int
    temp_dir: Path

    def kill(self) -> None:
        """SIGKILL every process of the node and its workers; wait (bounded) until they are gone."""
        for _ in range(50):
            alive = group_and_children(self.group)
            if not alive:
                return
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        raise AssertionError(f"processes of the Ray node in group {self.group} survived SIGKILL: {alive}")

    def node_id(self) -> str:
        """The Ray node id of this node (its session folder names its port files after it)."""
        [found] = {p.name.rsplit("_", 1)[1] for p in (self.temp_dir / "session_latest").glob("*_port_*")}
        return found

    def ran_driver(self, pid: int) -> bool:
        """Whether the driver process ``pid`` joined the cluster on this node (its log is here)."""
        return any((self.temp_dir / "session_latest" / "logs").glob(f"python-core-driver-*_{pid}.log"))


def start_node(args: list[str], temp_dir: Path, env: dict[str, str]) -> Node:
    """``ray start ARGS`` on 127.0.0.1 with its own temporary folder, in a new session."""
    temp_dir.mkdir(parents=True)
    command = [str(RAY), "start", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    started = subprocess.Popen(
        [*command, "--temp-dir", str(temp_dir), *node_ports(), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output, _ = started.communicate(timeout=START_SECONDS)
    node = Node(started.pid, temp_dir)
    if started.returncode != 0:
        node.kill()
        raise AssertionError(f"ray start failed:\n{output}")
    return node


@contextlib.contextmanager
def two_nodes(
    root: Path, env: dict[str, str], head_env: dict[str, str] | None = None, second_env: dict[str, str] | None = None
) -> Iterator[tuple[str, Node, Node]]:
    """A head and a second node of one CPU each under ``root`` (short: Ray's socket paths live under
    it), with ``env`` and each node's additions; yields the head's address and both nodes, and kills
    both at the end, whatever happened."""
    port = free_port()
    nodes: list[Node] = []
    try:
        head_flags = ["--head", "--port", str(port), "--include-dashboard", "false"]
        head_flags += ["--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port())]
        nodes.append(start_node(head_flags, root / "head", {**env, **(head_env or {})}))
        address = f"127.0.0.1:{port}"
        nodes.append(start_node(["--address", address], root / "second", {**env, **(second_env or {})}))
        yield address, nodes[0], nodes[1]
    finally:
        for node in reversed(nodes):
            node.kill()
