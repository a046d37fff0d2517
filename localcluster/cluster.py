"""A real local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and kwok-controller (fake kubelets) as local processes, managed through `kwokctl --runtime
binary` with binaries built from Go modules (no container engine, no downloads).

Cluster state lives under one work folder (default ~/.cache/phalanx/kwok); each cluster's
processes carry its folder in their command line, which is how `processes()` finds them
and how `down()` proves nothing is left behind. Clusters named `<prefix><pid>` belong to
that process: one whose process is gone is stale and removed by the next `up()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kube import ApiError, KubeClient, RetryPolicy
from kube.resources import NODES, SERVICE_ACCOUNTS
from localcluster.binaries import ensure_binaries, kubernetes_version
from localcluster.controllers import RunningController, start_controllers, stop_controllers

DEFAULT_WORKDIR = Path(
    os.environ.get("PHALANX_KWOK_WORKDIR", Path.home() / ".cache" / "phalanx" / "kwok")
)
OWNED_PREFIX = "phalanx-test-"
ETCD_VERSION = "3.6.16"

# Kubernetes' own gang API (scheduling.k8s.io/v1alpha2 PodGroups, pods' spec.schedulingGroup)
# is alpha in 1.36: served here by default, so Phalanx's native-PodGroup source and
# kube-scheduler's GangScheduling plugin (a benchmark peer) run against the real API.
FEATURE_GATES = "GenericWorkload=true,GangScheduling=true,TopologyAwareWorkloadScheduling=true"
RUNTIME_CONFIG = "scheduling.k8s.io/v1alpha2=true"

# Raised apiserver limits and no client QPS limits, as Kubernetes' own scale tests run;
# etcd skips fsync (a throwaway cluster: durability buys nothing, and fsync on a shared
# disk would make every benchmark measure the disk).
EXTRA_ARGS: dict[str, dict[str, str]] = {
    "kube-apiserver": {"max-requests-inflight": "3000", "max-mutating-requests-inflight": "1000",
                       # Webhooks behind a Service are dialled at its endpoints (there is no
                       # kube-proxy): localcluster.controllers runs controllers that way.
                       "enable-aggregator-routing": "true"},
    "etcd": {"unsafe-no-fsync": "true", "quota-backend-bytes": str(8 << 30)},
}


class ClusterError(RuntimeError):
    """The control plane did not come up or go down; the message carries kwokctl's output."""


def _listen_ports(argv: list[bytes]) -> list[int]:
    """The TCP ports a component listens on, from its command line (`--secure-port=N`,
    `--listen-client-urls=http://host:N`, `--bind-address`-style `--port=N`)."""
    ports = []
    for arg in argv:
        text = arg.decode(errors="replace")
        match = re.match(r"--(?:secure-port|port)=(\d+)$", text) or re.match(
            r"--listen-(?:client|peer)-urls=\S*:(\d+)$", text)
        if match and int(match.group(1)) > 0:
            ports.append(int(match.group(1)))
    return ports


