"""The cache at fleet scale: 100,000 nodes and 1,000,000 pods listed and indexed, then a
watch stream absorbed, from replies the real API server gave.

    .venv/bin/python -m benchmarks.cache_scale [--nodes 100000] [--pods-per-node 10]
        [--events 200000] [--keep-files DIR]

1. Record (real control plane, KWOK kubelets): a few p5 nodes, and on them what a GPU
   fleet runs, created through the real controllers: five DaemonSets in kube-system (a
   CNI with an init container and a sidecar, the NVIDIA device plugin, node-exporter
   with kube-rbac-proxy, an EBS CSI node plugin with three containers, kube-proxy; host
   ports, hostPath volumes, env, probes, tolerations), CoreDNS and metrics-server, an
   inference Deployment (1 GPU, a metrics sidecar, spread constraints) and a training
   StatefulSet (8 GPUs and 32 EFA each); one pod that cannot fit stays Pending. While
   they start, the pod watch stream is recorded byte for byte; then the inference
   Deployment is scaled up and training pods are deleted (the StatefulSet recreates
   them), still recorded. Finally the pod and node lists are recorded, managedFields,
   KWOK's status and all.
2. Replicate (byte templates, so every object is the API server's own JSON): the node
   reply to `--nodes` nodes with the synthetic fleet's topology labels; the pods to
   about `--pods-per-node` per node (every node: one pod of each DaemonSet; 40 % of nodes
   a training pod, the rest 6 inference pods; CoreDNS/metrics-server on every 50th
   node; a few hundred Pending pods), unique names, uids and nodeNames, cut into pages
   of kube.watch.LIST_PAGE as a paginated list returns them; the recorded lifecycles
   (scale-up: ADDED -> bound -> Running; delete: deletionTimestamp -> DELETED -> the
   StatefulSet's new pod ADDED -> bound -> Running) to `--events` watch events in the
   watch wire format (one JSON event per line), on random nodes and listed pods.
3. Measure in a child process with the control plane stopped (its 2 cores then belong
   to the scheduler alone): the pages through the cache's own decode (`PodWire.page`,
   as kube.watch lists pods), parse and index, the GC off for the list as the watch
   does; the first snapshot; the peak resident memory (VmHWM); then every event line
   through `Watcher.handle_line` (the watch's own decode and dispatch) into the cache's
   handlers, with a snapshot every 10,000 events as a scheduling cycle would take one;
   then one sweep of the pod memo (`PodWire.sweep`, what a re-list or a crowded table
   costs), timed, with the tables' sizes before and after.
4. Verify: a second cache built from scratch from the final state (the listed pods with
   every event applied, decoded by plain orjson and read by `pod_from_json`, the dict
   path) must hold the very same records and give the same snapshot (free capacity
   per node and resource, and the same pods on the same nodes). A mismatch fails.

This measures Phalanx's share of a start-up (the accepted method of
benchmarks/cache_startup.py): a live 1M-pod list is mostly the API server's own time on
2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.report import print_result
from kube import KubeClient, Response
from kube.resources import NODES, PODS
from kube.watch import LIST_PAGE
from localcluster.bulk import create_all, ensure_namespace, wait_until
from localcluster.cluster import LocalCluster
from topology.synthetic import ClusterSpec, synth_nodes

Raw = dict[str, Any]
RECORD_NODES = 12
TOLERATE_ALL = [{"operator": "Exists"}]
PROBE = {"httpGet": {"path": "/healthz", "port": 8080}, "initialDelaySeconds": 10,
         "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}


def _env(count: int) -> list[Raw]:
    env: list[Raw] = [{"name": f"SETTING_{i}", "value": f"value-{i}-" + "x" * 16}
                      for i in range(count)]
    env += [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    return env


def _container(name: str, cpu: str, memory: str, *, ports: list[Raw] | None = None,
               env: int = 4, mounts: int = 2, limits: Raw | None = None,
               probe: bool = True) -> Raw:
    container: Raw = {
        "name": name, "image": f"registry.example.com/{name}:v1.19.2",
        "imagePullPolicy": "IfNotPresent", "env": _env(env),
        "resources": {"requests": {"cpu": cpu, "memory": memory},
                      **({"limits": limits} if limits else {})},
        "volumeMounts": [{"name": f"vol-{i}", "mountPath": f"/host/vol-{i}"}
                         for i in range(mounts)],
        "securityContext": {"privileged": True},
    }
    if probe:  # the API refuses probes on init containers
        container["livenessProbe"] = PROBE
    if ports:
        container["ports"] = ports
    return container


def _host_volumes(count: int) -> list[Raw]:
    return [{"name": f"vol-{i}", "hostPath": {"path": f"/var/lib/vol-{i}",
                                               "type": "DirectoryOrCreate"}}
            for i in range(count)]


def _daemonset(name: str, spec: Raw) -> Raw:
    labels = {"app.kubernetes.io/name": name, "k8s-app": name}
    pod_spec = {"tolerations": TOLERATE_ALL, "priorityClassName": "system-node-critical",
                "serviceAccountName": "default", **spec}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
            "spec": {"selector": {"matchLabels": labels},
                     "updateStrategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxUnavailable": "10%"}},
                     "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}


def workloads() -> list[tuple[str, Raw]]:
    """(collection path, object) of what a GPU fleet runs, in creation order."""
    daemonsets = [
        _daemonset("aws-node", {
            "hostNetwork": True, "volumes": _host_volumes(6),
            "initContainers": [_container("aws-vpc-cni-init", "25m", "32Mi", mounts=1,
                                                  probe=False)],
            "containers": [
                _container("aws-node", "25m", "64Mi", env=12, mounts=5, ports=[
                    {"containerPort": 61678, "hostPort": 61678, "name": "metrics"}]),
                _container("aws-eks-nodeagent", "25m", "64Mi", env=3, mounts=2)],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}}}),
        _daemonset("nvidia-device-plugin", {
            "volumes": _host_volumes(2),
            "nodeSelector": {"node.kubernetes.io/instance-type": "p5.48xlarge"},
            "containers": [_container("nvidia-device-plugin", "50m", "64Mi", env=6)]}),
        _daemonset("node-exporter", {
            "hostNetwork": True, "hostPID": True, "volumes": _host_volumes(3),
            "containers": [
                _container("node-exporter", "100m", "128Mi", env=2, mounts=3, ports=[
                    {"containerPort": 9100, "hostPort": 9100, "name": "metrics"}],
                    limits={"memory": "256Mi"}),
                _container("kube-rbac-proxy", "10m", "32Mi", env=2, mounts=0, ports=[
                    {"containerPort": 8443, "hostPort": 8443, "name": "https"}])]}),
        _daemonset("ebs-csi-node", {
            "volumes": _host_volumes(4),
            "containers": [_container("ebs-plugin", "10m", "40Mi", env=5, mounts=4),
                           _container("node-driver-registrar", "10m", "40Mi", env=2),
                           _container("liveness-probe", "10m", "40Mi", env=1, mounts=1)]}),
        _daemonset("kube-proxy", {
            "hostNetwork": True, "volumes": _host_volumes(3),
            "containers": [_container("kube-proxy", "100m", "64Mi", env=2, mounts=3)]}),
    ]
    system = [
        _deployment("coredns", "kube-system", 2, {
            "priorityClassName": "system-cluster-critical",
            "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
            "containers": [_container("coredns", "100m", "70Mi", env=0, mounts=1, ports=[
                {"containerPort": 53, "name": "dns", "protocol": "UDP"}],
                limits={"memory": "170Mi"})],
            "volumes": [{"name": "vol-0", "configMap": {"name": "coredns"}}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {
                    "labelSelector": {"matchLabels": {"app": "coredns"}},
                    "topologyKey": "kubernetes.io/hostname"}}]}}}),
        _deployment("metrics-server", "kube-system", 1, {
            "priorityClassName": "system-cluster-critical",
            "containers": [_container("metrics-server", "100m", "200Mi", env=1, mounts=1)],
            "volumes": [{"name": "vol-0", "emptyDir": {}}]}),
    ]
    inference = _deployment("llm-serve", "inference", RECORD_NODES, {
        "containers": [
            _container("vllm", "8", "64Gi", env=10, mounts=2,
                       limits={"nvidia.com/gpu": "1", "memory": "64Gi"},
                       ports=[{"containerPort": 8000, "name": "http"}]),
            _container("metrics-sidecar", "100m", "128Mi", env=2, mounts=0)],
        "volumes": [{"name": "vol-0", "emptyDir": {"medium": "Memory"}},
                    {"name": "vol-1", "configMap": {"name": "llm-config"}}],
        "topologySpreadConstraints": [{
            "maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "llm-serve"}}}]})
    training = {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "train", "namespace": "training"},
        "spec": {"replicas": RECORD_NODES // 2, "serviceName": "train",
                 "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": "train"}},
                 "template": {"metadata": {"labels": {"app": "train", "job": "llama-70b"}},
                              "spec": {
            "priorityClassName": "", "terminationGracePeriodSeconds": 0,
            "containers": [_container("trainer", "90", "900Gi", env=20, mounts=2, limits={
                "nvidia.com/gpu": "8", "vpc.amazonaws.com/efa": "32", "memory": "900Gi"})],
            "initContainers": [_container("fetch-checkpoint", "4", "16Gi", env=3, mounts=1,
                                          probe=False)],
            "volumes": [{"name": "vol-0", "emptyDir": {"medium": "Memory"}},
                        {"name": "vol-1", "hostPath": {"path": "/scratch"}}],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoSchedule"}]}}}}
    pending = _deployment("too-big", "training", 1, {
        "containers": [_container("trainer", "1", "1Gi", env=2, mounts=0,
                                  limits={"nvidia.com/gpu": "16"})]})
    objects = [*daemonsets, *system, training, inference, pending]
    plural = {"DaemonSet": "daemonsets", "Deployment": "deployments",
              "StatefulSet": "statefulsets"}
    return [(f"/apis/apps/v1/namespaces/{o['metadata']['namespace']}/{plural[o['kind']]}", o)
            for o in objects]


def _deployment(name: str, namespace: str, replicas: int, spec: Raw) -> Raw:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


class StreamRecorder:
    """The pod watch stream, byte for byte, as the API server sends it."""

    def __init__(self, kube: KubeClient, version: str) -> None:
        self.lines: list[bytes] = []
        self._response = kube.stream(PODS.path(), timeout=900, query={
            "watch": "1", "resourceVersion": version, "timeoutSeconds": "900"})
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._response:
                if line.strip():
                    self.lines.append(line.rstrip(b"\n"))
        except Exception:  # the connection is closed by stop()
            return

    def stop(self) -> list[bytes]:
        # shutdown() unblocks the reading thread (release_conn would wait for it).
        self._response.shutdown()
        self._thread.join(30)
        self._response.close()
        return list(self.lines)


def _pods(kube: KubeClient) -> list[Raw]:
    return list(kube.get(PODS.path()).get("items") or [])


def record(kube: KubeClient) -> tuple[bytes, bytes, list[bytes]]:
    """(pod list reply, node list reply, watch stream lines) from the real control plane."""
    nodes = synth_nodes(ClusterSpec(nodes=RECORD_NODES, seed=17))
    create_all(kube, nodes)
    for namespace in ("inference", "training"):
        ensure_namespace(kube, namespace)
    version = kube.get(PODS.path(), limit="1")["metadata"]["resourceVersion"]
    recorder = StreamRecorder(kube, version)
    gone: set[str] = set()
    created = workloads()
    expected = 0

    def running() -> bool:
        phases = [str(p["status"].get("phase")) for p in _pods(kube)]
        return phases.count("Running") >= expected

    # Training first (whole nodes of 8 GPUs), inference on the nodes left, as a fleet's
    # pools are split; the pod that cannot fit stays Pending.
    for path, obj in created[:-2]:
        kube.create(path, obj)
    expected = 5 * RECORD_NODES + 3 + RECORD_NODES // 2
    wait_until(running, 300, f"{expected} pods Running")
    for path, obj in created[-2:]:
        kube.create(path, obj)
    expected += RECORD_NODES
    wait_until(running, 300, f"{expected} pods Running")
    # Lifecycles for the replay: training pods deleted (the StatefulSet recreates them),
    # then a scale-up of the inference Deployment.
    for index in range(3):
        gone.add(kube.get(PODS.path("training") + f"/train-{index}")["metadata"]["uid"])
        kube.delete(PODS.path("training") + f"/train-{index}")
    wait_until(lambda: all(p["metadata"].get("uid") not in gone and
                           p["status"].get("phase") == "Running" for p in _pods(kube)
                           if p["metadata"]["name"].startswith("train-")), 300,
               "the recreated training pods Running")
    kube.request("PATCH", "/apis/apps/v1/namespaces/inference/deployments/llm-serve/scale",
                 body={"spec": {"replicas": RECORD_NODES + 6}},
                 content_type="application/merge-patch+json")
    expected += 6
    wait_until(running, 300, "the scale-up Running")
    time.sleep(3)  # the last status writes
    lines = recorder.stop()
    pods = kube.request("GET", PODS.path(), timeout=120)
    node_list = kube.request("GET", NODES.path(), timeout=120)
    assert isinstance(pods, Response) and isinstance(node_list, Response)
    return pods.data, node_list.data, lines


# -- replication ---------------------------------------------------------------------------
_VERSION = re.compile(rb'"resourceVersion":"\d+"')


class Template:
    """One recorded object as bytes, with the strings that make it one pod: replaced
    together to make another."""

    def __init__(self, raw: bytes, tokens: list[str]) -> None:
        self.raw, self.tokens = raw, [t for t in tokens if t]

    def make(self, values: list[str]) -> bytes:
        out = self.raw
        for old, new in zip(self.tokens, values, strict=False):
            out = out.replace(f'"{old}"'.encode(), f'"{new}"'.encode())
        return out


def _owner(pod: Raw) -> str:
    for ref in pod["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            name = str(ref["name"])
            return name.rsplit("-", 1)[0] if ref["kind"] == "ReplicaSet" else name
    return ""


def pod_templates(pods: list[Raw]) -> dict[str, Template]:
    """Per kind of pod (each DaemonSet, train, llm-serve, coredns, metrics-server,
    too-big), one recorded pod as a template."""
    out: dict[str, Template] = {}
    for pod in pods:
        kind = _owner(pod)
        if kind and kind not in out:
            meta = pod["metadata"]
            out[kind] = Template(orjson.dumps(pod), [meta["name"], meta["uid"],
                                                     pod["spec"].get("nodeName", "")])
    return out


def replicate_nodes(node_reply: bytes, count: int) -> tuple[list[bytes], list[str]]:
    """Pages of `count` nodes: the API server's own Node JSON with the synthetic fleet's
    names and topology labels."""
    reply = orjson.loads(node_reply)
    template = reply["items"][0]
    pages: list[bytes] = []
    names: list[str] = []
    items: list[bytes] = []
    for i, synth in enumerate(synth_nodes(ClusterSpec(nodes=count, seed=17))):
        meta = template["metadata"]
        meta["name"] = synth["metadata"]["name"]
        meta["labels"] = synth["metadata"]["labels"]
        meta["uid"] = f"00000000-0000-4000-8000-{i:012d}"
        items.append(orjson.dumps(template))
        names.append(meta["name"])
        if len(items) == LIST_PAGE:
            pages.append(_page("NodeList", items, len(pages)))
            items = []
    if items:
        pages.append(_page("NodeList", items, len(pages), last=True))
    return pages, names


def _page(kind: str, items: list[bytes], index: int, last: bool = False) -> bytes:
    token = "" if last else f',"continue":"page-{index + 1}"'
    return (b'{"kind":"' + kind.encode() + b'","apiVersion":"v1","metadata":{'
            b'"resourceVersion":"1000"' + token.encode() + b'},"items":['
            + b",".join(items) + b"]}")


def replicate_pods(templates: dict[str, Template], nodes: list[str], per_node: int,
                   out: Path) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    """Writes pages of pods, one per line, to `out`; returns the count per kind and
    (name, uid, node) of the training pods off the recording's nodes (the replay deletes
    some: their strings must not be the recording's own)."""
    daemonsets = ["aws-node", "nvidia-device-plugin", "node-exporter", "ebs-csi-node",
                  "kube-proxy"]
    # Inference pods fill the rest up to per_node x nodes, over the 60 % of nodes that run
    # no training pod (at most 8 each: one GPU apiece).
    total = len(nodes) * per_node
    others = sum(len(daemonsets) + (i % 10 < 4) + (i % 50 == 0) + (i % 250 == 0)
                 for i in range(len(nodes)))
    inference_nodes = sum(i % 10 >= 4 for i in range(len(nodes)))
    base, extra = divmod(max(total - others, inference_nodes), inference_nodes)
    counts: dict[str, int] = {}
    serial = 0

    train: list[tuple[str, str, str]] = []

    def make(kind: str, name: str, node: str) -> bytes:
        nonlocal serial
        serial += 1
        counts[kind] = counts.get(kind, 0) + 1
        uid = f"10000000-0000-4000-8000-{serial:012d}"
        if kind == "train" and serial > RECORD_NODES * 20:
            train.append((name, uid, node))
        return templates[kind].make([name, uid, node])

    items: list[bytes] = []
    pages = 0
    with out.open("wb") as stream:
        def flush(last: bool = False) -> None:
            nonlocal items, pages
            stream.write(_page("PodList", items, pages, last) + b"\n")
            items, pages = [], pages + 1

        for i, node in enumerate(nodes):
            for ds in daemonsets:
                items.append(make(ds, f"{ds}-{i:06d}", node))
            if i % 10 < 4:
                items.append(make("train", f"train-{i // 1024}-{i % 1024}", node))
            else:
                count = base + (extra > 0)
                extra -= 1
                items += [make("llm-serve", f"llm-serve-{i:06d}-{j}", node)
                          for j in range(count)]
            if i % 50 == 0:
                items.append(make("coredns" if i % 100 else "metrics-server",
                                  f"system-{i:06d}", node))
            if i % 250 == 0:
                items.append(make("too-big", f"too-big-{i:06d}", ""))
            if len(items) >= LIST_PAGE:
                flush()
        flush(last=True)
    return counts, train


