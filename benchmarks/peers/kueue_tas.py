"""Kueue v0.17.0 Topology-Aware Scheduling (`kueue-tas`): Kueue admits each gang as one
Workload and picks its nodes; the cluster's own kube-scheduler binds the pods.

How a gang goes through it (Kueue's StatefulSet and pod integrations,
pkg/controller/jobs/statefulset and pod, and pkg/cache/scheduler/tas_*): the StatefulSet
carries `kueue.x-k8s.io/queue-name`, so Kueue's StatefulSet webhook marks its pod template
and its pod webhook gives every pod the scheduling gates `kueue.x-k8s.io/admission` and
`kueue.x-k8s.io/topology` and the pod-group labels. Once all `replicas` pods exist, Kueue
makes one Workload of them, reserves ClusterQueue quota, and TAS assigns the pod set to
domains of the Topology: with `kueue.x-k8s.io/podset-preferred-topology` at the lowest
network level, it tries one domain of that level, else climbs a level and uses as few
domains as fit. Kueue then sets a `kubernetes.io/hostname` nodeSelector per pod (hostname
is the Topology's last level) and lifts the gates; kube-scheduler binds each pod to that
node. `KueueTasRequired` sends `podset-required-topology` instead, at the level
kube-scheduler-tas is given (the lowest whose largest domain can hold the gang now).

Installed as Kueue's own manifests describe it, read from its module
(hack/build-kueue.sh copies config/components/{crd,webhook,manager}): its CRDs with the
kustomize patches that give five of them a conversion webhook, its webhook configurations
with their namespace-selector patches (named `kueue-…` as config/default's namePrefix
does), and its shipped Configuration. What a local process changes:
- webhooks (and CRD conversion) at `https://127.0.0.1:PORT/<path>` with a CA generated
  per start in `caBundle`, the serving pair in the Configuration's `webhook.certDir`, and
  `internalCertManagement` off (its rotation issues certificates for the in-cluster
  Service name);
- no leader election, metrics off, health probes on a local port (how start() knows it
  serves), no client-side rate limit (the cluster's components run without one);
- integrations `pod` and `statefulset` only (the shipped list adds a dozen frameworks
  whose controllers would watch for CRDs this cluster does not have);
- feature gate VisibilityOnDemand off: its aggregated API server on a fixed port is not
  used here; TopologyAwareScheduling (beta, on by default in v0.17) is named on.
Kueue reads a metrics serving pair from the fixed path /etc/kueue/metrics/certs at start
even with metrics off (cmd/kueue/main.go, when internal certificates are off); the pair is
written there, as its Deployment mounts a Secret.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from benchmarks.peers import (
    ApiObject,
    GangSpec,
    PeerUnavailable,
    cluster_scheduler_pid,
    run_command,
)
from benchmarks.peers.kube_scheduler_tas import required_level
from kube import ApiError, KubeClient
from kube.resources import (
    CRDS,
    MUTATING_WEBHOOKS,
    NODES,
    PODS,
    VALIDATING_WEBHOOKS,
    Resource,
)
from localcluster.binaries import REPO
from localcluster.controllers import load_documents, make_certificates
from localcluster.ports import free_port
from topology.presets import PRESETS
from topology.quantity import parse_quantity

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster
    from topology.snapshot import TopologySnapshot

BUILD_SCRIPT = REPO / "hack" / "build-kueue.sh"
# Kueue's API as this peer writes it (v1beta2, the storage version in v0.17.0). Kept here,
# not in kube/resources.py, which lists what Phalanx itself touches.
GROUP, VERSION = "kueue.x-k8s.io", "v1beta2"
TOPOLOGIES = Resource(GROUP, VERSION, "topologies", "Topology", namespaced=False)
RESOURCE_FLAVORS = Resource(GROUP, VERSION, "resourceflavors", "ResourceFlavor",
                            namespaced=False)
CLUSTER_QUEUES = Resource(GROUP, VERSION, "clusterqueues", "ClusterQueue", namespaced=False)
LOCAL_QUEUES = Resource(GROUP, VERSION, "localqueues", "LocalQueue")
WEBHOOK_KINDS = {r.kind: r for r in (MUTATING_WEBHOOKS, VALIDATING_WEBHOOKS)}

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PREFERRED = "kueue.x-k8s.io/podset-preferred-topology"
REQUIRED = "kueue.x-k8s.io/podset-required-topology"
MANAGED = "kueue.x-k8s.io/managed"
"""Kueue's label on the pods it manages, and its finalizer on them (the same key)."""
HOSTNAME = "kubernetes.io/hostname"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
GPU = "nvidia.com/gpu"
QUOTA_RESOURCES = ("cpu", "memory", GPU)
OBJECT_NAME = "phalanx-bench"
"""The Topology, ResourceFlavor and ClusterQueue this peer creates."""
NAME_PREFIX = "kueue-"
"""config/default's kustomize namePrefix: the webhook configurations' installed names."""
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")


