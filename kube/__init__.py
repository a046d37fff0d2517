"""The one choke point between Phalanx and the Kubernetes API server: raw JSON in and out,
one retry policy, the error types, every resource path, and list+watch.

Used by the scheduler, the local control plane and the benchmarks alike; imports nothing
of theirs."""

from kube.client import NO_RETRY, RETRYABLE_STATUS, KubeClient, Response, RetryPolicy, transient
from kube.errors import ApiError, ApiUnavailable
from kube.resources import Resource, api_path
from kube.watch import Watcher

__all__ = ["NO_RETRY", "RETRYABLE_STATUS", "ApiError", "ApiUnavailable", "KubeClient",
           "Resource", "Response", "RetryPolicy", "Watcher", "api_path", "transient"]
