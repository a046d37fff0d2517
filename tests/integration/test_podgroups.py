"""PodGroups, competition for capacity, other schedulers' pods and DaemonSets."""

from __future__ import annotations

import time

import pytest

from kube import api_path
from tests.integration.helpers import (
    NS,
    POOL,
    bound,
    create_all,
    events_for,
    gpus_per_node,
    group_pods,
    install_pod_group_crd,
    pod_group,
    pod_group_path,
    pods_of,
    pool_nodes,
    statefulset,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def crd(kube, phalanx):
    install_pod_group_crd(kube)


def test_pod_group_starts_once_min_member_fits(kube, crd):
    pool_nodes(kube, "pool-g", 4, seed=21, fanout=(1, 1, 4))
    kube.create(pod_group_path(), pod_group("pg-min", 3))
    create_all(kube, group_pods("pg-min", 5, "pool-g"))
    wait_until(lambda: len(bound(pods_of(kube, "pg-min"))) == 4, 60, "4 of 5 bound")
    time.sleep(1)
    assert len(bound(pods_of(kube, "pg-min"))) == 4  # the fifth has no room: it waits
    wait_until(lambda: (kube.get(pod_group_path("pg-min")).get("status") or {})
               .get("scheduled") == 4, 30, "PodGroup status.scheduled")
    assert max(gpus_per_node(kube, "pool-g").values()) <= 8


def test_impossible_pod_group_waits_with_condition_then_fits_when_nodes_arrive(kube, crd):
    pool_nodes(kube, "pool-h", 2, seed=22, fanout=(1, 1, 2))
    kube.create(pod_group_path(), pod_group("pg-big", 4))
    create_all(kube, group_pods("pg-big", 4, "pool-h"))

    def condition():
        status = kube.get(pod_group_path("pg-big")).get("status") or {}
        return next((c for c in status.get("conditions") or () if c["type"] == "Scheduled"),
                    None)
    wait_until(lambda: condition() is not None, 60, "PodGroup condition written")
    assert condition()["status"] == "False"
    assert "4 pods of 8 nvidia.com/gpu" in condition()["message"]
    assert bound(pods_of(kube, "pg-big")) == []
    assert any(e["reason"] == "FailedScheduling" for e in events_for(kube, "pg-big-0"))
    # Capacity arrives: the same gang now fits and is placed without any other prodding.
    more = pool_nodes(kube, "pool-h", 2, seed=23, fanout=(1, 1, 2), batch="-more")
    assert len(more) == 2
    wait_until(lambda: len(bound(pods_of(kube, "pg-big"))) == 4, 60, "gang bound after scale-up")


def test_malformed_pod_group_is_named_and_nothing_binds(kube, crd):
    pool_nodes(kube, "pool-i", 2, seed=24, fanout=(1, 1, 2))
    kube.create(pod_group_path(), pod_group("pg-bad", 0))
    create_all(kube, group_pods("pg-bad", 2, "pool-i"))
    wait_until(lambda: any("spec.minMember" in e["message"]
                           for e in events_for(kube, "pg-bad")), 60, "event naming minMember")
    assert bound(pods_of(kube, "pg-bad")) == []


def test_two_gangs_compete_one_waits_then_runs(kube, crd):
    pool_nodes(kube, "pool-j", 8, seed=25, fanout=(1, 1, 8))
    kube.create(api_path("apps", "v1", "statefulsets", NS), statefulset("first", 6, "pool-j"))
    wait_until(lambda: len(bound(pods_of(kube, "first"))) == 6, 60, "first gang bound")
    kube.create(api_path("apps", "v1", "statefulsets", NS), statefulset("second", 6, "pool-j"))
    wait_until(lambda: len(pods_of(kube, "second")) == 6, 60, "second gang's pods exist")
    wait_until(lambda: any(e["reason"] == "FailedScheduling"
                           for e in events_for(kube, "second-0")), 60, "second gang waits")
    assert bound(pods_of(kube, "second")) == []
    assert max(gpus_per_node(kube, "pool-j").values()) <= 8
    kube.delete(api_path("apps", "v1", "statefulsets", NS, "first"))
    wait_until(lambda: len(bound(pods_of(kube, "second"))) == 6, 90,
               "second gang bound once the first is gone")
    assert max(gpus_per_node(kube, "pool-j").values()) <= 8


def test_pods_of_other_schedulers_are_counted(kube, crd):
    pool_nodes(kube, "pool-k", 4, seed=26, fanout=(1, 1, 4))
    others = group_pods("by-default", 2, "pool-k")
    for pod in others:
        del pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"]
        pod["spec"].pop("schedulerName")  # kube-scheduler's
    create_all(kube, others)
    wait_until(lambda: len(bound(pods_of(kube, "by-default"))) == 2, 60, "kube-scheduler bound")
    kube.create(pod_group_path(), pod_group("pg-rest", 3))
    create_all(kube, group_pods("pg-rest", 3, "pool-k"))
    wait_until(lambda: any(e["reason"] == "FailedScheduling"
                           for e in events_for(kube, "pg-rest-0")), 60, "3 do not fit in 2")
    assert bound(pods_of(kube, "pg-rest")) == []
    kube.create(pod_group_path(), pod_group("pg-two", 2))
    create_all(kube, group_pods("pg-two", 2, "pool-k"))
    wait_until(lambda: len(bound(pods_of(kube, "pg-two"))) == 2, 60, "2 fit beside them")
    assert max(gpus_per_node(kube, "pool-k").values()) <= 8


def test_daemonset_pods_go_to_their_nodes(kube, phalanx):
    nodes = pool_nodes(kube, "pool-d", 3, seed=27, fanout=(1, 1, 3))
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet",
          "metadata": {"name": "agent", "namespace": NS},
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"metadata": {"labels": {"app": "agent"}},
                                "spec": {"schedulerName": "phalanx",
                                         "nodeSelector": {POOL: "pool-d"},
                                         "containers": [{"name": "a", "image": "x"}]}}}}
    kube.create(api_path("apps", "v1", "daemonsets", NS), ds)
    wait_until(lambda: len(bound(pods_of(kube, "agent"))) == 3, 60, "one agent per node")
    assert {p["spec"]["nodeName"] for p in pods_of(kube, "agent")} == {
        n["metadata"]["name"] for n in nodes}