# -- manifests ------------------------------------------------------------------------
def strategic_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`patch` merged into `base` (in place) as kustomize merges the patches Kueue ships:
    maps key by key, lists of named maps (`webhooks`) item by `name`, other values
    replaced."""
    for key, value in patch.items():
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            strategic_merge(old, value)
        elif (isinstance(value, list) and isinstance(old, list)
              and all(isinstance(v, dict) and "name" in v for v in value + old)):
            by_name = {item["name"]: item for item in old}
            for item in value:
                if item["name"] in by_name:
                    strategic_merge(by_name[item["name"]], item)
                else:
                    old.append(item)
        else:
            base[key] = copy.deepcopy(value)
    return base


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """The documents of a kustomization's `resources`, with its strategic-merge `patches`
    (a file by `path` or inline `patch`) applied to the document of the same kind and
    name. Kueue's component kustomizations use nothing else."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = [doc for resource in kustomization.get("resources") or ()
            for doc in load_documents(folder / resource)]
    for entry in kustomization.get("patches") or ():
        patches = (load_documents(folder / entry["path"]) if "path" in entry
                   else [yaml.safe_load(entry["patch"])])
        for patch in patches:
            targets = [doc for doc in docs if doc.get("kind") == patch.get("kind")
                       and doc["metadata"]["name"] == patch["metadata"]["name"]]
            if not targets:
                raise ValueError(f"{folder}: patch for {patch.get('kind')} "
                                 f"{patch['metadata']['name']} matches no resource")
            for doc in targets:
                strategic_merge(doc, {k: v for k, v in patch.items() if k != "metadata"})
    return docs


def client_config(service_path: str, port: int, ca_pem: bytes) -> dict[str, str]:
    """A webhook client config at this machine's Kueue process instead of its Service."""
    return {"url": f"https://127.0.0.1:{port}{service_path}",
            "caBundle": base64.b64encode(ca_pem).decode()}


