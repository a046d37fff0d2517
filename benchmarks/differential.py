"""Differential check of Phalanx's per-pod decisions against kube-scheduler.

    .venv/bin/python -m benchmarks.differential [--cases 2000] [--seed 20261201]

A seeded corpus (hypothesis strategies) of small labelled clusters, each with its own
nodes, namespace and label values so cases never see each other: nodes with zones,
disk types, tiers, taints and GPUs; pods already bound on them (labels, requests, host
ports, anti-affinity); and one test pod with a random mix of requests, nodeSelector,
node affinity operators, tolerations, required inter-pod (anti-)affinity, host ports
and hard topology spread. Every case is created on one real cluster; each test pod is
scheduled by kube-scheduler, and decided by Phalanx's per-pod path on the very objects
the API server holds (before kube-scheduler's binding). They must agree on whether the
pod fits, and the node Phalanx picks must satisfy every constraint, as checked here by
a second, independent reading of the raw objects. A few gang cases (two to four pods of
one template) are placed whole by the solver and checked the same way, every member
against the placed pods and its gang mates.

The integration test runs the default corpus (DEFAULT_CASES); this script runs more.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from benchmarks.report import print_result
from kube import KubeClient
from kube.resources import NAMESPACES, NODES, PODS
from localcluster.bulk import create_all, wait_until
from localcluster.synthnodes import schedulable
from scheduler.request import shape_of
from scheduler.singles import choose_node
from solver.request import GangRequest, Member, SolverConfig
from solver.result import Placement
from solver.solve import solve
from topology.presets import resolve_preset
from topology.records import node_from_json, pod_from_json
from topology.snapshot import build_snapshot, placed_pods, usage_from_pods

DEFAULT_CASES = 200
DEFAULT_SEED = 20261201
POOL = "phalanx.dev/differential"
ZONE = "topology.kubernetes.io/zone"
HOSTNAME = "kubernetes.io/hostname"
GPU = "nvidia.com/gpu"
Raw = dict[str, Any]


@dataclass
class Case:
    index: int
    nodes: list[Raw]
    existing: list[Raw]
    pod: Raw
    gang: int = 0
    """Members of a gang case (0: the single test pod goes through kube-scheduler)."""
    namespace: str = ""


# -- the corpus ---------------------------------------------------------------------
def _selector(app: str) -> Raw:
    return {"matchLabels": {"app": app}}


@st.composite
def _node(draw: st.DrawFn, case: int, j: int) -> Raw:
    name = f"diff{case}-n{j}"
    labels = {POOL: f"c{case}", HOSTNAME: name, ZONE: f"c{case}-z{j % 2}",
              "disk": draw(st.sampled_from(["ssd", "hdd"])),
              "tier": str(draw(st.integers(1, 5)))}
    taints = draw(st.sampled_from([[], [], [{"key": "dedicated", "value": "x",
                                               "effect": "NoSchedule"}],
                                   [{"key": "dedicated", "value": "y",
                                     "effect": "NoExecute"}]]))
    gpus = draw(st.sampled_from([0, 4, 8]))
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels,
                         "annotations": {"kwok.x-k8s.io/node": "fake"}},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "20",
                                       GPU: str(gpus)},
                       "capacity": {"cpu": "8", "memory": "32Gi", "pods": "20",
                                    GPU: str(gpus)}}}


def _containers(cpu: int, gpu: int, port: int | None) -> list[Raw]:
    limits: Raw = {"cpu": str(cpu)} if cpu else {}
    if gpu:
        limits[GPU] = str(gpu)
    container: Raw = {"name": "c", "image": "x", "resources": {"limits": limits}}
    if port:
        container["ports"] = [{"containerPort": port, "hostPort": port}]
    return [container]


@st.composite
def _existing(draw: st.DrawFn, case: int, k: int, nodes: list[str]) -> Raw:
    spec: Raw = {"nodeName": draw(st.sampled_from(nodes)),
                 "containers": _containers(draw(st.integers(0, 4)), draw(st.integers(0, 4)),
                                           draw(st.sampled_from([None, None, 8080]))),
                 "tolerations": [{"operator": "Exists"}]}
    if draw(st.booleans()) and draw(st.booleans()):
        spec["affinity"] = {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": _selector(draw(st.sampled_from(["a", "b"]))),
                "topologyKey": draw(st.sampled_from([HOSTNAME, ZONE]))}]}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"e{k}", "namespace": f"diff-{case}",
                         "labels": {"app": draw(st.sampled_from(["a", "b", "c"]))}},
            "spec": spec}


@st.composite
def _test_pod(draw: st.DrawFn, case: int, name: str = "probe") -> Raw:
    spec: Raw = {"nodeSelector": {POOL: f"c{case}"},
                 "containers": _containers(draw(st.integers(0, 6)), draw(st.integers(0, 4)),
                                           draw(st.sampled_from([None, None, 8080])))}
    if draw(st.booleans()):
        spec["nodeSelector"]["disk"] = draw(st.sampled_from(["ssd", "hdd"]))
    affinity: Raw = {}
    if draw(st.booleans()):
        op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]))
        key = "tier" if op in ("Gt", "Lt") else draw(st.sampled_from(["disk", "tier", "gone"]))
        expr: Raw = {"key": key, "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = draw(st.lists(st.sampled_from(["ssd", "hdd", "1", "3"]),
                                           min_size=1, max_size=2, unique=True))
        elif op in ("Gt", "Lt"):
            expr["values"] = [str(draw(st.integers(1, 5)))]
        affinity["nodeAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [expr]}]}}
    for kind in ("podAffinity", "podAntiAffinity"):
        if draw(st.integers(0, 3)) == 0:
            affinity[kind] = {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": _selector(draw(st.sampled_from(["a", "b", "c"]))),
                "topologyKey": draw(st.sampled_from([HOSTNAME, ZONE]))}]}
    if affinity:
        spec["affinity"] = affinity
    if draw(st.booleans()):
        spec["tolerations"] = [{"key": "dedicated", "operator": "Equal",
                                "value": draw(st.sampled_from(["x", "y"]))}]
    if draw(st.integers(0, 3)) == 0:
        constraint: Raw = {"maxSkew": draw(st.integers(1, 2)),
                           "topologyKey": draw(st.sampled_from([HOSTNAME, ZONE])),
                           "whenUnsatisfiable": "DoNotSchedule",
                           "labelSelector": _selector(draw(st.sampled_from(["a", "b", "c"])))}
        if draw(st.booleans()):
            constraint["minDomains"] = draw(st.integers(2, 4))
        spec["topologySpreadConstraints"] = [constraint]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": f"diff-{case}",
                         "labels": {"app": draw(st.sampled_from(["a", "b", "c"]))}},
            "spec": spec}


@st.composite
def _case(draw: st.DrawFn, index: int) -> Case:
    nodes = [draw(_node(index, j)) for j in range(draw(st.integers(3, 5)))]
    names = [n["metadata"]["name"] for n in nodes]
    existing = [draw(_existing(index, k, names)) for k in range(draw(st.integers(0, 4)))]
    gang = draw(st.sampled_from([0] * 9 + [2, 3, 4]))
    return Case(index, nodes, existing, draw(_test_pod(index)), gang, f"diff-{index}")


def corpus(count: int, seed_value: int, offset: int = 0) -> list[Case]:
    """`count` cases, one per hypothesis example, the same for the same seed. Cases are
    drawn with a placeholder index and numbered afterwards (names, labels, namespace)."""
    drawn: list[Case] = []

    @seed(seed_value)
    @settings(max_examples=count, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(_case(PLACEHOLDER))
    def collect(case: Case) -> None:
        drawn.append(case)

    collect()
    return [_numbered(case, offset + i) for i, case in enumerate(drawn)]


PLACEHOLDER = 987654321


def _numbered(case: Case, index: int) -> Case:
    def fix(obj: Any) -> Any:
        text = json.dumps(obj).replace(str(PLACEHOLDER), str(index))
        return json.loads(text)
    return Case(index, fix(case.nodes), fix(case.existing), fix(case.pod), case.gang,
                f"diff-{index}")


# -- an independent reading of the rules, for checking placements --------------------
def _requests(pod: Raw) -> dict[str, float]:
    out: dict[str, float] = {"pods": 1}
    for c in pod["spec"]["containers"]:
        for name, value in ((c.get("resources") or {}).get("limits") or {}).items():
            out[name] = out.get(name, 0) + (float(str(value)) if name != "memory" else 0)
    return out


def _expr_ok(expr: Raw, labels: dict[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if key not in labels:
        return False
    return int(labels[key]) > int(values[0]) if op == "Gt" else int(labels[key]) < int(values[0])


def _matches(selector: Raw, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def violations(node: Raw, pod: Raw, others: Sequence[tuple[Raw, Raw]],
               nodes: Sequence[Raw]) -> list[str]:
    """What `pod` on `node` breaks, given `others` as (pod, its node) already placed."""
    out = []
    spec, labels = pod["spec"], node["metadata"]["labels"]
    here = [p for p, n in others if n["metadata"]["name"] == node["metadata"]["name"]]
    free = {k: float(str(v)) if k != "memory" else 1e18
            for k, v in node["status"]["allocatable"].items()}
    for other in here:
        for k, v in _requests(other).items():
            free[k] = free.get(k, 0) - v
    for k, v in _requests(pod).items():
        if v > free.get(k, 0):
            out.append(f"resources {k}")
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        out.append("nodeSelector")
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get(
        "nodeSelectorTerms")
    if terms and not any(all(_expr_ok(e, labels) for e in t.get("matchExpressions") or [])
                         for t in terms):
        out.append("node affinity")
    for taint in node["spec"].get("taints") or []:
        if taint["effect"] in ("NoSchedule", "NoExecute") and not any(
                t.get("operator") == "Exists" or (t.get("key") == taint["key"] and
                                                  t.get("value") == taint.get("value"))
                for t in spec.get("tolerations") or []):
            out.append("taint")

    def ports(p: Raw) -> set[int]:
        return {port["hostPort"] for c in p["spec"]["containers"]
                for port in c.get("ports") or [] if port.get("hostPort")}
    if ports(pod) & set().union(*(ports(p) for p in here)) if here else set():
        out.append("host port")
    ns = pod["metadata"]["namespace"]
    pod_labels = pod["metadata"].get("labels") or {}

    def same(key: str, a: Raw, b: Raw) -> bool:
        la, lb = a["metadata"]["labels"], b["metadata"]["labels"]
        return key in la and key in lb and la[key] == lb[key]
    affinity = spec.get("affinity") or {}
    for term in (affinity.get("podAntiAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution") or []:
        if any(p["metadata"]["namespace"] == ns and _matches(term["labelSelector"],
               p["metadata"].get("labels") or {}) and same(term["topologyKey"], n, node)
               for p, n in others):
            out.append("pod anti-affinity")
    for term in (affinity.get("podAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution") or []:
        matching = [(p, n) for p, n in others if p["metadata"]["namespace"] == ns
                    and _matches(term["labelSelector"], p["metadata"].get("labels") or {})]
        if term["topologyKey"] not in labels:
            out.append("pod affinity (no key)")
        elif matching and not any(same(term["topologyKey"], n, node) for _, n in matching):
            out.append("pod affinity")
        elif not matching and not _matches(term["labelSelector"], pod_labels):
            out.append("pod affinity (nothing to join)")
    for other, at in others:
        for term in ((other["spec"].get("affinity") or {}).get("podAntiAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution") or []:
            if other["metadata"]["namespace"] == ns and _matches(
                    term["labelSelector"], pod_labels) and same(term["topologyKey"], at, node):
                out.append("existing anti-affinity")
    for c in spec.get("topologySpreadConstraints") or []:
        key = c["topologyKey"]
        if key not in labels:
            out.append("spread label")
            continue
        eligible = [n for n in nodes if key in n["metadata"]["labels"] and all(
            n["metadata"]["labels"].get(k) == v
            for k, v in (spec.get("nodeSelector") or {}).items()) and (
            not terms or any(all(_expr_ok(e, n["metadata"]["labels"])
                                 for e in t.get("matchExpressions") or []) for t in terms))]
        counts = {n["metadata"]["labels"][key]: 0 for n in eligible}
        for p, n in others:
            value = n["metadata"]["labels"].get(key)
            if (value in counts and n in eligible and p["metadata"]["namespace"] == ns
                    and _matches(c["labelSelector"], p["metadata"].get("labels") or {})):
                counts[value] += 1
        low = min(counts.values()) if len(counts) >= c.get("minDomains", 1) else 0
        self_match = 1 if _matches(c["labelSelector"], pod_labels) else 0
        if counts.get(labels[key], 0) + self_match - low > c["maxSkew"]:
            out.append("spread skew")
    return out


# -- running the corpus -------------------------------------------------------------
@dataclass
class Outcome:
    case: int
    kube_scheduler: str | None = None
    """Node kube-scheduler bound the pod to; None: unschedulable."""
    phalanx: str | None = None
    violations: list[str] = field(default_factory=list)
    gang: bool = False

    @property
    def agree(self) -> bool:
        return self.gang or (self.kube_scheduler is None) == (self.phalanx is None)


def _snapshot(case: Case, nodes: list[Raw], pods: list[Raw]) -> Any:
    records = [pod_from_json(p) for p in pods]
    return build_snapshot([node_from_json(n) for n in nodes], usage_from_pods(records),
                          resolve_preset([ZONE]), placed_pods(records))


def _phalanx_single(case: Case, nodes: list[Raw], existing: list[Raw], pod: Raw) -> str | None:
    node, _ = choose_node(pod_from_json(pod), _snapshot(case, nodes, existing))
    return node


def _phalanx_gang(case: Case, nodes: list[Raw], existing: list[Raw]) -> list[tuple[Raw, str]]:
    snapshot = _snapshot(case, nodes, existing)
    members = []
    for i in range(case.gang):
        member = {**case.pod, "metadata": {**case.pod["metadata"], "name": f"m{i}"}}
        members.append(member)
    shape = shape_of(pod_from_json(members[0]), snapshot.anti_affinity_keys)
    request = GangRequest(f"{case.namespace}/gang", (shape,),
                          tuple(Member(m["metadata"]["name"], i, 0)
                                for i, m in enumerate(members)), case.gang)
    result = solve(request, snapshot, SolverConfig(time_limit_s=5.0))
    if not isinstance(result, Placement):
        return []
    by_name = {m["metadata"]["name"]: m for m in members}
    return [(by_name[a.pod], a.node) for a in result.assignments]


def run(kube: KubeClient, cases: Sequence[Case], log: Callable[[str], None] = print,
        timeout: float = 180.0) -> list[Outcome]:
    """Creates every case, lets kube-scheduler decide each single pod, decides each case
    with Phalanx on the same objects, and checks every Phalanx placement."""
    started = time.monotonic()
    create_all(kube, [{"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": c.namespace}} for c in cases],
               path_of=lambda obj: NAMESPACES.path())
    create_all(kube, [n for c in cases for n in c.nodes], path_of=lambda obj: NODES.path())
    names = {n["metadata"]["name"] for c in cases for n in c.nodes}

    def ready() -> bool:
        items = kube.list_all(NODES.path(), {"labelSelector": POOL})[0]
        return sum(1 for n in items if n["metadata"]["name"] in names and schedulable(n)) \
            == len(names)
    wait_until(ready, timeout, f"{len(names)} differential nodes Ready", interval=1.0)
    create_all(kube, [p for c in cases for p in c.existing])
    singles = [c for c in cases if not c.gang]
    log(f"{len(cases)} cases ({len(singles)} single pods, {len(cases) - len(singles)} gangs) "
        f"created in {time.monotonic() - started:.1f}s")
    # Phalanx decides on the objects as the API server holds them, before any binding.
    node_objects = {n["metadata"]["name"]: n for n in kube.list_all(
        NODES.path(), {"labelSelector": POOL})[0]}
    placed: dict[str, list[Raw]] = {}
    for pod in kube.list_all(PODS.path())[0]:
        if pod["metadata"]["namespace"].startswith("diff-"):
            placed.setdefault(pod["metadata"]["namespace"], []).append(pod)
    outcomes = []
    for case in cases:
        nodes = [node_objects[n["metadata"]["name"]] for n in case.nodes]
        existing = placed.get(case.namespace, [])
        others = [(p, node_objects[p["spec"]["nodeName"]]) for p in existing]
        outcome = Outcome(case.index, gang=bool(case.gang))
        if case.gang:
            chosen = _phalanx_gang(case, nodes, existing)
            outcome.phalanx = ",".join(n for _, n in chosen) or None
            for i, (member, node) in enumerate(chosen):
                mates = [(m, node_objects[n]) for j, (m, n) in enumerate(chosen) if j != i]
                outcome.violations += violations(node_objects[node], member, others + mates,
                                                 nodes)
        else:
            pod = {**case.pod, "spec": {**case.pod["spec"], "schedulerName": "default-scheduler"}}
            outcome.phalanx = _phalanx_single(case, nodes, existing, pod)
            if outcome.phalanx is not None:
                outcome.violations = violations(node_objects[outcome.phalanx], pod, others,
                                                nodes)
        outcomes.append(outcome)
    create_all(kube, [c.pod for c in singles])
    by_case = {o.case: o for o in outcomes}

    def decided() -> bool:
        pending = 0
        for pod in kube.list_all(PODS.path(), {"fieldSelector": "metadata.name=probe"})[0]:
            case = int(pod["metadata"]["namespace"].split("-", 1)[1])
            if case not in by_case:
                continue
            conditions = pod["status"].get("conditions") or []
            if pod["spec"].get("nodeName"):
                by_case[case].kube_scheduler = pod["spec"]["nodeName"]
            elif not any(c["type"] == "PodScheduled" and c["status"] == "False"
                         for c in conditions):
                pending += 1
        return pending == 0
    wait_until(decided, timeout, "kube-scheduler decided every probe", interval=1.0)
    log(f"decided in {time.monotonic() - started:.1f}s")
    return outcomes


def cleanup(kube: KubeClient, cases: Sequence[Case]) -> None:
    for case in cases:
        kube.delete(NAMESPACES.path(name=case.namespace))
    kube.delete(NODES.path(), labelSelector=POOL)


def summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    singles = [o for o in outcomes if not o.gang]
    return {
        "cases": len(outcomes), "single_pods": len(singles),
        "gangs": len(outcomes) - len(singles),
        "fit_by_both": sum(1 for o in singles if o.kube_scheduler and o.phalanx),
        "fit_by_neither": sum(1 for o in singles if not o.kube_scheduler and not o.phalanx),
        "disagreements": [{"case": o.case, "kube_scheduler": o.kube_scheduler,
                           "phalanx": o.phalanx} for o in outcomes if not o.agree],
        "violations": [{"case": o.case, "phalanx": o.phalanx, "broken": o.violations}
                       for o in outcomes if o.violations],
        "gangs_placed": sum(1 for o in outcomes if o.gang and o.phalanx),
    }


def main(argv: list[str] | None = None) -> int:
    from localcluster.cluster import LocalCluster

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--batch", type=int, default=500, help="cases created at once")
    args = parser.parse_args(argv)
    cluster = LocalCluster(name="phalanx-bench-differential")
    cluster.down()
    started = time.monotonic()
    outcomes: list[Outcome] = []
    try:
        cluster.up()
        kube = cluster.kube()
        for offset in range(0, args.cases, args.batch):
            batch = corpus(min(args.batch, args.cases - offset), args.seed + offset, offset)
            outcomes += run(kube, batch)
            cleanup(kube, batch)
    finally:
        cluster.down()
    result = summary(outcomes)
    result["seed"], result["duration_s"] = args.seed, round(time.monotonic() - started, 1)
    print_result(result)
    return 0 if not result["disagreements"] and not result["violations"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
