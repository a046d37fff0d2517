"""The scheduler's configuration: one YAML file, validated at start-up.

Every field has a default; a bad file or value stops start-up with a ConfigError naming
the field, what was expected and what was found. Unknown fields are errors too (a typo
must not silently fall back to a default).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scheduler.errors import ConfigError
from solver.request import Algorithm
from topology.presets import PRESETS, Preset, resolve_preset

DEFAULT_ACCELERATORS = ("nvidia.com/gpu", "aws.amazon.com/neuron", "aws.amazon.com/neuroncore",
                        "vpc.amazonaws.com/efa", "google.com/tpu")


@dataclass(frozen=True)
class LeaderElection:
    enabled: bool = False
    namespace: str = "phalanx-system"
    lease_name: str = "phalanx-scheduler"
    # Shorter than kube-scheduler's 15/10/2: a standby takes over a killed leader within
    # lease + 2 retries (about 13 s), and a training job's replacement pods wait no longer.
    lease_duration_s: float = 10.0
    renew_deadline_s: float = 7.0
    retry_period_s: float = 1.5


@dataclass(frozen=True)
class Config:
    scheduler_name: str = "phalanx"
    preset: Preset = field(default_factory=lambda: PRESETS["aws"])
    accelerators: tuple[str, ...] = DEFAULT_ACCELERATORS
    """Pods requesting any of these go through gang placement; others the per-pod path."""
    solver_time_limit_s: float = 1.0
    algorithm: Algorithm = "cpsat"
    bind_concurrency: int = 128
    http_address: str = "127.0.0.1:10270"
    """Plain HTTP, no authentication: loopback only (development, a sidecar)."""
    secure_address: str = ""
    """HTTPS with delegated authentication and authorisation (scheduler/api/auth); off
    when empty."""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    """The serving pair; empty: a self-signed pair generated at start-up."""
    leader_election: LeaderElection = field(default_factory=LeaderElection)
    unschedulable_retry_s: float = 30.0
    """Upper bound on how long an unschedulable gang waits when nothing changes."""


_FIELDS = {
    "schedulerName", "topology", "accelerators", "solver", "binder", "http", "leaderElection",
    "unschedulableRetrySeconds",
}


def _mapping(value: Any, name: str, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(name, "a mapping", value)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}", f"one of {sorted(allowed)}", unknown[0])
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(name, f"a number in [{low}, {high}]", value)
    return float(value)


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(name, f"an integer in [{low}, {high}]", value)
    return value


def _name(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 253:
        raise ConfigError(name, "a non-empty string", value)
    return value


def host_port(value: Any, name: str = "http.address") -> str:
    text = _name(value, name)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(name, "HOST:PORT, e.g. 127.0.0.1:10270", value)
    return text


def loopback_address(value: Any, name: str = "http.address") -> str:
    """The plain-HTTP address: it serves every gang's placement to whoever connects, so
    it is refused anywhere but loopback (use http.secureAddress / --secure-address)."""
    text = host_port(value, name)
    host = text.rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(name, "a loopback HOST:PORT (127.0.0.1, ::1 or localhost); the "
                                "explain API is served to other hosts only over HTTPS with "
                                "authentication: http.secureAddress or --secure-address",
                          value)
    return text


def _file(value: Any, name: str) -> str:
    if value in (None, ""):
        return ""
    return _name(value, name)


def parse_config(raw: Any) -> Config:
    top = _mapping(raw, "config", _FIELDS)
    defaults = Config()
    topology = _mapping(top.get("topology"), "topology", {"preset", "levels"})
    if "preset" in topology and "levels" in topology:
        raise ConfigError("topology", "either preset or levels, not both", topology)
    preset = defaults.preset
    if "levels" in topology:
        levels = topology["levels"]
        if not isinstance(levels, list):
            raise ConfigError("topology.levels", "a list of node label keys", levels)
        try:
            preset = resolve_preset(levels)
        except ValueError as exc:
            raise ConfigError("topology.levels", "distinct non-empty label keys", levels) from exc
    elif "preset" in topology:
        if topology["preset"] not in PRESETS:
            raise ConfigError("topology.preset", f"one of {sorted(PRESETS)}", topology["preset"])
        preset = PRESETS[topology["preset"]]
    accelerators = top.get("accelerators", list(defaults.accelerators))
    if not isinstance(accelerators, list) or not all(
        isinstance(a, str) and a for a in accelerators
    ):
        raise ConfigError("accelerators", "a list of extended resource names", accelerators)
    solver = _mapping(top.get("solver"), "solver", {"timeLimitSeconds", "algorithm"})
    algorithm: Algorithm
    chosen = solver.get("algorithm", defaults.algorithm)
    if chosen == "cpsat":
        algorithm = "cpsat"
    elif chosen == "greedy":
        algorithm = "greedy"
    else:
        raise ConfigError("solver.algorithm", "cpsat or greedy", chosen)
    binder = _mapping(top.get("binder"), "binder", {"concurrency"})
    http = _mapping(top.get("http"), "http",
                    {"address", "secureAddress", "tlsCertFile", "tlsPrivateKeyFile"})
    cert = _file(http.get("tlsCertFile"), "http.tlsCertFile")
    key = _file(http.get("tlsPrivateKeyFile"), "http.tlsPrivateKeyFile")
    if bool(cert) != bool(key):
        raise ConfigError("http.tlsPrivateKeyFile" if cert else "http.tlsCertFile",
                          "given together with the other file of the pair", key or cert)
    le = _mapping(top.get("leaderElection"), "leaderElection",
                  {"enabled", "namespace", "leaseName", "leaseDurationSeconds",
                   "renewDeadlineSeconds", "retryPeriodSeconds"})
    defaults_le = LeaderElection()
    enabled = le.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError("leaderElection.enabled", "true or false", enabled)
    election = LeaderElection(
        enabled=enabled,
        namespace=_name(le.get("namespace", "phalanx-system"), "leaderElection.namespace"),
        lease_name=_name(le.get("leaseName", "phalanx-scheduler"), "leaderElection.leaseName"),
        lease_duration_s=_number(le.get("leaseDurationSeconds", defaults_le.lease_duration_s),
                                 "leaderElection.leaseDurationSeconds", 1, 600),
        renew_deadline_s=_number(le.get("renewDeadlineSeconds", defaults_le.renew_deadline_s),
                                 "leaderElection.renewDeadlineSeconds", 1, 600),
        retry_period_s=_number(le.get("retryPeriodSeconds", defaults_le.retry_period_s),
                               "leaderElection.retryPeriodSeconds", 0.1, 60),
    )
    if election.renew_deadline_s >= election.lease_duration_s:
        raise ConfigError("leaderElection.renewDeadlineSeconds",
                          "less than leaseDurationSeconds", election.renew_deadline_s)
    if election.retry_period_s >= election.renew_deadline_s:
        raise ConfigError("leaderElection.retryPeriodSeconds",
                          "less than renewDeadlineSeconds", election.retry_period_s)
    return Config(
        scheduler_name=_name(top.get("schedulerName", defaults.scheduler_name), "schedulerName"),
        preset=preset,
        accelerators=tuple(accelerators),
        solver_time_limit_s=_number(solver.get("timeLimitSeconds", 1.0),
                                    "solver.timeLimitSeconds", 0.01, 60),
        algorithm=algorithm,
        bind_concurrency=_integer(binder.get("concurrency", 128), "binder.concurrency", 1, 1024),
        http_address=loopback_address(http.get("address", defaults.http_address)),
        secure_address=host_port(http["secureAddress"], "http.secureAddress")
        if http.get("secureAddress") else "",
        tls_cert_file=cert,
        tls_key_file=key,
        leader_election=election,
        unschedulable_retry_s=_number(top.get("unschedulableRetrySeconds", 30),
                                      "unschedulableRetrySeconds", 0.1, 3600),
    )


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError("--config", "a readable YAML file", f"{path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("--config", "valid YAML", f"{path}: {exc}") from None
    return parse_config(raw)