def lifecycles(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """From the recorded stream: the event lines of one scaled-up inference pod (ADDED
    after the Deployment's first pods were Running), and of one training pod from its
    deletion on (deletionTimestamp, DELETED, the StatefulSet's new pod ADDED, bound,
    Running)."""
    by_name: dict[str, list[bytes]] = {}
    for line in lines:
        meta = orjson.loads(line)["object"]["metadata"]
        by_name.setdefault(f"{meta['namespace']}/{meta['name']}", []).append(line)
    deleted = next(v for k, v in by_name.items() if k.startswith("training/train-")
                   and any(b'"type":"DELETED"' in line for line in v))
    first = next(i for i, line in enumerate(deleted) if b'"deletionTimestamp"' in line)
    scaled = [v for k, v in by_name.items() if k.startswith("inference/llm-serve")]
    return scaled[-1], deleted[first:]


def _tokens(lines: list[bytes]) -> tuple[str, list[str], list[str]]:
    """Name, every uid and every node (in order of appearance) of one pod's events."""
    name, uids, nodes = "", list[str](), list[str]()
    for line in lines:
        obj = orjson.loads(line)["object"]
        name = obj["metadata"]["name"]
        for value, found in ((obj["metadata"]["uid"], uids),
                             (obj["spec"].get("nodeName", ""), nodes)):
            if value and value not in found:
                found.append(value)
    return name, uids, nodes


def replay_stream(scaled: list[bytes], deleted: list[bytes],
                  listed_train: list[tuple[str, str, str]], nodes: list[str], events: int,
                  out: Path, seed: int = 5) -> int:
    """Writes about `events` watch event lines to `out`, alternating a new inference pod's
    lifecycle and a listed training pod's deletion and replacement; resourceVersions
    rise as the API server's do. Returns the number of lines."""
    rng = random.Random(seed)
    fresh_nodes = nodes[RECORD_NODES:]  # never one of the recording's own strings
    version, written, serial = 2000, 0, 0
    with out.open("wb") as stream:
        while written < events:
            serial += 1
            mapping: list[tuple[str, str]] = []
            if serial % 2:
                lines = scaled
                name, uids, old_nodes = _tokens(scaled)
                mapping.append((name, f"llm-serve-new-{serial}"))
                mapping += [(u, f"20000000-0000-4000-8000-{serial:06d}{i:06d}")
                            for i, u in enumerate(uids)]
                mapping += [(n, rng.choice(fresh_nodes)) for n in old_nodes]
            else:
                lines = deleted
                name, uids, old_nodes = _tokens(deleted)
                new_name, uid, node = listed_train[(serial // 2) % len(listed_train)]
                mapping += [(name, new_name), (uids[0], uid)]
                mapping += [(u, f"30000000-0000-4000-8000-{serial:06d}{i:06d}")
                            for i, u in enumerate(uids[1:])]
                mapping += [(old_nodes[0], node)]
                mapping += [(n, rng.choice(fresh_nodes)) for n in old_nodes[1:]]
            for line in lines:
                for old, new in mapping:
                    line = line.replace(f'"{old}"'.encode(), f'"{new}"'.encode())
                version += 1
                line = _VERSION.sub(f'"resourceVersion":"{version}"'.encode(), line, count=1)
                stream.write(line + b"\n")
                written += 1
    return written


CHILD = r"""
import gc, json, sys, time
import numpy as np
import orjson
from scheduler.cache import ClusterCache
from kube.watch import JSON_WIRE, Watcher
from topology.presets import resolve_preset
from topology.records import PodWire, pod_from_json

def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM")}

nodes_file, pods_file, events_file = sys.argv[1:4]
cache = ClusterCache(resolve_preset("aws"))
gc.collect()
out = {}
# -- list: nodes, then pods, page by page, as kube.watch lists them -----------------------
# Wall time, and this process's CPU time: on a machine shared with other work the latter
# is what the same run takes with the cores to itself.
cpu = time.process_time
started, started_cpu = time.perf_counter(), cpu()
gc.disable()  # as Watcher._list does for a whole list
nodes = []
for page in open(nodes_file, "rb"):
    raw, version, token = JSON_WIRE.page(page)  # nodes: the watch's default wire
    nodes.extend(cache.parse_nodes(raw))
    del raw
cache.install_nodes(nodes)
out["nodes_listed_s"] = round(time.perf_counter() - started, 2)
pods, decode_s, size = [], 0.0, 0
t_pods, t_pods_cpu = time.perf_counter(), cpu()
for page in open(pods_file, "rb"):
    size += len(page)
    t0 = time.perf_counter()
    items, version, token = cache.pod_wire.page(page)
    decode_s += time.perf_counter() - t0
    pods.extend(cache.parse_pods(items))
    del items, page
gc.enable()
cache.install_pods(pods)
del pods
out["pods_listed_s"] = round(time.perf_counter() - t_pods, 2)
out["pods_listed_cpu_s"] = round(cpu() - t_pods_cpu, 2)
out["pods_decode_s"] = round(decode_s, 2)
out["listed_s"] = round(time.perf_counter() - started, 2)
out["listed_cpu_s"] = round(cpu() - started_cpu, 2)
t0 = time.perf_counter()
snap = cache.snapshot()
out["first_snapshot_s"] = round(time.perf_counter() - t0, 2)
out["startup_s"] = round(time.perf_counter() - started, 2)
out["startup_cpu_s"] = round(cpu() - started_cpu, 2)
out["nodes"], out["pods"] = len(cache.nodes), len(cache.pods)
out["pod_list_gb"] = round(size / 1e9, 2)
out["bad_pods"] = len(cache.bad_pods)
gc.collect()
out["rss_after_list_mb"] = rss()["VmRSS"]
out["peak_after_list_mb"] = rss()["VmHWM"]
t0, t0_cpu = time.perf_counter(), cpu()
snap = cache.snapshot()
out["snapshot_s"] = round(time.perf_counter() - t0, 2)
out["snapshot_cpu_s"] = round(cpu() - t0_cpu, 2)
del snap
# -- watch: every line through the watch's own decode and dispatch ------------------------
watcher = Watcher(None, "/api/v1/pods", name="pods", on_replace=cache.install_pods,
                  on_event=cache.pod_event, wire=cache.pod_wire)
snapshots, snap_s, snap_cpu, count = 0, 0.0, 0.0, 0
t0, t0_cpu = time.perf_counter(), cpu()
for i, line in enumerate(open(events_file, "rb")):  # read as a watch stream arrives
    count += 1
    assert watcher.handle_line(line)
    if i % 10000 == 9999:
        t1, t1_cpu = time.perf_counter(), cpu()
        snap = cache.snapshot()
        snap_s += time.perf_counter() - t1
        snap_cpu += cpu() - t1_cpu
        snapshots += 1
replay_s, replay_cpu = time.perf_counter() - t0, cpu() - t0_cpu
out["events"] = count
out["replay_s"] = round(replay_s, 2)
out["snapshots_during_replay"] = snapshots
out["snapshot_during_replay_avg_s"] = round(snap_s / max(snapshots, 1), 3)
out["events_per_s"] = round(count / (replay_s - snap_s))
out["events_per_s_with_snapshots"] = round(count / replay_s)
out["events_per_cpu_s"] = round(count / (replay_cpu - snap_cpu))
out["snapshot_during_replay_avg_cpu_s"] = round(snap_cpu / max(snapshots, 1), 3)
out["watch_version"] = watcher.version
final = cache.snapshot()
out["rss_after_replay_mb"], out["peak_mb"] = rss()["VmRSS"], rss()["VmHWM"]
# -- the pod memo's sweep (PodWire.sweep: after a re-list, or when a table is crowded) ----
out["memo_before_sweep"] = cache.pod_wire.sizes()
t0, t0_cpu = time.perf_counter(), cpu()
cache.pod_wire.sweep(cache.pods.values())
out["memo_sweep_s"] = round(time.perf_counter() - t0, 2)
out["memo_sweep_cpu_s"] = round(cpu() - t0_cpu, 2)
out["memo_after_sweep"] = cache.pod_wire.sizes()
out["peak_after_sweep_mb"] = rss()["VmHWM"]
# -- verify: the final state from scratch -------------------------------------------------
# A second cache, with its own PodWire (nothing remembered), fed the listed pods with every
# event applied, installed at once: its records and snapshot must equal the ones the
# event handlers kept. One page in 50 and one event in 50 are also read by the dict path
# (orjson + pod_from_json), whose records must equal the wire path's.
t0 = time.perf_counter()
wire = PodWire()
state, sampled, sample_ok = {}, 0, True
for i, line in enumerate(open(events_file, "rb")):
    kind, obj = wire.event(line)
    state[obj.key()] = None if kind == "DELETED" else obj
    if i % 50 == 0 and kind != "DELETED":
        sampled += 1
        sample_ok &= wire.record(obj) == pod_from_json(orjson.loads(line)["object"])
fresh = ClusterCache(resolve_preset("aws"))
fresh.install_nodes(list(cache.nodes.values()))
records = []
gc.disable()
for n, page in enumerate(open(pods_file, "rb")):
    items, _, _ = wire.page(page)
    records += [wire.record(item) for item in items if item.key() not in state]
    if n % 50 == 0:
        for item, raw in zip(items, orjson.loads(page)["items"]):
            sampled += 1
            sample_ok &= wire.record(item) == pod_from_json(raw)
records += [wire.record(obj) for obj in state.values() if obj is not None]
gc.enable()
fresh.install_pods(records)
del records
expected = fresh.snapshot()
same_records = fresh.pods == cache.pods
same_free = expected.resources == final.resources and np.array_equal(expected.free, final.free)
keys = lambda entries: sorted((i, p.key, p.resource_version) for i, p in entries)
same_placed = (keys(expected.placed) == keys(final.placed)
               and keys(expected.with_anti_affinity) == keys(final.with_anti_affinity)
               and keys(expected.with_host_ports) == keys(final.with_host_ports))
out["verify_s"] = round(time.perf_counter() - t0, 1)
out["verified"] = bool(same_records and same_free and same_placed and sample_ok)
out["verify_detail"] = {"records": same_records, "free": bool(same_free), "placed": same_placed,
                        "dict_path_sample": [sampled, bool(sample_ok)],
                        "pods_after": len(cache.pods), "with_host_ports":
                        len(final.with_host_ports), "bound_gpus_after":
                        int(sum(u.get("nvidia.com/gpu", 0) for u in cache.usage().values()))}
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--pods-per-node", type=int, default=10)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keep-files", type=Path, default=None,
                        help="write the streams here and keep them (default: a temp dir)")
    parser.add_argument("--recorded", type=Path, default=None,
                        help="a folder a previous run kept: skip the control plane")
    parser.add_argument("--measure-only", type=Path, default=None,
                        help="a folder a previous --keep-files run wrote: measure its streams")
    args = parser.parse_args(argv)
    if args.measure_only is not None:
        return _measure(args.measure_only, {"benchmark": "cache_scale"}, keep=True)
    folder = args.keep_files or Path(tempfile.mkdtemp(prefix="cache-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    source = args.recorded or folder
    result: dict[str, Any] = {"benchmark": "cache_scale"}
    if args.recorded is None:
        cluster = LocalCluster(name="phalanx-bench-cache-h")
        cluster.down()
        try:
            cluster.up()
            started = time.monotonic()
            pod_reply, node_reply, lines = record(cluster.kube())
            result["record_s"] = round(time.monotonic() - started, 1)
        finally:
            cluster.down()
        (folder / "pods.json").write_bytes(pod_reply)
        (folder / "nodes.json").write_bytes(node_reply)
        (folder / "watch.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    pod_reply = (source / "pods.json").read_bytes()
    node_reply = (source / "nodes.json").read_bytes()
    lines = [line for line in (source / "watch.jsonl").read_bytes().split(b"\n") if line]
    recorded = orjson.loads(pod_reply)["items"]
    result["recorded"] = {"pods": len(recorded), "events": len(lines),
                          "pod_json_bytes": {_owner(p): len(orjson.dumps(p)) for p in recorded}}
    started = time.monotonic()
    node_pages, names = replicate_nodes(node_reply, args.nodes)
    with (folder / "nodes.jsonl").open("wb") as stream:
        for page in node_pages:
            stream.write(page + b"\n")
    del node_pages
    result["pod_counts"], listed_train = replicate_pods(
        pod_templates(recorded), names, args.pods_per_node, folder / "pods.jsonl")
    random.Random(3).shuffle(listed_train)
    scaled, deleted = lifecycles(lines)
    result["replay_lifecycle_events"] = {"scale_up": len(scaled), "delete": len(deleted)}
    replay_stream(scaled, deleted, listed_train, names, args.events, folder / "events.jsonl")
    result["replicate_s"] = round(time.monotonic() - started, 1)
    return _measure(folder, result, keep=args.keep_files is not None)


def _measure(folder: Path, result: dict[str, Any], keep: bool) -> int:
    """Runs the child on the streams in `folder` (deleted after unless `keep`)."""
    child = subprocess.run([sys.executable, "-c", CHILD, str(folder / "nodes.jsonl"),
                            str(folder / "pods.jsonl"), str(folder / "events.jsonl")],
                           capture_output=True, text=True)
    if child.returncode:
        print(child.stderr, file=sys.stderr)
        return 1
    result.update(json.loads(child.stdout))
    if not keep:
        for name in ("nodes.jsonl", "pods.jsonl", "events.jsonl"):
            (folder / name).unlink()
    print_result(result)
    return 0 if result["verified"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
