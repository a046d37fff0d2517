"""Who may read what on the secure explain API: delegated to the API server, as
kube-scheduler's own secure port does it.

A bearer token is checked with a TokenReview; a request's permission with a
SubjectAccessReview for the caller the review named. Answers are cached briefly (10 s,
kube-scheduler's default for both), so a burst of page loads costs the API server one
review per caller and question. What each route needs (`Need`) is decided here and
nowhere else:

- `/healthz`, `/readyz`: nothing (probes carry no token);
- `/v1/groups/{namespace}/...`: `get pods` in that namespace (a gang's explanation names
  its pods and nodes, what `kubectl get pods -o wide` shows);
- `/v1/groups` and the page `/ui`: a caller; they keep the namespaces where the caller
  may `list pods` (and the page draws the map only for callers who may read
  `/v1/topology`);
- `/v1/topology`, `/metrics`: `get` on that non-resource URL (as kube-scheduler guards
  `/metrics`);
- anything else (`/openapi.json`, `/docs`, unknown paths): a caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from kube import ApiError, KubeClient
from kube.resources import SUBJECT_ACCESS_REVIEWS, TOKEN_REVIEWS

K = TypeVar("K")
V = TypeVar("V")
CACHE_TTL_S = 10.0
PROXIED_AUTHORIZATION = "x-phalanx-authorization"
"""Where `kubectl phalanx` puts the caller's bearer token when it goes through the API
server's service proxy, which strips `Authorization` before forwarding (the token is
checked with a TokenReview all the same)."""
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
URL_PATHS = frozenset({"/v1/topology", "/metrics"})
GROUPS = "/v1/groups"


@dataclass(frozen=True)
class Caller:
    """A caller as the TokenReview named it."""

    user: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


class Scope(Enum):
    OPEN = "open"
    CALLER = "caller"
    NAMESPACE = "namespace"
    URL = "url"


@dataclass(frozen=True)
class Need:
    """What a request needs: nothing, a caller, `get pods` in a namespace, or `get` on a
    non-resource URL."""

    scope: Scope
    namespace: str = ""
    path: str = ""


def need_of(path: str) -> Need:
    if path in OPEN_PATHS:
        return Need(Scope.OPEN)
    if path in URL_PATHS:
        return Need(Scope.URL, path=path)
    if path.startswith(GROUPS + "/"):
        namespace = path[len(GROUPS) + 1:].split("/", 1)[0]
        if namespace:
            return Need(Scope.NAMESPACE, namespace=namespace)
    return Need(Scope.CALLER)


@dataclass
class _Cache(Generic[K, V]):
    """A small TTL map; the lock keeps concurrent requests from racing on it."""

    ttl: float
    clock: Callable[[], float] = time.monotonic
    entries: dict[K, tuple[float, V]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: K) -> tuple[bool, V | None]:
        with self.lock:
            found = self.entries.get(key)
            if found is None or found[0] < self.clock():
                return False, None
            return True, found[1]

    def put(self, key: K, value: V) -> None:
        with self.lock:
            if len(self.entries) > 10_000:  # expired ones go first; never unbounded
                now = self.clock()
                self.entries = {k: v for k, v in self.entries.items() if v[0] >= now}
                if len(self.entries) > 10_000:
                    self.entries.clear()
            self.entries[key] = (self.clock() + self.ttl, value)


class ReviewUnavailable(Exception):
    """The API server could not answer a review: the request gets 503, never a guess."""


class Reviews(Protocol):
    """The two questions put to the API server (uncached); ReviewUnavailable when it
    cannot answer."""

    def token_review(self, token: str) -> Caller | None: ...

    def access_review(self, caller: Caller, need: Need, verb: str) -> bool: ...


class ApiReviews:
    """TokenReview and SubjectAccessReview through Phalanx's own client."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    def token_review(self, token: str) -> Caller | None:
        try:
            review = self.kube.create(TOKEN_REVIEWS.path(), {
                "apiVersion": TOKEN_REVIEWS.api_version, "kind": TOKEN_REVIEWS.kind,
                "spec": {"token": token}})
        except ApiError as exc:
            raise ReviewUnavailable(f"TokenReview: {exc.status} {exc.reason}") from None
        status = review.get("status") or {}
        if not status.get("authenticated"):
            return None
        user = status.get("user") or {}
        return Caller(str(user.get("username") or ""), str(user.get("uid") or ""),
                      tuple(str(g) for g in user.get("groups") or ()),
                      tuple(sorted((str(k), tuple(str(x) for x in v or ()))
                                   for k, v in (user.get("extra") or {}).items())))

    def access_review(self, caller: Caller, need: Need, verb: str) -> bool:
        spec: dict[str, Any] = {"user": caller.user, "uid": caller.uid,
                                "groups": list(caller.groups),
                                "extra": {k: list(v) for k, v in caller.extra}}
        if need.scope is Scope.URL:
            spec["nonResourceAttributes"] = {"path": need.path, "verb": verb}
        else:
            spec["resourceAttributes"] = {"namespace": need.namespace, "verb": verb,
                                          "resource": "pods", "version": "v1"}
        try:
            review = self.kube.create(SUBJECT_ACCESS_REVIEWS.path(), {
                "apiVersion": SUBJECT_ACCESS_REVIEWS.api_version,
                "kind": SUBJECT_ACCESS_REVIEWS.kind, "spec": spec})
        except ApiError as exc:
            raise ReviewUnavailable(f"SubjectAccessReview: {exc.status} {exc.reason}") from None
        return bool((review.get("status") or {}).get("allowed"))


class Delegated:
    """The API server's answers (`reviews`), each cached `ttl` seconds."""

    def __init__(self, reviews: Reviews, ttl: float = CACHE_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reviews = reviews
        self.tokens: _Cache[str, Caller | None] = _Cache(ttl, clock)
        self.decisions: _Cache[tuple[Caller, Need, str], bool] = _Cache(ttl, clock)

    def authenticate(self, token: str) -> Caller | None:
        hit, caller = self.tokens.get(token)
        if hit:
            return caller
        found = self.reviews.token_review(token)
        self.tokens.put(token, found)
        return found

    def allowed(self, caller: Caller, need: Need, verb: str = "get") -> bool:
        key = (caller, need, verb)
        hit, decision = self.decisions.get(key)
        if hit:
            return bool(decision)
        decision = self.reviews.access_review(caller, need, verb)
        self.decisions.put(key, decision)
        return decision

    def may_list(self, caller: Caller, namespace: str) -> bool:
        """`list pods` in `namespace`: which gangs `/v1/groups` shows the caller."""
        return self.allowed(caller, Need(Scope.NAMESPACE, namespace=namespace), "list")
