"""Binding many pods at once through `pods/binding`, and their volumes first.

Raw JSON, one POST per pod, `concurrency` in flight, on the client's `Burst` (HTTP/1.1
keep-alive connections on an event loop in a thread of its own): a bind costs this
process a fraction of the CPU urllib3 from a thread pool did, CPU the API server shares
on a small control plane. 201 is success (the reply is a Status, which the generated
client's Binding model cannot parse). 429 and 5xx and lost connections are retried here
with the client's backoff (Retry-After honoured), leadership checked before each
attempt; 409 means the pod is bound already, which counts as success only when it is
bound to the node we chose. Events are not written here: the cycle reports after
`bind_all` returns, so they never compete with the binds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import orjson

from kube import NO_RETRY, ApiError, ApiUnavailable, KubeClient, transient
from kube.client import Burst
from kube.resources import PODS, PVCS, PVS
from scheduler.collaborators import NOT_LEADER, BindResult, EvictResult
from scheduler.volumes import SELECTED_NODE, VolumeAction


def binding_body(namespace: str, name: str, node: str) -> bytes:
    """The Binding, serialised once per pod (retries resend the same bytes)."""
    return orjson.dumps({"apiVersion": "v1", "kind": "Binding",
                         "metadata": {"name": name, "namespace": namespace},
                         "target": {"apiVersion": "v1", "kind": "Node", "name": node}})


BIND_TIMEOUT_S = 10.0


class Binder:
    def __init__(self, kube: KubeClient, concurrency: int,
                 allowed: Callable[[], bool] = lambda: True) -> None:
        self.kube, self.allowed, self.concurrency = kube, allowed, concurrency
        self.burst: Burst = kube.burst()
        self.burst.keep_warm(concurrency)
        self.pool = ThreadPoolExecutor(max_workers=min(concurrency, 32),
                                       thread_name_prefix="bind")
        """For the Evictor's blocking writes (preemption), which share the binder's
        budget of concurrent requests."""

    def warm(self) -> None:
        """Opens the bind connections now and waits (keep_warm, started with the binder,
        does the same in the background)."""
        self.burst.warm(self.concurrency)

    def bind_one(self, key: str, node: str) -> BindResult:
        return self.burst.run(self._bind(key, node))

    async def _bind(self, key: str, node: str) -> BindResult:
        """One bind, retried on 429/5xx/lost connections with the client's backoff; the
        leadership check runs before *every* attempt, so a leader whose Lease lapses while
        its binds are backing off sends none of them again."""
        namespace, name = key.split("/", 1)
        path = PODS.path(namespace, name, "binding")
        body = binding_body(namespace, name, node)
        policy = self.kube.retry
        last: ApiError | None = None
        for attempt in range(policy.attempts):
            if attempt:
                await asyncio.sleep(policy.delay(attempt - 1, last.retry_after if last else None))
            if not self.allowed():
                return BindResult(key, node, False, NOT_LEADER, "not leader: bind not sent")
            try:
                reply = await self.burst.request("POST", path, body, timeout=BIND_TIMEOUT_S)
                return BindResult(key, node, True, reply.status)
            except ApiError as exc:
                if exc.status == 409:
                    return await self._already_bound(key, node, exc)
                if not transient(exc.status) and not isinstance(exc, ApiUnavailable):
                    return BindResult(key, node, False, exc.status,
                                      f"{exc.reason}: {exc.message}")
                last = exc
        assert last is not None
        return BindResult(key, node, False, last.status, f"{last.reason}: {last.message}")

    async def _already_bound(self, key: str, node: str, exc: ApiError) -> BindResult:
        namespace, name = key.split("/", 1)
        try:
            pod = (await self.burst.request("GET", PODS.path(namespace, name),
                                            timeout=BIND_TIMEOUT_S)).json()
        except ApiError:
            return BindResult(key, node, False, 409, exc.message)
        bound_to = (pod.get("spec") or {}).get("nodeName")
        if bound_to == node:
            return BindResult(key, node, True, 409, "already bound here")
        return BindResult(key, node, False, 409, f"already bound to {bound_to}",
                          bound_to=str(bound_to or ""))

    async def _bind_many(self, placements: Sequence[tuple[str, str]]) -> list[BindResult]:
        """`concurrency` workers taking the next placement in order: no task per pod."""
        results: list[BindResult | None] = [None] * len(placements)
        cursor = iter(range(len(placements)))

        async def worker() -> None:
            for i in cursor:
                results[i] = await self._bind(*placements[i])

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency,
                                                           len(placements)))))
        return [r for r in results if r is not None]

    def bind_all(self, placements: Sequence[tuple[str, str]]
                 ) -> tuple[list[BindResult], float]:
        """Binds every (pod key, node) concurrently; returns results and seconds taken."""
        started = time.perf_counter()
        with self.kube.binding():
            results = self.burst.run(self._bind_many(placements))
        return results, time.perf_counter() - started

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class VolumeWriter:
    """The PreBind writes for claims waiting for their first consumer: a static volume's
    `spec.claimRef` (the volume controller completes the binding) or the claim's
    `volume.kubernetes.io/selected-node` annotation (the provisioner creates the volume
    on that node's topology)."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    def apply(self, actions: Sequence[VolumeAction]) -> list[str]:
        """Errors, one line per failed write (empty: all written)."""
        errors = []
        for action in actions:
            try:
                if action.volume:
                    patch = {"metadata": {"annotations": {
                                 "pv.kubernetes.io/bound-by-controller": "yes"}},
                             "spec": {"claimRef": {
                                 "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                                 "namespace": action.namespace, "name": action.claim,
                                 "uid": action.claim_uid}}}
                    self.kube.call("PATCH", PVS.path(name=action.volume), body=patch,
                                   content_type="application/merge-patch+json")
                else:
                    patch = {"metadata": {"annotations": {SELECTED_NODE: action.node}}}
                    self.kube.call("PATCH", PVCS.path(action.namespace, action.claim),
                                   body=patch, content_type="application/merge-patch+json")
            except ApiError as exc:
                errors.append(f"{action.namespace}/{action.claim}: {exc.status} {exc.reason}: "
                              f"{exc.message}"[:200])
        return errors


def eviction_body(namespace: str, name: str) -> dict[str, object]:
    return {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace}}


