"""charts/phalanx with the real helm (built from its Go module by hack/build-helm.sh):
the default values render exactly manifests/, and each value lands where it must.
What the API server makes of the same objects is tests/integration/test_manifests.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.config import parse_config

HACK = Path(__file__).resolve().parents[2] / "hack"
sys.path.insert(0, str(HACK))
import render_manifests  # noqa: E402  (a script of hack/, not a package)

CHART = str(render_manifests.CHART)


@pytest.fixture(scope="module")
def helm() -> str:
    return render_manifests.helm_binary()


def _objects(helm: str, *values: str) -> dict[tuple[str, str], dict[str, Any]]:
    rendered = render_manifests.render(helm, *values)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for text in rendered.values():
        for obj in yaml.safe_load_all(text):
            if obj:
                out[(obj["kind"], obj["metadata"]["name"])] = obj
    return out


def test_default_values_render_exactly_the_manifests(helm: str) -> None:
    check = subprocess.run([sys.executable, str(HACK / "render_manifests.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_chart_passes_helm_lint(helm: str) -> None:
    lint = subprocess.run([helm, "lint", "--strict", CHART], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_each_value_lands_where_it_must(helm: str) -> None:
    objects = _objects(
        helm, "--set", "image.repository=registry.example/phalanx", "--set", "image.tag=1.2.3",
        "--set", "replicas=3", "--set", "namespace.name=sched",
        "--set", "resources.limits.memory=8Gi",
        "--set-json", "config.solver.timeLimitSeconds=2.5",
        "--set", "config.leaderElection.leaseName=lead",
        "--set", "config.http.secureAddress=0.0.0.0:9443")
    deployment = objects[("Deployment", "phalanx-scheduler")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/phalanx:1.2.3"
    assert deployment["spec"]["replicas"] == 3
    assert container["resources"]["limits"]["memory"] == "8Gi"
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert container["ports"][0]["containerPort"] == 9443
    namespaced = [o for o in objects.values() if "namespace" in o["metadata"]]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"sched"}
    assert objects[("Namespace", "sched")]["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"] == "restricted"
    config = parse_config(yaml.safe_load(
        objects[("ConfigMap", "phalanx-config")]["data"]["config.yaml"]))
    assert config.solver_time_limit_s == 2.5
    assert (config.leader_election.namespace, config.leader_election.lease_name) == (
        "sched", "lead")
    role = objects[("Role", "phalanx-scheduler-leader-election")]
    assert [r.get("resourceNames") for r in role["rules"]] == [None, ["lead"]]
    subjects = [s for kind in ("ClusterRoleBinding", "RoleBinding")
                for s in objects[(kind, next(n for k, n in objects if k == kind))]["subjects"]]
    assert {s["namespace"] for s in subjects} == {"sched"}
    flow = objects[("FlowSchema", "phalanx-scheduler")]
    assert flow["spec"]["rules"][0]["subjects"][0]["serviceAccount"]["namespace"] == "sched"


def test_a_changed_config_rolls_the_replicas(helm: str) -> None:
    def checksum(*values: str) -> str:
        deployment = _objects(helm, *values)[("Deployment", "phalanx-scheduler")]
        return str(deployment["spec"]["template"]["metadata"]["annotations"][
            "phalanx.dev/config-sha256"])

    assert checksum() == checksum("--set", "replicas=5")
    assert checksum() != checksum("--set", "config.solver.timeLimitSeconds=3")


def test_an_existing_namespace_can_be_used(helm: str) -> None:
    objects = _objects(helm, "--set", "namespace.create=false")
    assert not [key for key in objects if key[0] == "Namespace"]
    assert ("Deployment", "phalanx-scheduler") in objects