def _wait_port_free(port: int, deadline: float) -> None:
    """Until nothing listens on `port` (or the deadline passes)."""
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
                return
            except OSError:
                time.sleep(0.1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class LocalCluster:
    name: str = "phalanx-dev"
    workdir: Path = DEFAULT_WORKDIR
    bin_dir: Path | None = None
    extra_args: dict[str, dict[str, str]] = field(default_factory=dict)
    audit_policy: str | None = None
    """An audit Policy (YAML) for the apiserver; its log is `audit_log`."""
    controllers: tuple[str, ...] = ()
    """Workload controllers to run with it (`localcluster.controllers`: jobset, lws,
    training-operator)."""
    kwokctl_args: tuple[str, ...] = ()
    """Extra `kwokctl create cluster` flags (e.g. `--heartbeat-factor`,
    `--node-lease-duration-seconds`): a fleet of 100,000 KWOK nodes needs slower heartbeats
    than the defaults every test runs with, so none are added unless asked for."""
    kwok_options: dict[str, Any] = field(default_factory=dict)
    """KwokConfiguration options for kwok-controller (e.g. `nodePlayStageParallelism`:
    KWOK turns 4 nodes Ready at a time by default, which caps a large fleet at tens of
    nodes/s); none unless asked for."""
    _kube: KubeClient | None = field(default=None, repr=False)
    _running: list[RunningController] = field(default_factory=list, repr=False)

    @property
    def cluster_dir(self) -> Path:
        return self.workdir / "clusters" / self.name

    @property
    def kubeconfig(self) -> Path:
        return self.cluster_dir / "kubeconfig.yaml"

    @property
    def audit_log(self) -> Path:
        return self.cluster_dir / "logs" / "audit.log"

    @classmethod
    def for_this_process(cls, suffix: str = "", **kwargs: Any) -> LocalCluster:
        """A cluster owned by this process: stale once the process is gone."""
        return cls(name=f"{OWNED_PREFIX}{os.getpid()}{'-' + suffix if suffix else ''}",
                   **kwargs)

    # -- kwokctl ---------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        bin_dir = self.bin_dir or ensure_binaries()
        self.bin_dir = bin_dir
        env = os.environ.copy()
        env.update(
            KWOK_WORKDIR=str(self.workdir),
            KWOK_KUBE_VERSION=kubernetes_version(),
            KWOK_KUBE_BINARY_PREFIX=str(bin_dir),
            KWOK_KUBECTL_BINARY=str(bin_dir / "kubectl"),
            KWOK_CONTROLLER_BINARY=str(bin_dir / "kwok"),
            KWOK_ETCD_BINARY=str(bin_dir / "etcd"),
            KWOK_ETCD_VERSION=ETCD_VERSION,
            PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def _kwokctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = self._env()
        assert self.bin_dir is not None
        return subprocess.run(
            [str(self.bin_dir / "kwokctl"), *args, "--name", self.name],
            capture_output=True, text=True, env=env, timeout=timeout,
        )

    # -- lifecycle -------------------------------------------------------------------
    def up(self, timeout: float = 180) -> LocalCluster:
        """Starts the cluster (or reuses it when this name is already up and healthy) and
        waits until it serves pods: apiserver ready and the default ServiceAccount made."""
        remove_stale_clusters(self.workdir)
        if self.cluster_dir.exists():
            if self.healthy():
                self.start_controllers(self.controllers)
                return self
            self.down()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / f"{self.name}.kwokctl.yaml"
        config.write_text(self._kwokctl_config())
        audit: list[str] = []
        if self.audit_policy is not None:
            policy = self.workdir / f"{self.name}.audit.yaml"
            policy.write_text(self.audit_policy)
            audit = ["--kube-audit-policy", str(policy)]
        done = self._kwokctl(
            "create", "cluster", "--config", str(config), "--runtime", "binary",
            "--kubeconfig", "", "--disable-qps-limits", "--kube-authorization",
            "--kube-admission", "--kube-feature-gates", FEATURE_GATES,
            "--kube-runtime-config", RUNTIME_CONFIG, *audit, *self.kwokctl_args,
            "--wait", f"{int(timeout)}s",
            timeout=timeout + 60,
        )
        if done.returncode != 0:
            logs = self._collect_logs()
            self.down()
            raise ClusterError(
                f"kwokctl create cluster {self.name} failed (exit {done.returncode}):\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{logs}"
            )
        self._wait_serving(deadline=time.monotonic() + timeout)
        self.start_controllers(self.controllers)
        return self

    def start_controllers(self, names: tuple[str, ...] | list[str]) -> None:
        """Starts the named workload controllers that are not running yet (idempotent):
        built from their Go modules, installed from their own manifests."""
        have = set(self.running_controllers)
        wanted = [n for n in names if n not in have]
        if wanted:
            self._running += start_controllers(self.kube(), self.kubeconfig,
                                               self.cluster_dir, wanted)

    @property
    def running_controllers(self) -> list[str]:
        """Controllers running for this cluster, whoever started them (each runs in its
        own folder under the cluster's, which is how another process finds it)."""
        folder = self.cluster_dir / "controllers"
        found = []
        for pid in self.processes():
            try:
                cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            except OSError:
                continue
            if cwd.parent == folder:
                found.append(cwd.name)
        return sorted(found)

    def _kwokctl_config(self) -> str:
        """Component flags as a KwokctlConfiguration: kwokctl 0.8's --extra-args mis-indexes
        a second flag for the same component, the config file's componentsPatches do not."""
        merged = {name: dict(args) for name, args in EXTRA_ARGS.items()}
        for name, args in self.extra_args.items():
            merged.setdefault(name, {}).update(args)
        patches = [
            {"name": name,
             "extraArgs": [{"key": key, "value": value} for key, value in sorted(args.items())]}
            for name, args in sorted(merged.items())
        ]
        text = json.dumps({
            "kind": "KwokctlConfiguration", "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "componentsPatches": patches,
        }, indent=2)
        if self.kwok_options:  # a second document: kwokctl hands it to kwok-controller
            text += "\n---\n" + json.dumps({
                "kind": "KwokConfiguration", "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
                "options": self.kwok_options}, indent=2)
        return text

    def _wait_serving(self, deadline: float) -> None:
        kube = self.kube()
        sa = SERVICE_ACCOUNTS.path("default", "default")
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                kube.request("GET", "/readyz")
                kube.get(sa)
                return
            except (ApiError, ValueError) as exc:
                last = exc
                time.sleep(0.25)
        raise ClusterError(f"cluster {self.name} not serving in time: {last}\n"
                           f"{self._collect_logs()}")

    def down(self) -> None:
        """Stops every process of the cluster and removes its folder; verifies the result."""
        stop_controllers(self._running)
        self._running = []
        if self.cluster_dir.exists():
            # When kwokctl cannot read its own state, the hard kill below still cleans up.
            self._kwokctl("delete", "cluster", timeout=120)
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.cluster_dir, ignore_errors=True)
        (self.workdir / f"{self.name}.kwokctl.yaml").unlink(missing_ok=True)
        (self.workdir / f"{self.name}.audit.yaml").unlink(missing_ok=True)
        self._kube = None
        left = self.processes()
        if left:
            raise ClusterError(f"cluster {self.name}: processes survived teardown: {left}")

    def restart_component(self, binary: str, downtime_s: float = 0.0,
                          timeout: float = 60) -> None:
        """Kills one component (SIGKILL, as a crash) and starts it again with the same
        command line, environment and log; for the apiserver, waits until it serves.
        kwokctl's binary runtime does not supervise its processes, so this is how tests
        restart the apiserver under a running scheduler."""
        pid = next((p for p in self.processes()
                    if Path(_cmdline(p).split(" ", 1)[0]).name == binary), None)
        if pid is None:
            raise ClusterError(f"cluster {self.name}: no running {binary}")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
        env = dict(line.split(b"=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes()
                   .split(b"\0") if b"=" in line)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        # A Go process's main thread shows as a zombie while its other threads are still
        # exiting and its listening sockets still open: a new copy started at once could
        # fail with "address already in use" (seen on a loaded machine).
        for port in _listen_ports(argv):
            _wait_port_free(port, deadline)
        time.sleep(downtime_s)
        log = self.cluster_dir / "logs" / f"{binary}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        pid_file = self.cluster_dir / "pids" / f"{binary}.pid"
        if pid_file.exists():
            pid_file.write_text(str(process.pid))
        if binary == "kube-apiserver":
            self._kube = None
            self._wait_serving(time.monotonic() + timeout)

    def processes(self) -> list[int]:
        """PIDs of every live process whose command line names this cluster's folder."""
        marker = str(self.cluster_dir) + "/"
        found = []
        for entry in Path("/proc").iterdir():
            pid = int(entry.name) if entry.name.isdigit() else os.getpid()
            if pid != os.getpid() and marker in _cmdline(pid) + " ":
                found.append(pid)
        return sorted(found)

    def healthy(self) -> bool:
        if not self.kubeconfig.exists():
            return False
        try:
            self.kube(retry=RetryPolicy(attempts=1)).request("GET", "/readyz", timeout=5)
        except (ApiError, ValueError, OSError):
            return False
        return True

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name, "kubeconfig": str(self.kubeconfig),
            "exists": self.cluster_dir.exists(), "healthy": self.healthy(),
            "processes": len(self.processes()),
        }
        if info["healthy"]:
            kube = self.kube()
            info["version"] = kube.get("/version").get("gitVersion")
            items, _ = kube.list_all(NODES.path())
            info["nodes"] = len(items)
            info["ready_nodes"] = sum(1 for node in items if node_ready(node))
        return info

    def kube(self, retry: RetryPolicy | None = None) -> KubeClient:
        if retry is not None:
            return KubeClient.from_kubeconfig(str(self.kubeconfig), retry=retry)
        if self._kube is None:
            self._kube = KubeClient.from_kubeconfig(str(self.kubeconfig), pool_size=128)
        return self._kube

    def _collect_logs(self) -> str:
        logs = self.cluster_dir / "logs"
        if not logs.is_dir():
            return ""
        tails = []
        for log in sorted(logs.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-15:]
            tails.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(tails)


def node_ready(node: dict[str, Any]) -> bool:
    for condition in node.get("status", {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def remove_stale_clusters(workdir: Path = DEFAULT_WORKDIR) -> list[str]:
    """Deletes clusters owned by processes that no longer exist (a crashed test run)."""
    removed: list[str] = []
    clusters = workdir / "clusters"
    if not clusters.is_dir():
        return removed
    for entry in sorted(clusters.iterdir()):
        match = re.fullmatch(re.escape(OWNED_PREFIX) + r"(\d+)(-[a-z0-9]+)?", entry.name)
        if match and not _pid_alive(int(match.group(1))):
            LocalCluster(name=entry.name, workdir=workdir).down()
            removed.append(entry.name)
    return removed
