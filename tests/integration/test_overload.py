"""An API server that answers 429, and gangs with bad input: backoff, no lost gang, clear
reasons, other gangs unaffected."""

from __future__ import annotations

import pytest

from kube import KubeClient, api_path
from localcluster.bulk import create_all
from localcluster.cluster import LocalCluster
from scheduler.binder import Binder
from scheduler.collaborators import NOT_LEADER
from tests.integration.helpers import (
    NS,
    ensure_namespace,
    events_for,
    pods_of,
    pool_nodes,
    scrape,
    start_phalanx,
    statefulset,
    stop_process,
    token_kubeconfig,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def throttled(tmp_path_factory):
    """A cluster of its own whose apiserver admits two mutating requests at a time and
    answers 429 (with Retry-After) beyond that (the max-in-flight limiter, on its own),
    and a kubeconfig for a ServiceAccount: system:masters, the admin's group, is exempt
    from the limit."""
    own = LocalCluster.for_this_process("overload", extra_args={"kube-apiserver": {
        "enable-priority-and-fairness": "false", "max-mutating-requests-inflight": "2"}})
    try:
        own.up()
        kube = own.kube()
        ensure_namespace(kube, NS)
        kube.create(api_path("", "v1", "serviceaccounts", NS),
                    {"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": "scheduler"}})
        kube.create(api_path("rbac.authorization.k8s.io", "v1", "clusterrolebindings"), {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "overload-scheduler"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "scheduler", "namespace": NS}]})
        own.sa_kubeconfig = token_kubeconfig(kube, own.kubeconfig, NS, "scheduler",
                                             tmp_path_factory.mktemp("overload") / "sa.yaml")
        yield own
    finally:
        own.down()


def test_429_storm_backs_off_and_binds_the_whole_gang(throttled, tmp_path):
    kube = throttled.kube()
    pool_nodes(kube, "pool-ol", 64, seed=101, fanout=(1, 2, 32))
    process = start_phalanx(throttled.sa_kubeconfig, tmp_path / "ol.log",
                            "schedulerName: phalanx-ol\nbinder: {concurrency: 128}\n")
    try:
        sts = statefulset("ol", 64, "pool-ol")
        sts["spec"]["template"]["spec"]["schedulerName"] = "phalanx-ol"
        kube.create(api_path("apps", "v1", "statefulsets", NS), sts)
        wait_until(lambda: len([p for p in pods_of(kube, "ol") if p["spec"].get("nodeName")])
                   == 64, 120, "all 64 bound through the 429s")
        rejected = scrape(process.url, 'phalanx_api_transient_errors_total{code="429"}')
        print(f"429 answers retried: {rejected:.0f}")
        assert rejected > 0  # the storm happened
        assert rejected < 64 * 6  # and was not a hot loop: each bind at most its retries
        nodes = [p["spec"]["nodeName"] for p in pods_of(kube, "ol")]
        assert len(set(nodes)) == 64
    finally:
        stop_process(process)
        print(process.log_path.read_text()[-3000:])


def test_binds_backing_off_are_not_resent_once_leadership_ends(throttled):
    """Leadership is checked before every attempt: binds told 429 and waiting out their
    Retry-After when the Lease is lost are never sent again."""
    kube = throttled.kube()
    create_all(kube, [{"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": f"lead-{i}", "namespace": NS},
                       "spec": {"schedulerName": "nobody",
                                "containers": [{"name": "c", "image": "x"}]}}
                      for i in range(64)])
    checks = 0

    def leading() -> bool:  # the 64 first attempts, then never again
        nonlocal checks
        checks += 1
        return checks <= 64

    limited = KubeClient.from_kubeconfig(str(throttled.sa_kubeconfig))
    binder = Binder(limited, concurrency=64, allowed=leading)
    try:
        results, _ = binder.bind_all([(f"{NS}/lead-{i}", f"node-{i}") for i in range(64)])
    finally:
        binder.close()
        limited.close()
    unsent = [r for r in results if r.status == NOT_LEADER]
    assert unsent, "no 429: the storm did not happen"
    assert all(r.ok and r.status == 201 for r in results if r.status != NOT_LEADER)
    for result in results:
        node = kube.get(api_path("", "v1", "pods", NS, result.pod.split("/")[1]))["spec"].get(
            "nodeName")
        assert node == (None if result.unsent else result.node)


def test_bad_input_is_named_and_other_gangs_still_run(kube, phalanx):
    pool_nodes(kube, "pool-bad", 8, seed=111, fanout=(1, 1, 8))
    # Nodes with topology labels missing or half set: usable, placed as their own domains.
    garbage = pool_nodes(kube, "pool-bad", 2, seed=112, fanout=(1, 1, 2), batch="g")
    for node in garbage:
        labels = {k: None for k in node["metadata"]["labels"]
                  if k.startswith("topology.k8s.aws/network-node-layer-1")}
        kube.call("PATCH", api_path("", "v1", "nodes", None, node["metadata"]["name"]),
                  body={"metadata": {"labels": labels}},
                  content_type="application/strategic-merge-patch+json")
    unknown = statefulset("bad-res", 2, "pool-bad")
    limits = unknown["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["example.com/widget"] = "1"
    kube.create(api_path("apps", "v1", "statefulsets", NS), unknown)
    kube.create(api_path("apps", "v1", "statefulsets", NS), statefulset("bad-big", 50,
                                                                          "pool-bad"))
    kube.create(api_path("apps", "v1", "statefulsets", NS), statefulset("good", 6, "pool-bad"))
    wait_until(lambda: len([p for p in pods_of(kube, "good") if p["spec"].get("nodeName")])
               == 6, 60, "the healthy gang is placed despite its bad neighbours")

    def reason(name: str) -> str:
        return " ".join(e["message"] for e in events_for(kube, name)
                        if e["reason"] == "FailedScheduling")
    wait_until(lambda: "Insufficient example.com/widget" in reason("bad-res"), 30,
               "unknown resource named")
    wait_until(lambda: "the whole cluster fits" in reason("bad-big"), 30, "too big named")
    assert not any(p["spec"].get("nodeName") for p in pods_of(kube, "bad-big"))
    assert not any(p["spec"].get("nodeName") for p in pods_of(kube, "bad-res"))
    for name in ("bad-res", "bad-big", "good"):
        kube.delete(api_path("apps", "v1", "statefulsets", NS, name))
