"""manifests/ on the real API server: they apply, their RBAC is enough to schedule, and
not one right more.

Order of installation, as a platform team does it (and as the README says): the CRD and
the Namespace for real first, because a server-side dry run can neither create a PodGroup
whose CRD is not served yet nor a namespaced object in a namespace that does not exist
(the dry run of the Namespace creates nothing). After that pass the whole tree dry-runs.
The Deployment itself is never created here: there is no Phalanx image in this cluster
(the dry run and the Pod Security check below cover it); the scheduler runs as a local
process that authenticates as the manifests' ServiceAccount.
"""

from __future__ import annotations

import copy
import re
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from kube import ApiError, KubeClient, RetryPolicy, api_path
from localcluster.binaries import REPO, ensure_binaries
from localcluster.bulk import ensure_namespace, wait_until
from localcluster.cluster import DEFAULT_WORKDIR, LocalCluster
from localcluster.ports import free_port
from tests.integration.helpers import POOL, pool_nodes, stop_process, token_kubeconfig

pytestmark = pytest.mark.integration

MANIFESTS = REPO / "manifests"
SYSTEM_NS = "phalanx-system"
SA = "phalanx-scheduler"
AS_SA = f"--as=system:serviceaccount:{SYSTEM_NS}:{SA}"
CRD = "podgroups.scheduling.x-k8s.io"
RBAC_NS = "manifests-rbac"
EXAMPLES_NS = "manifests-examples"
L3 = "topology.k8s.aws/network-node-layer-3"
# The scheduler started with the ServiceAccount's token answers to its own name, so the
# session's `phalanx` process (admin credentials) can never be the one that binds its pods.
SA_SCHEDULER = "phalanx-rbac"


def _documents(*paths: Path) -> list[dict]:
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*.yaml")))]
    return [doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]


class Kubectl:
    def __init__(self, kubeconfig: Path, binary: Path) -> None:
        self.kubeconfig, self.binary = kubeconfig, binary

    def run(self, *args: str, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.binary), "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, input=stdin, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def can_i(self, *args: str) -> str:
        # can-i exits 1 for "no": the answer is the output, not the exit code.
        done = self.run("auth", "can-i", AS_SA, *args, check=False)
        answer = done.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl auth can-i {args}: {done.stderr}"
        return answer


@pytest.fixture(scope="module")
def kubectl(local_cluster) -> Kubectl:
    return Kubectl(local_cluster.kubeconfig,
                   (local_cluster.bin_dir or ensure_binaries()) / "kubectl")


@pytest.fixture(scope="module")
def installed(kubectl, kube):
    """First pass for real: CRD + Namespace; then the RBAC, which the ServiceAccount's
    scheduler needs. Removed at the end (the CRD stays: the PodGroup tests and the
    session's scheduler watch it too)."""
    kubectl.run("apply", "-f", str(MANIFESTS / "crd"),
                "-f", str(MANIFESTS / "deploy" / "namespace.yaml"))
    kubectl.run("wait", "--for", "condition=Established", f"crd/{CRD}", "--timeout=60s")
    rights = ["-f", str(MANIFESTS / "rbac")]
    kubectl.run("apply", *rights)
    yield
    kubectl.run("delete", "--ignore-not-found", "--wait=false", *rights)
    kubectl.run("delete", "namespace", SYSTEM_NS, "--ignore-not-found", "--wait=false")


def test_whole_tree_server_dry_run(kubectl, installed):
    done = kubectl.run("apply", "--dry-run=server", "-R", "-f", str(MANIFESTS))
    applied = [line for line in done.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(_documents(MANIFESTS)), done.stdout
    # No deprecation or Pod Security warnings either (the namespace warns on "restricted").
    assert "Warning" not in done.stderr, done.stderr


def test_scheduler_pod_meets_restricted_pod_security(kubectl, installed, tmp_path):
    """The namespace enforces Pod Security "restricted": a Pod made from the Deployment's
    template is admitted; the same Pod allowed to escalate privileges is refused, so the
    first answer is the policy speaking, not an admission plugin that is switched off."""
    deployment = next(d for d in _documents(MANIFESTS / "deploy") if d["kind"] == "Deployment")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "phalanx-pss-check", "namespace": SYSTEM_NS},
           "spec": copy.deepcopy(deployment["spec"]["template"]["spec"])}
    good = tmp_path / "pod.yaml"
    good.write_text(yaml.safe_dump(pod))
    kubectl.run("create", "--dry-run=server", "-f", str(good))

    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    bad = tmp_path / "escalating.yaml"
    bad.write_text(yaml.safe_dump(pod))
    refused = kubectl.run("create", "--dry-run=server", "-f", str(bad), check=False)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr, refused.stderr


