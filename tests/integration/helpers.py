"""Shared pieces of the scheduler integration tests: a running `phalanx run` and node pools."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from kube import api_path
from localcluster.bulk import create_all, ensure_namespace, wait_until
from localcluster.ports import free_port
from localcluster.synthnodes import schedulable
from topology.synthetic import ClusterSpec, synth_nodes

NS = "sched-test"
POOL = "phalanx.dev/test-pool"


def start_phalanx(kubeconfig, log_path, config: str | None = None) -> subprocess.Popen:
    """A `phalanx run` process with its own explain port; `process.url` is its API."""
    port = free_port()
    args = [sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig", str(kubeconfig),
            "--http-address", f"127.0.0.1:{port}"]
    if config is not None:
        config_path = log_path.with_suffix(".yaml")
        config_path.write_text(config)
        args += ["--config", str(config_path)]
    with open(log_path, "a") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    process.url = f"http://127.0.0.1:{port}"
    process.log_path = log_path
    return process


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def scrape(url: str, metric: str) -> float:
    """One sample of a Prometheus metric from a running phalanx (0 when absent)."""
    import httpx

    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == metric:
            return float(value)
    return 0.0


@pytest.fixture(scope="session")
def phalanx(local_cluster, kube, tmp_path_factory):
    """The session's `phalanx run` (schedulerName phalanx, admin credentials)."""
    process = start_phalanx(local_cluster.kubeconfig,
                            tmp_path_factory.mktemp("phalanx") / "phalanx.log")
    ensure_namespace(kube, NS)
    try:
        yield process
    finally:
        stop_process(process)
        print(process.log_path.read_text()[-5000:])


def pool_nodes(kube, pool: str, count: int, seed: int, fanout=(2, 3, 16), batch: str = "",
               ragged: float = 0.25):
    """`count` Ready synthetic nodes labelled with the pool; `batch` names a second set;
    `ragged` 0 gives every bottom domain exactly `fanout[-1]` nodes."""
    nodes = synth_nodes(ClusterSpec(nodes=count, fanout=fanout, seed=seed, ragged=ragged))
    for node in nodes:
        name = f"{pool}{batch}-{node['metadata']['name']}"
        node["metadata"]["name"] = name
        node["metadata"]["labels"].update({"kubernetes.io/hostname": name, POOL: pool})
    create_all(kube, nodes)
    # The gang must be solved against the whole pool: wait until KWOK has every node
    # Ready and the node-lifecycle controller has lifted its not-ready taint, then give
    # the scheduler's node watch a moment to deliver those updates.
    names = {n["metadata"]["name"] for n in nodes}

    def ready() -> int:
        items = kube.get(api_path("", "v1", "nodes"), labelSelector=f"{POOL}={pool}")["items"]
        return sum(1 for n in items if n["metadata"]["name"] in names and schedulable(n))
    wait_until(lambda: ready() == count, 60, f"{count} {pool}{batch} nodes Ready")
    time.sleep(1.0)
    return nodes


def statefulset(name: str, replicas: int, pool: str, gpus: int = 8, annotations=None):
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {"schedulerName": "phalanx", "nodeSelector": {POOL: pool},
                         "containers": [{"name": "w", "image": "trainer", "resources": {
                             "limits": {"nvidia.com/gpu": str(gpus)}}}]}}},
    }


def pods_of(kube, app: str):
    return kube.get(api_path("", "v1", "pods", NS), labelSelector=f"app={app}")["items"]


def events_for(kube, name: str):
    return kube.get(api_path("", "v1", "events", NS),
                    fieldSelector=f"involvedObject.name={name}")["items"]


CRD = "podgroups.scheduling.x-k8s.io"


def install_pod_group_crd(kube) -> None:
    """Applies manifests/crd/podgroup.yaml and waits until the API serves it."""
    import yaml

    from kube import ApiError
    from localcluster.binaries import REPO

    crd = yaml.safe_load((REPO / "manifests" / "crd" / "podgroup.yaml").read_text())
    path = api_path("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    try:
        kube.create(path, crd)
    except ApiError as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        status = kube.get(f"{path}/{CRD}").get("status") or {}
        return any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in status.get("conditions") or ())
    wait_until(established, 60, "PodGroup CRD established")


def pod_group(name: str, min_member: int, **spec_extra) -> dict:
    return {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"minMember": min_member, **spec_extra}}


def group_pods(group: str, count: int, pool: str, gpus: int = 8) -> list[dict]:
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"{group}-{i}", "namespace": NS,
                          "labels": {"scheduling.x-k8s.io/pod-group": group, "app": group}},
             "spec": {"schedulerName": "phalanx", "nodeSelector": {POOL: pool},
                      "containers": [{"name": "w", "image": "x", "resources": {
                          "limits": {"nvidia.com/gpu": str(gpus)}}}]}}
            for i in range(count)]


def pod_group_path(name: str | None = None) -> str:
    return api_path("scheduling.x-k8s.io", "v1alpha1", "podgroups", NS, name)


def bound(pods: list[dict]) -> list[dict]:
    return [p for p in pods if p["spec"].get("nodeName")]


def token_kubeconfig(kube, admin_kubeconfig, namespace: str, account: str, target):
    """A kubeconfig that authenticates as a ServiceAccount (a TokenRequest token)."""
    import yaml

    review = kube.create(
        api_path("", "v1", "serviceaccounts", namespace, account, "token"),
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}})
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    target.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": account, "user": {"token": review["status"]["token"]}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": account}}]}))
    return target


def gpus_per_node(kube, pool: str):
    """GPUs requested per node of a pool by its unfinished pods, from the API server."""
    from collections import Counter

    nodes = {n["metadata"]["name"] for n in kube.get(
        api_path("", "v1", "nodes"), labelSelector=f"{POOL}={pool}")["items"]}
    used: Counter = Counter()
    for pod in kube.get(api_path("", "v1", "pods"))["items"]:
        node = pod["spec"].get("nodeName")
        if node in nodes and pod["status"].get("phase") not in ("Succeeded", "Failed"):
            for c in pod["spec"]["containers"]:
                used[node] += int(((c.get("resources") or {}).get("limits") or {})
                                  .get("nvidia.com/gpu", 0))
    return used


def readyz(process) -> int:
    """HTTP status of a running phalanx's /readyz (0 when it does not answer)."""
    import httpx

    try:
        return httpx.get(f"{process.url}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0