def crd_documents(folder: Path, port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """Kueue's CRDs (config/components/crd) with its conversion webhooks pointed here."""
    crds = [doc for doc in kustomize(folder) if doc.get("kind") == "CustomResourceDefinition"]
    for crd in crds:
        webhook = (crd["spec"].get("conversion") or {}).get("webhook")
        if webhook is not None:
            path = webhook["clientConfig"]["service"].get("path", "/convert")
            webhook["clientConfig"] = client_config(path, port, ca_pem)
    return crds


def webhook_documents(folder: Path, port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations (config/components/webhook), each hook pointed here."""
    docs = [doc for doc in kustomize(folder) if doc.get("kind") in WEBHOOK_KINDS]
    for doc in docs:
        doc["metadata"] = {"name": NAME_PREFIX + doc["metadata"]["name"]}
        for hook in doc["webhooks"]:
            hook["clientConfig"] = client_config(hook["clientConfig"]["service"]["path"],
                                                 port, ca_pem)
    return docs


def configuration(shipped: dict[str, Any], certs: Path, webhook_port: int,
                  health_port: int) -> dict[str, Any]:
    """Kueue's shipped Configuration with what a local process changes (module docstring)."""
    config = copy.deepcopy(shipped)
    config.update({
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(certs)},
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        # A negative qps leaves client-go without a rate limiter (cmd/kueue/main.go).
        "clientConnection": {"qps": -1, "burst": 10000},
        "integrations": {"frameworks": ["pod", "statefulset"]},
        "featureGates": {"TopologyAwareScheduling": True, "VisibilityOnDemand": False},
    })
    return config


# -- cluster objects ------------------------------------------------------------------
def topology_levels(nodes: Iterable[dict[str, Any]]) -> list[str]:
    """The AWS preset's label keys that every node carries, top to bottom, then hostname
    (Kueue assigns pods to nodes only when hostname is the last level)."""
    labels = [n["metadata"].get("labels") or {} for n in nodes]
    return [key for key in PRESETS["aws"].keys
            if labels and all(key in node for node in labels)] + [HOSTNAME]


def cluster_objects(nodes: list[dict[str, Any]]) -> list[ApiObject]:
    """Topology, ResourceFlavor (the GPU nodes' instance type, that Topology) and a
    ClusterQueue open to every namespace whose quota is the nodes' whole allocatable, so
    quota never binds before capacity does: TAS placement is what is measured."""
    gpu_nodes = [n for n in nodes if GPU in (n.get("status") or {}).get("allocatable", {})]
    types = sorted({(n["metadata"].get("labels") or {}).get(INSTANCE_TYPE, "")
                    for n in gpu_nodes})
    if len(types) != 1 or not types[0]:
        raise ValueError(f"expected GPU nodes of one {INSTANCE_TYPE}, got {types}")
    totals = {r: sum(parse_quantity(n["status"]["allocatable"].get(r, "0")) for n in gpu_nodes)
              for r in QUOTA_RESOURCES}
    topology = {"apiVersion": TOPOLOGIES.api_version, "kind": TOPOLOGIES.kind,
                "metadata": {"name": OBJECT_NAME},
                "spec": {"levels": [{"nodeLabel": key} for key in topology_levels(gpu_nodes)]}}
    flavor = {"apiVersion": RESOURCE_FLAVORS.api_version, "kind": RESOURCE_FLAVORS.kind,
              "metadata": {"name": OBJECT_NAME},
              "spec": {"nodeLabels": {INSTANCE_TYPE: types[0]}, "topologyName": OBJECT_NAME}}
    queue = {"apiVersion": CLUSTER_QUEUES.api_version, "kind": CLUSTER_QUEUES.kind,
             "metadata": {"name": OBJECT_NAME},
             "spec": {"namespaceSelector": {}, "resourceGroups": [{
                 "coveredResources": list(QUOTA_RESOURCES),
                 "flavors": [{"name": OBJECT_NAME, "resources": [
                     {"name": r, "nominalQuota": str(int(totals[r]))}
                     for r in QUOTA_RESOURCES]}]}]}}
    return [ApiObject(TOPOLOGIES, topology), ApiObject(RESOURCE_FLAVORS, flavor),
            ApiObject(CLUSTER_QUEUES, queue)]


def apply(kube: KubeClient, resource: Resource, doc: dict[str, Any],
          namespace: str | None = None) -> None:
    """Create, or replace what an earlier start left (a CRD or webhook configuration then
    carries an old CA)."""
    try:
        kube.create(resource.path(namespace), doc)
    except ApiError as exc:
        if exc.status != 409:
            raise
        path = resource.path(namespace, doc["metadata"]["name"])
        current = kube.get(path)
        body = copy.deepcopy(doc)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        kube.call("PUT", path, body=body)


def _condition(obj: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or ())


class KueueTas:
    """Kueue v0.17.0 as a local process, TAS with a preferred level per gang."""

    name = "kueue-tas"
    scheduler_name = "default-scheduler"
    workloads = frozenset({"statefulset"})
    required = False
    """Whether gangs carry `podset-required-topology` instead of `-preferred-`."""

    def __init__(self) -> None:
        self._binary: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._kube: KubeClient | None = None
        self._webhooks: list[dict[str, Any]] = []
        self._levels: list[str] = []

    def prepare(self) -> None:
        self._binary = Path(run_command(self.name, ["bash", str(BUILD_SCRIPT)]))

    def start(self, cluster: LocalCluster) -> None:
        if self._binary is None:
            self.prepare()
        assert self._binary is not None
        built = self._binary.parent
        kube = self._kube = cluster.kube()
        # Under the cluster's folder: the process names it in its command line, so the
        # cluster's teardown stops it even if this benchmark dies first.
        folder = cluster.cluster_dir / "peers" / self.name
        folder.mkdir(parents=True, exist_ok=True)
        ca_pem = make_certificates(folder / "certs")
        webhook_port, health_port = free_port(), free_port()
        step = f"write Kueue's metrics serving pair to {METRICS_CERT_DIR}"
        try:
            METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)
            for name in ("tls.crt", "tls.key"):
                shutil.copyfile(folder / "certs" / name, METRICS_CERT_DIR / name)
            step = f"install Kueue's CRDs from {built / 'crd'}"
            crds = crd_documents(built / "crd", webhook_port, ca_pem)
            for crd in crds:
                apply(kube, CRDS, crd)
            self._wait(lambda: all(_condition(kube.get(CRDS.path(name=c["metadata"]["name"])),
                                              "Established") for c in crds),
                       step, "CRDs Established", 60)
            shipped = yaml.safe_load(
                (built / "manager" / "controller_manager_config.yaml").read_text())
            config = folder / "config.yaml"
            config.write_text(json.dumps(configuration(shipped, folder / "certs",
                                                       webhook_port, health_port), indent=2))
            self._webhooks = webhook_documents(built / "webhook", webhook_port, ca_pem)
        except (ApiError, OSError, ValueError, KeyError) as exc:
            raise PeerUnavailable(self.name, step, str(exc)) from exc
        argv = [str(self._binary), f"--kubeconfig={cluster.kubeconfig}", f"--config={config}"]
        command = " ".join(argv)
        self._log = folder / "kueue.log"
        with open(self._log, "ab") as out:
            self._process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True, cwd=folder)
        url = f"http://127.0.0.1:{health_port}/readyz"
        self._wait(lambda: _serves(url), command, f"{url} ready", 120)
        try:
            # Only once it serves: every hook fails closed, pods included.
            for doc in self._webhooks:
                apply(kube, WEBHOOK_KINDS[doc["kind"]], doc)
            objects = cluster_objects(kube.list_all(NODES.path())[0])
            self._levels = [level["nodeLabel"] for level in objects[0].body["spec"]["levels"]]
            for obj in objects:
                apply(kube, obj.resource, obj.body)
        except (ApiError, ValueError) as exc:
            self.stop()
            raise PeerUnavailable(self.name, command, f"{exc}: {self._tail()}") from exc
        queue = CLUSTER_QUEUES.path(name=OBJECT_NAME)
        self._wait(lambda: _condition(kube.get(queue), "Active"), command,
                   f"ClusterQueue {OBJECT_NAME} Active (its Topology and flavor cached)", 60)

    def _wait(self, done: Callable[[], bool], command: str, what: str,
              timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise PeerUnavailable(self.name, command,
                                      f"exited {self._process.returncode}: {self._tail()}")
            if done():
                return
            time.sleep(0.2)
        self.stop()
        raise PeerUnavailable(self.name, command,
                              f"{what}: not within {timeout:.0f}s: {self._tail()}")

    def _tail(self) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-20:])

    def gang(self, name: str, size: int, snapshot: TopologySnapshot) -> GangSpec:
        """A LocalQueue of the gang's own in its namespace (the run loop creates it there
        before the StatefulSet), the queue label, and the topology annotation: preferred at
        the lowest network level, or required at the lowest level that can hold it now."""
        queue = {"apiVersion": LOCAL_QUEUES.api_version, "kind": LOCAL_QUEUES.kind,
                 "metadata": {"name": name}, "spec": {"clusterQueue": OBJECT_NAME}}
        if self.required:
            level, why = required_level(snapshot, size)
            annotation = {REQUIRED: level} if level is not None else {}
            note = why
        else:
            lowest = self._levels[-2]  # the last network level, above hostname
            annotation, note = {PREFERRED: lowest}, f"preferred {lowest}"
        return GangSpec(objects=(ApiObject(LOCAL_QUEUES, queue),),
                        pod_annotations=annotation, workload_labels={QUEUE_LABEL: name},
                        note=note)

    def pids(self, cluster: LocalCluster) -> list[int]:
        """Kueue (admission and TAS) and the cluster's kube-scheduler (the binds)."""
        assert self._process is not None, "start() first"
        return [self._process.pid, cluster_scheduler_pid(cluster)]

    def stop(self) -> None:
        """Webhook configurations first (they fail closed: with Kueue gone, no pod could be
        created), then the process, then Kueue's finalizer on the pods it managed: only
        Kueue removes it, so its pods, deleted after it stopped, would stay Terminating
        for good (the run loop may clear the gangs after stop()). Its CRDs and cluster
        objects stay with the cluster."""
        if self._kube is not None:
            for doc in self._webhooks:
                try:
                    self._kube.delete(WEBHOOK_KINDS[doc["kind"]].path(
                        name=doc["metadata"]["name"]))
                except ApiError as exc:
                    if exc.status != 404:
                        raise
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self._process.pid, 9)
                self._process.wait(10)
        self._process = None
        if self._kube is not None:
            release_pods(self._kube)


def release_pods(kube: KubeClient) -> int:
    """Removes Kueue's pod finalizer from every pod that carries its managed label;
    returns how many were changed."""
    pods = kube.list_all(PODS.path(), {"labelSelector": f"{MANAGED}=true"})[0]
    changed = 0
    for pod in pods:
        finalizers = pod["metadata"].get("finalizers") or []
        if MANAGED not in finalizers:
            continue
        meta = pod["metadata"]
        # The whole list minus Kueue's: with Kueue stopped nothing else edits it here.
        try:
            kube.call("PATCH", PODS.path(meta["namespace"], meta["name"]),
                      content_type="application/merge-patch+json",
                      body={"metadata": {"finalizers": [f for f in finalizers
                                                        if f != MANAGED]}})
            changed += 1
        except ApiError as exc:
            if exc.status != 404:
                raise
    return changed


class KueueTasRequired(KueueTas):
    """The constrained variant: `podset-required-topology` (a gang that fits in no single
    domain of that level stays pending)."""

    name = "kueue-tas-required"
    required = True


def _serves(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