class Evictor:
    """Preemption's writes: `pods/eviction` (the API server honours PodDisruptionBudgets,
    answering 429, and the pod's graceful termination), and `pods/status` merge patches
    of nominatedNodeName. 429s from a PDB are final here (the cycle chooses again); those
    from overload and 5xx are retried with the client's backoff."""

    def __init__(self, kube: KubeClient, pool: ThreadPoolExecutor) -> None:
        self.kube, self.pool = kube, pool

    def evict_one(self, key: str) -> EvictResult:
        namespace, name = key.split("/", 1)
        path = PODS.path(namespace, name, "eviction")
        policy = self.kube.retry
        last: ApiError | None = None
        for attempt in range(policy.attempts):
            if attempt:
                time.sleep(policy.delay(attempt - 1, last.retry_after if last else None))
            try:
                self.kube.request("POST", path, body=eviction_body(namespace, name),
                                  retry=NO_RETRY, timeout=BIND_TIMEOUT_S)
                return EvictResult(key, True, 201)
            except ApiError as exc:
                if exc.status == 404:
                    return EvictResult(key, True, 404, "gone already")
                if exc.status == 429 and "disruption budget" in exc.message.lower():
                    return EvictResult(key, False, 429, exc.message[:200])
                if not transient(exc.status) and not isinstance(exc, ApiUnavailable):
                    return EvictResult(key, False, exc.status, f"{exc.reason}: {exc.message}")
                last = exc
        assert last is not None
        return EvictResult(key, False, last.status, f"{last.reason}: {last.message}")

    def evict(self, pods: Sequence[str]) -> list[EvictResult]:
        return list(self.pool.map(self.evict_one, pods))

    def nominate(self, placements: Sequence[tuple[str, str]]) -> list[str]:
        def one(kv: tuple[str, str]) -> str:
            namespace, name = kv[0].split("/", 1)
            try:
                self.kube.call("PATCH", PODS.path(namespace, name, "status"),
                               body={"status": {"nominatedNodeName": kv[1]}},
                               content_type="application/merge-patch+json")
            except ApiError as exc:
                return f"{kv[0]}: {exc.status} {exc.reason}"[:200]
            return ""
        return [e for e in self.pool.map(one, placements) if e]
