"""A second kube-scheduler-style process beside the cluster's own: its config file, its
start, readiness and stop. The TAS peer (the cluster's kube-scheduler binary) and the
Coscheduling peer (scheduler-plugins' build of it) run the same way, so one place does it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks.peers import PeerUnavailable
from localcluster.ports import free_port

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster


def scheduler_config(kubeconfig: Path, profile: dict[str, Any]) -> dict[str, Any]:
    """A KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) with one profile; no
    client rate limits (as the cluster's own scheduler runs); no leader election (a second
    scheduler beside the cluster's would otherwise wait for the same lease)."""
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "leaderElection": {"leaderElect": False},
        "clientConnection": {"kubeconfig": str(kubeconfig), "qps": 5000, "burst": 10000},
        "profiles": [profile],
    }


class SchedulerProcess:
    """One scheduler process for a peer, its files under the cluster's folder (its
    command line then names that folder, so the cluster's teardown stops it even if the
    benchmark dies first)."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.process: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None

    def start(self, cluster: LocalCluster, binary: Path, config: dict[str, Any],
              extra_args: Sequence[str] = (), timeout: float = 60) -> None:
        """Writes `config`, starts `binary` with it and returns once /readyz answers 200
        (informers synced); PeerUnavailable with the command and log tail otherwise."""
        folder = cluster.cluster_dir / "peers" / self.peer
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "config.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        port = free_port()
        argv = [str(binary), f"--config={path}", "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
                *extra_args]
        self.log = folder / "scheduler.log"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=folder)
        command, url = " ".join(argv), f"https://127.0.0.1:{port}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PeerUnavailable(self.peer, command,
                                      f"exited {self.process.returncode}: {self.tail()}")
            try:  # its serving certificate is self-signed; only the status matters
                if httpx.get(url, verify=False, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = self.tail()
        self.stop()
        raise PeerUnavailable(self.peer, command,
                              f"{url} not ready within {timeout:.0f}s: {tail}")

    def tail(self, lines: int = 20) -> str:
        if self.log is None:
            return ""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None, "start() first"
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s (idempotent)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