def test_schedule_timeout_is_reported_and_the_gang_stays_queued(kube, crd):
    pool_nodes(kube, "pool-t", 1, seed=28, fanout=(1, 1, 1))
    kube.create(pod_group_path(), pod_group("pg-slow", 2, scheduleTimeoutSeconds=2))
    create_all(kube, group_pods("pg-slow", 2, "pool-t"))
    wait_until(lambda: any(e["reason"] == "ScheduleTimeout" for e in events_for(kube, "pg-slow")),
               60, "ScheduleTimeout event on the PodGroup")
    assert bound(pods_of(kube, "pg-slow")) == []
    pool_nodes(kube, "pool-t", 1, seed=29, fanout=(1, 1, 1), batch="-more")
    wait_until(lambda: len(bound(pods_of(kube, "pg-slow"))) == 2, 60, "placed after scale-up")


def test_required_topology_pending_when_no_single_domain_fits(kube, crd):
    pool_nodes(kube, "pool-r", 8, seed=30, fanout=(1, 2, 4))
    kube.create(api_path("apps", "v1", "statefulsets", NS), statefulset(
        "spread", 5, "pool-r",
        annotations={"phalanx.dev/required-topology": "topology.k8s.aws/network-node-layer-3"}))
    wait_until(lambda: any("required topology topology.k8s.aws/network-node-layer-3"
                           in e["message"] for e in events_for(kube, "spread-0")),
               60, "FailedScheduling naming the required level")
    assert bound(pods_of(kube, "spread")) == []
