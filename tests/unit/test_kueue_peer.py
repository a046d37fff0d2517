"""benchmarks/peers/kueue_tas without a cluster: the kustomize subset it applies to
Kueue's manifests, and the Topology, flavor and queue it derives from the nodes. Kueue
itself runs only in the benchmark (hack/build-kueue.sh is not part of `make test`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmarks.peers.kueue_tas import (
    GPU,
    HOSTNAME,
    cluster_objects,
    crd_documents,
    kustomize,
    strategic_merge,
    webhook_documents,
)
from topology.presets import AWS_LAYER, AWS_ZONE_ID
from topology.synthetic import ClusterSpec, synth_nodes


def test_webhooks_merge_by_name_and_maps_key_by_key() -> None:
    base = {"webhooks": [{"name": "a", "sideEffects": "None", "rules": [1]},
                         {"name": "b", "sideEffects": "None"}]}
    patch = {"webhooks": [{"name": "b", "namespaceSelector": {"matchLabels": {"x": "y"}}}]}
    merged = strategic_merge(base, patch)
    assert merged["webhooks"] == [
        {"name": "a", "sideEffects": "None", "rules": [1]},
        {"name": "b", "sideEffects": "None", "namespaceSelector": {"matchLabels": {"x": "y"}}}]


def _write(folder: Path, name: str, docs: list[dict[str, Any]] | dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = (yaml.safe_dump_all(docs) if isinstance(docs, list) else yaml.safe_dump(docs))
    (folder / name).write_text(text)


def test_kustomize_applies_path_and_inline_patches_and_points_hooks_here(
        tmp_path: Path) -> None:
    hook = {"name": "mpod.kb.io", "clientConfig": {"service": {
        "name": "webhook-service", "namespace": "system", "path": "/mutate--v1-pod"}}}
    _write(tmp_path / "webhook", "manifests.yaml", [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": "mutating-webhook-configuration"}, "webhooks": [hook]}])
    _write(tmp_path / "webhook", "service.yaml", {"apiVersion": "v1", "kind": "Service",
                                                  "metadata": {"name": "webhook-service"}})
    inline = {"apiVersion": "admissionregistration.k8s.io/v1",
              "kind": "MutatingWebhookConfiguration",
              "metadata": {"name": "mutating-webhook-configuration"},
              "webhooks": [{"name": "mpod.kb.io", "namespaceSelector": {"matchExpressions": [
                  {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                   "values": ["kube-system"]}]}}]}
    _write(tmp_path / "webhook", "kustomization.yaml", {
        "resources": ["manifests.yaml", "service.yaml"],
        "patches": [{"patch": yaml.safe_dump(inline)}]})
    docs = webhook_documents(tmp_path / "webhook", 9443, b"PEM")
    assert [d["metadata"]["name"] for d in docs] == ["kueue-mutating-webhook-configuration"]
    [merged] = docs[0]["webhooks"]
    assert merged["clientConfig"] == {"url": "https://127.0.0.1:9443/mutate--v1-pod",
                                      "caBundle": "UEVN"}
    assert merged["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system"]

    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "workloads.kueue.x-k8s.io"}, "spec": {"group": "kueue.x-k8s.io"}}
    conversion = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                  "metadata": {"name": "workloads.kueue.x-k8s.io"},
                  "spec": {"conversion": {"strategy": "Webhook", "webhook": {
                      "clientConfig": {"service": {"name": "webhook-service",
                                                   "namespace": "system", "path": "/convert"}},
                      "conversionReviewVersions": ["v1"]}}}}
    _write(tmp_path / "crd" / "bases", "workloads.yaml", [crd])
    _write(tmp_path / "crd" / "patches", "webhook_in_workloads.yaml", [conversion])
    _write(tmp_path / "crd", "kustomization.yaml", {
        "resources": ["bases/workloads.yaml"],
        "patches": [{"path": "patches/webhook_in_workloads.yaml"}]})
    [installed] = crd_documents(tmp_path / "crd", 9443, b"PEM")
    assert installed["spec"]["group"] == "kueue.x-k8s.io"
    assert installed["spec"]["conversion"]["webhook"]["clientConfig"] == {
        "url": "https://127.0.0.1:9443/convert", "caBundle": "UEVN"}
    assert kustomize(tmp_path / "crd")[0]["spec"]["conversion"]["strategy"] == "Webhook"


def test_topology_flavor_and_queue_follow_the_nodes() -> None:
    nodes = synth_nodes(ClusterSpec(nodes=40, seed=3))
    topology, flavor, queue = (obj.body for obj in cluster_objects(nodes))
    assert [level["nodeLabel"] for level in topology["spec"]["levels"]] == [
        AWS_ZONE_ID, *AWS_LAYER[:3], HOSTNAME]
    assert flavor["spec"] == {"nodeLabels": {"node.kubernetes.io/instance-type": "p5.48xlarge"},
                              "topologyName": topology["metadata"]["name"]}
    [group] = queue["spec"]["resourceGroups"]
    quota = {r["name"]: r["nominalQuota"] for r in group["flavors"][0]["resources"]}
    assert quota[GPU] == str(8 * len(nodes))
