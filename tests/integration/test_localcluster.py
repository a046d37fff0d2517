"""The local control plane is real: apiserver, controller-manager, scheduler and KWOK work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kube import api_path
from localcluster.binaries import kubernetes_version
from localcluster.bulk import create_all, ensure_namespace, wait_until
from localcluster.cluster import LocalCluster, node_ready, remove_stale_clusters
from localcluster.synthnodes import populate
from topology.presets import AWS_LAYER, AWS_ZONE_ID
from topology.synthetic import SYNTHETIC_LABEL, ClusterSpec, synth_nodes

pytestmark = pytest.mark.integration


def test_apiserver_reports_the_pinned_version(kube):
    assert kube.get("/version")["gitVersion"] == kubernetes_version()


def test_thousand_labelled_nodes_become_ready(kube):
    spec = ClusterSpec(nodes=1000, seed=5)
    done = populate(kube, spec)
    assert done.nodes.created + done.nodes.existed == 1000
    wanted = {n["metadata"]["name"] for n in synth_nodes(spec)}
    items, _ = kube.list_all(api_path("", "v1", "nodes"),
                             {"labelSelector": f"{SYNTHETIC_LABEL}=true"})
    nodes = [n for n in items if n["metadata"]["name"] in wanted]
    assert len(nodes) == 1000
    assert all(node_ready(node) for node in nodes)
    for node in nodes:
        labels = node["metadata"]["labels"]
        assert labels[AWS_ZONE_ID].startswith("usw2-az")
        assert all(labels[key].startswith("nn-") for key in AWS_LAYER[:3])
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"


def _pod(name: str, **spec_extra):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "lc-test", "labels": {"app": name}},
        "spec": {
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
            **spec_extra,
        },
    }


def test_plain_pod_is_bound_by_kube_scheduler_and_runs(kube):
    populate(kube, ClusterSpec(nodes=1000, seed=5))  # idempotent: nodes from the test above
    ensure_namespace(kube, "lc-test")
    create_all(kube, [_pod("plain")])
    path = api_path("", "v1", "pods", "lc-test", "plain")
    wait_until(lambda: kube.get(path)["status"].get("phase") == "Running", 60,
               "pod plain Running")
    pod = kube.get(path)
    assert pod["spec"]["nodeName"]
    assert pod["spec"]["schedulerName"] == "default-scheduler"
    events = kube.get(api_path("", "v1", "events", "lc-test"),
                      fieldSelector="involvedObject.name=plain")["items"]
    assert any(e["reason"] == "Scheduled" for e in events)


def test_statefulset_controller_creates_pods(kube):
    ensure_namespace(kube, "lc-test")
    sts = {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "lc-test"},
        "spec": {
            "replicas": 3, "serviceName": "web", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": _pod("web")["spec"]},
        },
    }
    kube.create(api_path("apps", "v1", "statefulsets", "lc-test"), sts)
    pods_path = api_path("", "v1", "pods", "lc-test")

    def web_pods():
        return kube.get(pods_path, labelSelector="app=web")["items"]

    wait_until(lambda: len(web_pods()) == 3, 60, "3 StatefulSet pods")
    names = sorted(p["metadata"]["name"] for p in web_pods())
    assert names == ["web-0", "web-1", "web-2"]
    assert all(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"] for p in web_pods())


def test_cli_up_kubectl_sees_ready_nodes_then_down_leaves_nothing(local_cluster):
    """A second cluster beside the session's: ports must not collide. Its name claims an
    owner process that no longer exists, so stale-cluster cleanup must also find it."""
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True)
    name = f"phalanx-test-{int(dead.stdout)}"
    cli = [sys.executable, "-m", "localcluster"]
    up = subprocess.run([*cli, "up", "--name", name, "--nodes", "200"],
                        capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stderr
    kubeconfig = up.stdout.strip().splitlines()[-1]
    other = LocalCluster(name=name)
    try:
        assert other.processes(), "the second cluster runs its own processes"
        assert other.kube().host != local_cluster.kube().host
        kubectl = str(local_cluster.bin_dir / "kubectl")
        got = subprocess.run([kubectl, "--kubeconfig", kubeconfig, "get", "nodes", "-o", "json"],
                             capture_output=True, text=True, check=True)
        nodes = json.loads(got.stdout)["items"]
        assert len(nodes) == 200 and all(node_ready(n) for n in nodes)
        assert all(AWS_LAYER[2] in n["metadata"]["labels"] for n in nodes)
        status = json.loads(subprocess.run([*cli, "status", "--name", name], capture_output=True,
                                           text=True, check=True).stdout)
        assert status["healthy"] and status["ready_nodes"] == 200
        # A crashed owner: the next start anywhere removes it.
        assert name in remove_stale_clusters()
        assert other.processes() == []
        assert not other.cluster_dir.exists()
        assert local_cluster.healthy(), "cleanup of a stale cluster must spare live ones"
    finally:
        down = subprocess.run([*cli, "down", "--name", name], capture_output=True, text=True)
        assert down.returncode == 0, down.stderr
        assert other.processes() == []