# -- the ServiceAccount's identity ---------------------------------------------------------
@pytest.fixture(scope="module")
def sa_kubeconfig(installed, kube, local_cluster, tmp_path_factory) -> Path:
    """A kubeconfig holding a TokenRequest token of the manifests' ServiceAccount."""
    return token_kubeconfig(kube, local_cluster.kubeconfig, SYSTEM_NS, SA,
                            tmp_path_factory.mktemp("sa") / "kubeconfig.yaml")


def _rules_in_manifests(namespace: str) -> set[tuple[str, str, str, str]]:
    """(group, resource, resourceName, verb) granted by rbac/ in `namespace`."""
    rules = set()
    for doc in _documents(MANIFESTS / "rbac"):
        if doc["kind"] == "ClusterRole" or (doc["kind"] == "Role" and
                                            doc["metadata"]["namespace"] == namespace):
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for name in rule.get("resourceNames") or [""]:
                            rules.update((group, resource, name, v) for v in rule["verbs"])
    return rules


def _effective_rules(client: KubeClient, namespace: str) -> set[tuple[str, str, str, str]]:
    """What the API server lets the caller do in `namespace`, from every binding there is
    (SelfSubjectRulesReview, the call behind `kubectl auth can-i --list`)."""
    review = client.create(
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
         "spec": {"namespace": namespace}})
    assert not review["status"].get("incomplete"), review["status"]
    rules = set()
    for rule in review["status"]["resourceRules"]:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule["resources"]:
                if resource.startswith("selfsubject"):
                    continue  # system:basic-user: every identity may ask what it may do
                for name in rule.get("resourceNames") or [""]:
                    rules.update((group, resource, name, v) for v in rule["verbs"])
    return rules


def test_service_account_has_exactly_the_manifest_rights(kubectl, sa_kubeconfig):
    client = KubeClient.from_kubeconfig(str(sa_kubeconfig), retry=RetryPolicy(attempts=3))
    for namespace in (SYSTEM_NS, "default"):
        assert _effective_rules(client, namespace) == _rules_in_manifests(namespace), namespace

    refused = {
        ("get", "secrets", "-A"): "no", ("list", "secrets", "-n", SYSTEM_NS): "no",
        ("delete", "pods", "-A"): "no", ("create", "pods", "-n", "default"): "no",
        ("patch", "pods", "-n", "default"): "no", ("update", "nodes"): "no",
        ("get", "configmaps", "-n", SYSTEM_NS): "no",
        ("update", "podgroups.scheduling.x-k8s.io", "-n", "default"): "no",
        ("delete", "podgroups.scheduling.x-k8s.io", "-n", "default"): "no",
        ("create", "leases.coordination.k8s.io", "-n", "default"): "no",
        ("update", "leases.coordination.k8s.io/other-lease", "-n", SYSTEM_NS): "no",
        ("delete", "leases.coordination.k8s.io/phalanx-scheduler", "-n", SYSTEM_NS): "no",
        ("*", "*", "-A"): "no",
    }
    granted = {
        ("create", "pods", "--subresource=binding", "-n", "default"): "yes",
        ("list", "pods", "-A"): "yes", ("watch", "nodes"): "yes",
        ("create", "events", "-n", "default"): "yes",
        ("patch", "podgroups.scheduling.x-k8s.io", "--subresource=status", "-n",
         "default"): "yes",
        ("watch", "podgroups.scheduling.x-k8s.io", "-A"): "yes",
        ("get", "statefulsets.apps", "-n", "default"): "yes",
        ("get", "jobs.batch", "-n", "default"): "yes",
        ("create", "leases.coordination.k8s.io", "-n", SYSTEM_NS): "yes",
        ("get", "leases.coordination.k8s.io/phalanx-scheduler", "-n", SYSTEM_NS): "yes",
        ("update", "leases.coordination.k8s.io/phalanx-scheduler", "-n", SYSTEM_NS): "yes",
    }
    answers = {query: kubectl.can_i(*query) for query in {**refused, **granted}}
    assert answers == {**refused, **granted}


