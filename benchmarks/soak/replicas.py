"""The two `phalanx run` replicas under test: each behind its own pausable proxy, with a
ServiceAccount's token (so APF and admission policies can single the scheduler out: the
admin's `system:masters` is exempt from both), leader election on, logs kept per
incarnation, and RSS sampled from /proc.

A replica killed with -9 is replaced by a fresh process on the same proxy (a crashed pod
restarted by its kubelet); each process is one `Incarnation` with its own RSS history,
since growth is only meaningful within one process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from benchmarks.soak.proxy import PausableProxy
from benchmarks.soak.workload import SCHEDULER
from kube import KubeClient, api_path
from localcluster.ports import free_port

LEASE_NS = "soak-system"
ACCOUNT = "phalanx"
USER = f"system:serviceaccount:{LEASE_NS}:{ACCOUNT}"
CONFIG = f"""
schedulerName: {SCHEDULER}
leaderElection: {{enabled: true, namespace: {LEASE_NS}, leaseName: phalanx-soak}}
"""


@dataclass
class Incarnation:
    """One `phalanx run` process: its RSS samples (monotonic time, KiB) and leadership."""

    process: subprocess.Popen[bytes]
    log: Path
    url: str
    started: float
    rss: list[tuple[float, int]] = field(default_factory=list)
    led_at: float | None = None
    ended: float | None = None
    killed: bool = False
    """Killed by a fault: its exit is no crash."""

    def sample_rss(self, now: float) -> None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.rss.append((now, int(line.split()[1])))
        except OSError:
            pass


@dataclass
class Replica:
    index: int
    proxy: PausableProxy
    kubeconfig: Path
    workdir: Path
    current: Incarnation | None = None
    history: list[Incarnation] = field(default_factory=list)
    frozen: bool = False
    trace_frames: int = 0
    """PYTHONTRACEMALLOC for each process (0: off): its census then names the source
    lines whose allocations grew (a diagnosis: tracing slows the scheduler)."""

    def start(self) -> Incarnation:
        port = free_port()
        config = self.workdir / "phalanx.yaml"
        config.write_text(CONFIG)
        log = self.workdir / f"replica{self.index}-{len(self.history)}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig",
                 str(self.kubeconfig), "--config", str(config),
                 "--http-address", f"127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **({"PYTHONTRACEMALLOC": str(self.trace_frames)}
                                      if self.trace_frames else {})})
        self.current = Incarnation(process, log, f"http://127.0.0.1:{port}", time.monotonic())
        self.history.append(self.current)
        return self.current

    def alive(self) -> bool:
        return self.current is not None and self.current.process.poll() is None

    def leader(self) -> bool:
        """What the process says on /readyz (a frozen or cut-off one answers nothing or
        no: either way it is not the one to fault)."""
        if not self.alive() or self.frozen:
            return False
        assert self.current is not None
        try:
            reply = httpx.get(f"{self.current.url}/readyz", timeout=1.0)
            return bool(reply.json().get("leader"))
        except (httpx.HTTPError, ValueError):
            return False

    def kill(self) -> None:
        assert self.current is not None
        self.current.killed = True
        os.kill(self.current.process.pid, signal.SIGKILL)
        self.current.process.wait(10)
        self.current.ended = time.monotonic()

    def freeze(self) -> None:
        assert self.current is not None
        os.kill(self.current.process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.current is not None and self.alive():
            os.kill(self.current.process.pid, signal.SIGCONT)
        self.frozen = False

    def census(self) -> None:
        """Asks the process to log its live objects by type (`phalanx run` on SIGUSR1),
        so that RSS growth found afterwards can be told by type from its log."""
        if self.current is not None and self.alive():
            os.kill(self.current.process.pid, signal.SIGUSR1)

    def stop(self) -> None:
        self.thaw()
        if self.current is not None and self.alive():
            self.current.process.terminate()
            try:
                self.current.process.wait(15)
            except subprocess.TimeoutExpired:
                self.current.process.kill()
                self.current.process.wait(10)
            self.current.ended = time.monotonic()
        self.proxy.stop()


def account_token(kube: KubeClient, namespace: str, binding: str, seconds: int) -> str:
    """A ServiceAccount (ACCOUNT in `namespace`, which must exist) bound to cluster-admin
    and a token for it: the scheduler under test authenticates as a workload, not as the
    admin (APF, admission policies and a restarted API server's RBAC treat it as one)."""
    kube.create(api_path("", "v1", "serviceaccounts", namespace),
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}})
    kube.create(api_path("rbac.authorization.k8s.io", "v1", "clusterrolebindings"), {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}]})
    return str(kube.create(
        api_path("", "v1", "serviceaccounts", namespace, ACCOUNT, "token"),
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": seconds}})["status"]["token"])


def token_kubeconfig(admin: Path, token: str, server_port: int, target: Path) -> Path:
    """The admin kubeconfig's cluster (CA) with the proxy as server and the SA's token."""
    config = yaml.safe_load(admin.read_text())
    cluster = dict(config["clusters"][0]["cluster"])
    cluster["server"] = f"https://127.0.0.1:{server_port}"
    target.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "soak",
        "clusters": [{"name": "soak", "cluster": cluster}],
        "users": [{"name": ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "soak", "context": {"cluster": "soak", "user": ACCOUNT}}]}))
    return target


def upstream_port(admin: Path) -> int:
    config = yaml.safe_load(admin.read_text())
    return int(str(config["clusters"][0]["cluster"]["server"]).rsplit(":", 1)[1])


def make_replicas(admin: Path, token: str, workdir: Path, count: int = 2,
                  trace_frames: int = 0) -> list[Replica]:
    replicas = []
    for index in range(count):
        proxy = PausableProxy(upstream_port(admin)).start()
        kubeconfig = token_kubeconfig(admin, token, proxy.port,
                                      workdir / f"replica{index}.kubeconfig")
        replicas.append(Replica(index, proxy, kubeconfig, workdir,
                                trace_frames=trace_frames))
    return replicas


def tracebacks(log: Path) -> list[str]:
    """Unhandled exceptions a log shows: each Traceback's last line (the exception)."""
    found: list[str] = []
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            tail = next((lines[j] for j in range(i + 1, len(lines))
                         if lines[j] and not lines[j].startswith((" ", "\t"))), "?")
            found.append(tail[:300])
    return found
