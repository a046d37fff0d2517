"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does.

Every replica runs the elector; only the holder binds. The rules that keep two replicas
from ever binding at once:
- a candidate takes the Lease only when its record (holder, renewTime) has not changed for
  `leaseDurationSeconds` *as observed on the candidate's own clock* (no clock comparison
  between machines), and only through an update carrying the resourceVersion it read, so
  two candidates cannot both win;
- the holder renews every `retryPeriodSeconds`; `leading()` is true only while the last
  successful renewal is younger than `renewDeadlineSeconds`, which is shorter than the
  lease, so a holder that cannot renew stops binding before anyone else may take over.
On SIGTERM the holder releases the Lease (renewTime in the past) so a standby takes over
at its next retry instead of waiting out the lease.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kube import ApiError, KubeClient, RetryPolicy
from kube.resources import LEASES
from scheduler.config import LeaderElection

log = logging.getLogger("phalanx.leader")


def default_identity() -> str:
    """The pod's hostname (its name in a Deployment) plus a random suffix, so a restarted
    process never mistakes the previous incarnation's Lease for its own."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _micro_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: KubeClient, config: LeaderElection, identity: str,
                 on_change: Callable[[bool], None] = lambda leading: None) -> None:
        self.kube, self.config, self.identity = kube, config, identity
        self.on_change = on_change
        self.path = LEASES.path(config.namespace)
        self.stopped = threading.Event()
        self._renewed_at = -1e18
        """time.monotonic() of our last successful acquire or renew."""
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self._was_leading = False
        self.transitions = 0
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        # Each call must end well inside the renew deadline; retries are the loop's job.
        self._retry = RetryPolicy(attempts=1)
        self._timeout = max(0.5, min(config.renew_deadline_s / 2, 5.0))

    def leading(self) -> bool:
        return time.monotonic() - self._renewed_at < self.config.renew_deadline_s

    def start(self) -> LeaderElector:
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        self.stopped.set()
        # A round is at most a GET and a PUT, each bounded by the call timeout.
        self._thread.join(timeout=2 * self._timeout + 1)
        if release and self.leading():
            self._release()
        self._renewed_at = -1e18
        self._notify()

    # -- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            try:
                if self._try_acquire_or_renew():
                    self._renewed_at = started
            except Exception as exc:  # the loop must outlive any one failed call
                log.warning("lease %s/%s: %s", self.config.namespace, self.config.lease_name,
                            exc)
            self._notify()
            self.stopped.wait(self.config.retry_period_s)

    def _notify(self) -> None:
        leading = self.leading()
        if leading != self._was_leading:
            self._was_leading = leading
            log.info("lease %s/%s: %s (identity %s)", self.config.namespace,
                     self.config.lease_name,
                     "acquired: this instance binds" if leading else
                     "lost: this instance stops binding", self.identity)
            self.on_change(leading)

    def _spec(self, now: datetime, acquired: str | None, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.identity,
                "leaseDurationSeconds": math.ceil(self.config.lease_duration_s),
                "acquireTime": acquired or _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions}

    def _try_acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        name = self.config.lease_name
        try:
            lease = self.kube.call("GET", f"{self.path}/{name}", retry=self._retry,
                                   timeout=self._timeout)
        except ApiError as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": self.config.namespace},
                    "spec": self._spec(now, None, 0)}
            try:
                self.kube.call("POST", self.path, body=body, retry=self._retry,
                               timeout=self._timeout)
            except ApiError as conflict:
                if conflict.status == 409:
                    return False  # another candidate created it first
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime") or ""))
        mono = time.monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, mono
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration_s)
        if holder and holder != self.identity and mono - self._observed_at < duration:
            return False  # held by another, and renewed within its duration (our clock)
        transitions = int(spec.get("leaseTransitions") or 0)
        ours = holder == self.identity
        lease["spec"] = self._spec(now, spec.get("acquireTime") if ours else None,
                                   transitions if ours else transitions + 1)
        if self.stopped.is_set():
            return False  # shutting down: never (re)take a Lease that is being released
        try:
            self.kube.call("PUT", f"{self.path}/{name}", body=lease, retry=self._retry,
                           timeout=self._timeout)
        except ApiError as exc:
            if exc.status == 409:
                return False  # someone else wrote it since we read it
            raise
        if not ours:
            self.transitions += 1
        return True

    def _release(self) -> None:
        """Leaves the Lease to the next candidate at once (client-go's ReleaseOnCancel)."""
        name = self.config.lease_name
        try:
            lease = self.kube.call("GET", f"{self.path}/{name}", retry=self._retry,
                                   timeout=self._timeout)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            past = datetime.now(UTC) - timedelta(seconds=self.config.lease_duration_s + 1)
            spec.update(holderIdentity="", leaseDurationSeconds=1,
                        renewTime=_micro_time(past))
            self.kube.call("PUT", f"{self.path}/{name}", body=lease, retry=self._retry,
                           timeout=self._timeout)
            log.info("lease %s/%s released", self.config.namespace, name)
        except (ApiError, OSError) as exc:
            log.warning("lease %s/%s: release failed: %s", self.config.namespace, name, exc)