def _sa_workloads(pool: str) -> list[dict]:
    """One gang of each kind the scheduler reads differently: a PodGroup (podgroups
    watch, status patch), a StatefulSet and an indexed Job (owner gets), plus a CPU pod
    (the per-pod path)."""
    def spec(gpus: int) -> dict:
        resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {
            "requests": {"cpu": "1"}}
        return {"schedulerName": SA_SCHEDULER, "nodeSelector": {POOL: pool},
                "restartPolicy": "Never",
                "containers": [{"name": "w", "image": "trainer", "resources": resources}]}

    def pod(name: str, labels: dict, gpus: int) -> dict:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": RBAC_NS, "labels": labels},
                "spec": spec(gpus)}

    sts_spec = {**spec(8), "restartPolicy": "Always"}
    return [
        {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
         "metadata": {"name": "sa-pg", "namespace": RBAC_NS}, "spec": {"minMember": 4}},
        *(pod(f"sa-pg-{i}", {"scheduling.x-k8s.io/pod-group": "sa-pg", "app": "sa"}, 8)
          for i in range(4)),
        {"apiVersion": "apps/v1", "kind": "StatefulSet",
         "metadata": {"name": "sa-sts", "namespace": RBAC_NS},
         "spec": {"replicas": 2, "serviceName": "sa-sts", "podManagementPolicy": "Parallel",
                  "selector": {"matchLabels": {"app": "sa", "gang": "sa-sts"}},
                  "template": {"metadata": {"labels": {"app": "sa", "gang": "sa-sts"}},
                               "spec": sts_spec}}},
        {"apiVersion": "batch/v1", "kind": "Job",
         "metadata": {"name": "sa-job", "namespace": RBAC_NS},
         "spec": {"completionMode": "Indexed", "completions": 2, "parallelism": 2,
                  "template": {"metadata": {"labels": {"app": "sa"}}, "spec": spec(8)}}},
        pod("sa-cpu", {"app": "sa"}, 0),
    ]


def _scheduler_config(path: Path, port: int) -> None:
    """The ConfigMap's configuration, leader election included, with this test's
    scheduler name and address."""
    configmap = next(d for d in _documents(MANIFESTS / "deploy") if d["kind"] == "ConfigMap")
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    assert config["leaderElection"]["enabled"] is True
    config["schedulerName"] = SA_SCHEDULER
    config["http"]["address"] = f"127.0.0.1:{port}"
    config["http"]["secureAddress"] = f"127.0.0.1:{free_port()}"
    path.write_text(yaml.safe_dump(config))


