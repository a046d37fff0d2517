"""manifests/, the Dockerfile and `make image`, checked without a cluster: structure,
least privilege as written, agreement with the code (config loader, API calls, solver).
What the API server says about the same files is tests/integration/test_manifests.py."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from kube.resources import POD_GROUPS
from scheduler.config import Config, load_config, parse_config
from scheduler.informers import GANG_OBJECTS, Informers
from scheduler.offline import gang_of, request_from_workload
from scheduler.request import request_for
from scheduler.sources.base import REQUIRED
from scheduler.sources.owner import OWNER_KINDS
from solver.solve import solve
from topology.presets import PRESETS
from topology.records import node_from_json, pod_from_json
from topology.snapshot import build_snapshot
from topology.synthetic import ClusterSpec, synth_nodes

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
SYSTEM_NS = "phalanx-system"
SA = "phalanx-scheduler"
L3 = "topology.k8s.aws/network-node-layer-3"

# What the scheduler calls, read off the code (the kube package is the only way out):
#   informers.py  list+watch pods, nodes, namespaces, PVCs, PVs, StorageClasses;
#                 list+watch podgroups (after API discovery)
#   binder.py     POST pods/{name}/binding; GET pods/{name} when a bind answers 409;
#                 merge-PATCH a PVC's selected-node annotation, a PV's claimRef
#   binder.py     (Evictor) POST pods/{name}/eviction; merge-PATCH pods/{name}/status
#                 (nominatedNodeName); informers.py list+watch poddisruptionbudgets
#   events.py     POST core/v1 events; merge-PATCH podgroups/{name}/status
#   lookup.py     GET statefulsets/{name}, jobs/{name} (the size of an owner's gang,
#                 asked by sources/owner.py)
CODE_RIGHTS = {
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/binding"): {"create"},
    ("", "pods/eviction"): {"create"},
    ("", "pods/status"): {"patch"},
    ("policy", "poddisruptionbudgets"): {"list", "watch"},
    ("", "events"): {"create"},
    ("", "nodes"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    ("", "persistentvolumeclaims"): {"list", "watch", "patch"},
    ("", "persistentvolumes"): {"list", "watch", "patch"},
    ("storage.k8s.io", "storageclasses"): {"list", "watch"},
    ("storage.k8s.io", "csinodes"): {"list", "watch"},
    ("apps", "statefulsets"): {"get"},
    ("batch", "jobs"): {"get"},
    ("scheduling.x-k8s.io", "podgroups/status"): {"patch"},
    ("scheduling.k8s.io", "podgroups/status"): {"patch"},
    ("authentication.k8s.io", "tokenreviews"): {"create"},
    ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
    # Every object a gang source reads: watched once served, one get until listed.
    **{(r.group, r.plural): {"get", "list", "watch"} for r in GANG_OBJECTS},
}
NAMESPACED = {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service"}


def documents(folder: str) -> list[dict]:
    return [doc for path in sorted((MANIFESTS / folder).rglob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(folder: str, kind: str) -> dict:
    found = [d for d in documents(folder) if d["kind"] == kind]
    assert len(found) == 1, f"{folder}: expected one {kind}, found {len(found)}"
    return found[0]


def rights(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


# -- every file ----------------------------------------------------------------------------
def test_every_manifest_is_a_named_object_and_passes_yamllint():
    config = YamlLintConfig(file=str(REPO / ".yamllint"))
    files = sorted(MANIFESTS.rglob("*.yaml"))
    assert {f.parent.name for f in files} == {"crd", "rbac", "deploy", "examples"}
    for path in files:
        problems = list(linter.run(path.read_text(), config, str(path)))
        assert problems == [], f"{path}: {[str(p) for p in problems]}"
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path
    for folder in ("rbac", "deploy"):
        for doc in documents(folder):
            if doc["kind"] in NAMESPACED:
                assert doc["metadata"]["namespace"] == SYSTEM_NS, doc["metadata"]


# -- RBAC ----------------------------------------------------------------------------------
def test_cluster_role_grants_exactly_what_the_code_calls():
    role = one("rbac", "ClusterRole")
    assert rights(role["rules"]) == CODE_RIGHTS
    # Tied to the code's own constants, so a new owner kind or a moved CRD shows up here.
    for resource, _ in OWNER_KINDS.values():
        assert CODE_RIGHTS[resource.group, resource.plural] == {"get"}
    assert {"list", "watch"} <= CODE_RIGHTS[POD_GROUPS.group, POD_GROUPS.plural]
    assert set(Informers.__init__.__defaults__ or ()) == {GANG_OBJECTS}


def test_no_wildcard_and_no_secret_anywhere_in_rbac():
    roles = [d for d in documents("rbac") if d["kind"] in ("ClusterRole", "Role")]
    assert roles
    for role in roles:
        assert "aggregationRule" not in role
        for rule in role["rules"]:
            values = [*rule.get("apiGroups", []), *rule.get("resources", []), *rule["verbs"],
                      *rule.get("nonResourceURLs", []), *rule.get("resourceNames", [])]
            assert not any("*" in v for v in values), rule
            assert not {"secrets", "configmaps"} & set(rule.get("resources", [])), rule
            assert not {"escalate", "bind", "impersonate", "delete", "deletecollection"} & set(
                rule["verbs"]), rule


def test_leader_election_role_covers_only_the_configured_lease():
    role = one("rbac", "Role")
    election = load_config_from_configmap().leader_election
    assert role["metadata"]["namespace"] == election.namespace == SYSTEM_NS
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": [election.lease_name], "verbs": ["get", "update"]},
    ]


def test_bindings_tie_the_service_account_to_both_roles():
    sa = one("rbac", "ServiceAccount")["metadata"]
    names = {(d["kind"], d["metadata"]["name"]) for d in documents("rbac")}
    for binding in (one("rbac", "ClusterRoleBinding"), one("rbac", "RoleBinding")):
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"]) in names
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"],
                                        "namespace": sa["namespace"]}]


# -- deploy --------------------------------------------------------------------------------
def load_config_from_configmap():
    text = one("deploy", "ConfigMap")["data"]["config.yaml"]
    return parse_config(yaml.safe_load(text))


def test_configmap_config_loads_with_leader_election_on(tmp_path):
    configmap = one("deploy", "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    config = load_config(path)  # what `phalanx run --config` does at start-up
    assert config == load_config_from_configmap()
    # The defaults spelled out, but for the two fields a Deployment needs different.
    defaults = Config()
    assert config == replace(defaults, secure_address="0.0.0.0:10271",
                             leader_election=replace(defaults.leader_election, enabled=True))
    assert (config.leader_election.namespace, config.leader_election.lease_name) == (
        SYSTEM_NS, "phalanx-scheduler")


def test_deployment_is_two_locked_down_replicas_with_probes():
    deployment = one("deploy", "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    # Only the Lease holder is Ready: a rollout that needs a new pod Ready before the old
    # leader stops would never finish, so every replica may be unavailable at once.
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == spec["replicas"]
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"][
        "labels"].items()
    assert pod["serviceAccountName"] == one("rbac", "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in security
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}

    # The probes and the Service reach the secure port (plain HTTP is loopback only).
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["https"]
    assert port == int(load_config_from_configmap().secure_address.rpartition(":")[2])
    probes = {name: (container[name]["httpGet"]["path"], container[name]["httpGet"]["port"],
                     container[name]["httpGet"]["scheme"])
              for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes == {"startupProbe": ("/healthz", "https", "HTTPS"),
                      "livenessProbe": ("/healthz", "https", "HTTPS"),
                      "readinessProbe": ("/readyz", "https", "HTTPS")}

    # --config points into the mounted ConfigMap; the ConfigMap holds that file.
    assert container["args"][0] == "--config"
    config_path = Path(container["args"][1])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_volume = next(name for name, v in volumes.items() if "configMap" in v)
    assert mounts[config_volume]["readOnly"] is True
    assert config_path.parent == Path(mounts[config_volume]["mountPath"])
    configmap = one("deploy", "ConfigMap")
    assert volumes[config_volume]["configMap"]["name"] == configmap["metadata"]["name"]
    assert config_path.name in configmap["data"]
    # The read-only root leaves exactly one writable place, an emptyDir at /tmp.
    assert "emptyDir" in volumes[next(m["name"] for m in container["volumeMounts"]
                                      if m["mountPath"] == "/tmp")]


def test_service_reaches_the_explain_port():
    service = one("deploy", "Service")
    template = one("deploy", "Deployment")["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in template["spec"]["containers"][0]["ports"]}


def test_flow_schema_matches_the_service_account_into_a_limited_level():
    level = one("deploy", "PriorityLevelConfiguration")
    schema = one("deploy", "FlowSchema")
    assert level["apiVersion"] == schema["apiVersion"] == "flowcontrol.apiserver.k8s.io/v1"
    assert level["spec"]["type"] == "Limited"
    limited = level["spec"]["limited"]
    assert limited["nominalConcurrencyShares"] > 0
    assert limited["limitResponse"]["type"] == "Queue"
    assert schema["spec"]["priorityLevelConfiguration"]["name"] == level["metadata"]["name"]
    # Ahead of the built-in service-accounts FlowSchema (matchingPrecedence 9000).
    assert schema["spec"]["matchingPrecedence"] < 9000
    (rule,) = schema["spec"]["rules"]
    assert rule["subjects"] == [{"kind": "ServiceAccount",
                                 "serviceAccount": {"name": SA, "namespace": SYSTEM_NS}}]


def test_namespace_enforces_restricted_pod_security():
    labels = one("deploy", "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# -- examples ------------------------------------------------------------------------------
def test_examples_use_phalanx_with_whole_p5_pods():
    examples = documents("examples")
    sts = next(d for d in examples if d["kind"] == "StatefulSet")
    job = next(d for d in examples if d["kind"] == "Job")
    group = next(d for d in examples if d["kind"] == "PodGroup")
    members = [d for d in examples if d["kind"] == "Pod"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["template"]["metadata"]["annotations"][REQUIRED] == L3
    assert job["spec"]["completionMode"] == "Indexed"
    assert group["spec"]["minMember"] <= len(members)
    assert all(p["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] ==
               group["metadata"]["name"] for p in members)
    pod_specs = [sts["spec"]["template"]["spec"], job["spec"]["template"]["spec"],
                 *(p["spec"] for p in members)]
    for spec in pod_specs:
        assert spec["schedulerName"] == load_config_from_configmap().scheduler_name
        limits = spec["containers"][0]["resources"]["limits"]
        assert limits == {"nvidia.com/gpu": "8", "vpc.amazonaws.com/efa": "32"}
    # Topology annotations name levels of the scheduler's preset.
    levels = {level.key for level in PRESETS["aws"].levels}
    for topology in (sts["spec"]["template"]["metadata"]["annotations"],
                        job["spec"]["template"]["metadata"]["annotations"],
                        group["metadata"]["annotations"]):
        assert set(topology.values()) <= levels


def test_each_example_places_on_a_synthetic_fleet():
    fleet = [node_from_json(n) for n in synth_nodes(ClusterSpec(nodes=128, seed=3))]
    snapshot = build_snapshot(fleet, {}, PRESETS["aws"])
    examples = documents("examples")
    gangs = [request_from_workload(d) for d in examples if d["kind"] in ("StatefulSet", "Job")]
    gangs.append(request_for(gang_of(
        [next(d for d in examples if d["kind"] == "PodGroup")],
        [pod_from_json(d) for d in examples if d["kind"] == "Pod"])))
    for gang in gangs:
        result = solve(gang, snapshot)
        assert result.status == "placed", (gang.name, getattr(result, "reason", ""))
        assert result.metrics.domains_used[L3] == 1, gang.name


# -- Dockerfile and make image -------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    return [tuple(line.split(None, 1)) for line in text.splitlines()  # type: ignore[misc]
            if line.strip() and not line.lstrip().startswith("#")]


def first_party_imports(package: str) -> set[str]:
    roots = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
    return {r for r in roots if (REPO / r / "__init__.py").exists()}


def test_dockerfile_installs_what_phalanx_run_imports_and_runs_as_non_root():
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    copied = {source.rstrip("/") for op, args in steps if op == "COPY"
              for source in args.split()[:-1]}
    needed = {"scheduler"}
    while True:  # the packages the scheduler imports, and theirs
        more = set().union(*(first_party_imports(p) for p in needed)) | needed
        if more == needed:
            break
        needed = more
    assert needed == {"scheduler", "solver", "topology", "kube", "gcpause"}
    assert needed | {"pyproject.toml", "README.md"} <= copied
    allowed = {line[1:].rstrip("/") for line in
               (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    assert copied <= allowed  # .dockerignore lets every copied path into the context

    user = [args for op, args in steps if op == "USER"]
    uid = int(user[-1].split(":")[0])
    assert uid != 0
    run_as = one("deploy", "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert run_as["runAsUser"] == uid
    entrypoint = [json.loads(args) for op, args in steps if op == "ENTRYPOINT"]
    assert entrypoint == [["phalanx", "run"]]
    assert 'phalanx = "scheduler.cli:main"' in (REPO / "pyproject.toml").read_text()


def make_image(tmp_path: Path, engines: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`make image` with PATH holding only fake engines: each is a shell script whose
    `info` exits with the given status and whose other commands are recorded."""
    make = shutil.which("make")
    assert make, "make is needed for `make image` and `make test`"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, info_status in engines.items():
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nif [ "$1" = info ]; then exit {info_status}; fi\n'
                          f'echo "{name} $*" >> "$CALLS"\n')
        script.chmod(0o755)
    env = {"PATH": str(bin_dir), "CALLS": str(tmp_path / "calls"), "HOME": str(tmp_path)}
    return subprocess.run([make, "-s", "-C", str(REPO), "image"], capture_output=True,
                          text=True, env=env, timeout=60)


def test_make_image_fails_clearly_without_a_working_engine(tmp_path):
    done = make_image(tmp_path, {"docker": "1"})  # a docker CLI without its daemon
    assert done.returncode != 0
    assert "make image: needs a container engine" in done.stderr
    assert "docker: installed, but 'docker info' fails" in done.stderr
    assert "podman: not installed" in done.stderr
    assert not (tmp_path / "calls").exists()


def test_make_image_builds_with_the_first_working_engine(tmp_path):
    done = make_image(tmp_path, {"docker": "1", "podman": "0"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls").read_text() == "podman build -t phalanx-scheduler:0.1.0 .\n"