def test_scheduler_runs_with_the_service_account(kube, kubectl, sa_kubeconfig, tmp_path):
    """`phalanx run` with nothing but the ServiceAccount's token and the ConfigMap's
    configuration takes the Lease, schedules every kind of gang, writes Events and
    PodGroup status, releases the Lease on SIGTERM, and never meets a 403."""
    ensure_namespace(kube, RBAC_NS)
    pool = "pool-rbac"
    pool_nodes(kube, pool, 10, seed=74, fanout=(1, 1, 12))
    config, log = tmp_path / "config.yaml", tmp_path / "phalanx.log"
    port = free_port()
    _scheduler_config(config, port)
    lease_path = api_path("coordination.k8s.io", "v1", "leases", SYSTEM_NS, SA)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig", str(sa_kubeconfig),
             "--config", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        # Ready = nodes, pods and PodGroups listed with the ServiceAccount's rights, and
        # the Lease held (a standby is never Ready).
        wait_until(ready, 60, "the ServiceAccount's scheduler ready (synced and leading)")
        lease = kube.get(lease_path)["spec"]
        assert lease["holderIdentity"].startswith(socket.gethostname() + "_"), lease
        assert lease["leaseDurationSeconds"] == 10

        workloads = _sa_workloads(pool)
        for obj in workloads:
            kind = obj["kind"]
            group, plural = {"PodGroup": ("scheduling.x-k8s.io", "podgroups"),
                             "StatefulSet": ("apps", "statefulsets"),
                             "Job": ("batch", "jobs"), "Pod": ("", "pods")}[kind]
            version = obj["apiVersion"].rpartition("/")[2]
            kube.create(api_path(group, version, plural, RBAC_NS), obj)

        def pods() -> list[dict]:
            return kube.get(api_path("", "v1", "pods", RBAC_NS), labelSelector="app=sa")["items"]
        wait_until(lambda: len(pods()) == 9 and all(p["spec"].get("nodeName") for p in pods()),
                   60, "all 9 pods bound by the ServiceAccount's scheduler")

        def ours() -> list[dict]:
            items = kube.get(api_path("", "v1", "events", RBAC_NS))["items"]
            return [e for e in items if e["source"].get("component") == SA_SCHEDULER]
        expected = ({("Pod", p["metadata"]["name"]) for p in pods()}
                    | {("PodGroup", "sa-pg"), ("StatefulSet", "sa-sts"), ("Job", "sa-job")})
        wait_until(lambda: expected <= {(e["involvedObject"]["kind"], e["involvedObject"]["name"])
                                        for e in ours() if e["reason"] == "Scheduled"},
                   30, "Scheduled events on every pod and gang")

        group_path = api_path("scheduling.x-k8s.io", "v1alpha1", "podgroups", RBAC_NS, "sa-pg")
        wait_until(lambda: (kube.get(group_path).get("status") or {}).get("scheduled") == 4,
                   30, "PodGroup status written")
        status = kube.get(group_path)["status"]
        assert status["phase"] == "Scheduled"
        assert [(c["type"], c["status"]) for c in status["conditions"]] == [("Scheduled", "True")]

        # The secure explain API with the ServiceAccount's own rights: a caller's token is
        # checked (TokenReview) and the list filtered (SubjectAccessReview), both granted
        # by the ClusterRole and nothing more.
        token = yaml.safe_load(sa_kubeconfig.read_text())["users"][0]["user"]["token"]
        secure = yaml.safe_load(config.read_text())["http"]["secureAddress"]
        reply = httpx.get(f"https://{secure}/v1/groups", verify=False, timeout=10,
                          headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200, reply.text
        assert {"sa-pg", "sa-sts", "sa-job"} <= {g["name"] for g in reply.json()["groups"]}
        assert httpx.get(f"https://{secure}/v1/groups", verify=False,
                         timeout=10).status_code == 401

    finally:
        stop_process(process)
        kube.delete(api_path("", "v1", "namespaces", name=RBAC_NS))
        kube.delete(api_path("", "v1", "nodes"), labelSelector=f"{POOL}={pool}")
        output = log.read_text()
        print(output[-3000:])  # shown when the test fails, whatever failed
    assert process.returncode == 0, output[-3000:]
    # Released on the way out (an update through the name-scoped Role rule), so a standby
    # would take over at its next retry.
    assert kube.get(lease_path)["spec"]["holderIdentity"] == ""
    # A refused call anywhere (watch, bind, owner get, event, status) is logged; none may be.
    refused = re.findall(r".*(?:forbidden|: 403 |could not write).*", output, re.IGNORECASE)
    assert refused == [], "\n".join(refused)


# -- the examples ------------------------------------------------------------------------
def _into_test_pool(doc: dict, pool: str) -> dict:
    """An example as written, moved into this test's namespace and node pool (the
    cluster is shared by the whole session: other tests' nodes are not ours to fill)."""
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = EXAMPLES_NS
    spec = doc["spec"]["template"]["spec"] if "template" in doc.get("spec", {}) else (
        doc["spec"] if doc["kind"] == "Pod" else None)
    if spec is not None:
        spec.setdefault("nodeSelector", {})[POOL] = pool
    return doc


def test_examples_apply_and_are_scheduled(kube, kubectl, installed, phalanx, tmp_path):
    pool = "pool-examples"
    nodes = pool_nodes(kube, pool, 36, seed=72, fanout=(1, 1, 22))
    # The StatefulSet requires 16 nodes under one layer-3 switch, beside the other two
    # gangs: this pool's two racks (16 and 20 nodes) hold all three in any arrival order.
    racks = Counter(n["metadata"]["labels"][L3] for n in nodes)
    assert sorted(racks.values()) == [16, 20], racks

    examples = _documents(MANIFESTS / "examples")
    target = tmp_path / "examples.yaml"
    target.write_text(yaml.safe_dump_all([_into_test_pool(d, pool) for d in examples]))
    ensure_namespace(kube, EXAMPLES_NS)
    try:
        done = kubectl.run("apply", "-f", str(target))
        assert len(done.stdout.splitlines()) == len(examples), done.stdout
        sts = next(d for d in examples if d["kind"] == "StatefulSet")
        job = next(d for d in examples if d["kind"] == "Job")
        bare = [d for d in examples if d["kind"] == "Pod"]
        total = sts["spec"]["replicas"] + job["spec"]["parallelism"] + len(bare)

        def pods() -> list[dict]:
            return kube.get(api_path("", "v1", "pods", EXAMPLES_NS))["items"]
        wait_until(lambda: len(pods()) == total and all(p["spec"].get("nodeName")
                                                        for p in pods()),
                   90, f"all {total} example pods bound")
        labels = {n["metadata"]["name"]: n["metadata"]["labels"] for n in nodes}
        train = [p for p in pods() if p["metadata"]["labels"].get("app") == "train"]
        assert len({labels[p["spec"]["nodeName"]][L3] for p in train}) == 1  # required
        # 8 GPUs each: one unfinished pod per node, or a node is overcommitted. KWOK
        # completes a Job's pods right after they run, and a Succeeded pod's node is free
        # again: another gang may have it.
        running = [p for p in pods() if p["status"].get("phase") not in ("Succeeded", "Failed")]
        per_node = Counter(p["spec"]["nodeName"] for p in running)
        shared = {node: sorted(p["metadata"]["name"] for p in running
                               if p["spec"]["nodeName"] == node)
                  for node, count in per_node.items() if count > 1}
        assert shared == {}
    finally:
        try:
            kube.delete(api_path("", "v1", "namespaces", name=EXAMPLES_NS))
        except ApiError as exc:
            if exc.status != 404:
                raise
        kube.delete(api_path("", "v1", "nodes"), labelSelector=f"{POOL}={pool}")


# -- API Priority and Fairness ------------------------------------------------------------
def test_flow_schema_classifies_the_service_account(kube):
    """The session's cluster runs with API Priority and Fairness off (kwokctl
    --disable-qps-limits, for benchmarks), so this test starts a small cluster of its own
    with it on. Every response then names the FlowSchema and priority level that
    classified the request: the ServiceAccount's must be the manifests' own, not the
    built-in service-accounts / workload-low."""
    cluster = LocalCluster.for_this_process(
        workdir=DEFAULT_WORKDIR / "apf",  # its own folder: a killed run's copy is removed
        extra_args={"kube-apiserver": {"enable-priority-and-fairness": "true"}})
    try:
        cluster.up()
        assert cluster.bin_dir is not None
        kubectl = Kubectl(cluster.kubeconfig, cluster.bin_dir / "kubectl")
        kubectl.run("apply", "-f", str(MANIFESTS / "deploy" / "namespace.yaml"))
        kubectl.run("apply", "-f", str(MANIFESTS / "rbac"),
                    "-f", str(MANIFESTS / "deploy" / "flowcontrol.yaml"))
        admin = cluster.kube()
        flow = "flowcontrol.apiserver.k8s.io"
        schema = admin.get(api_path(flow, "v1", "flowschemas", name="phalanx-scheduler"))
        level = admin.get(api_path(flow, "v1", "prioritylevelconfigurations",
                                   name="phalanx-scheduler"))
        token = token_kubeconfig(admin, cluster.kubeconfig, SYSTEM_NS, SA,
                                 cluster.cluster_dir / "phalanx-sa.kubeconfig")
        client = KubeClient.from_kubeconfig(str(token))

        def classified() -> tuple[str, str]:
            # A bind-like write would be classified the same way; a read needs no cleanup.
            reply = client.request("GET", api_path("", "v1", "pods", "default"),
                                   query={"limit": 1})
            return (str(reply.headers.get("X-Kubernetes-PF-FlowSchema-UID")),
                    str(reply.headers.get("X-Kubernetes-PF-PriorityLevel-UID")))
        # The flow-control configuration reaches the request filter a moment after apply.
        wait_until(lambda: classified()[0] == schema["metadata"]["uid"], 30,
                   "the phalanx-scheduler FlowSchema to classify the ServiceAccount")
        assert classified() == (schema["metadata"]["uid"], level["metadata"]["uid"])
    finally:
        cluster.down()
