"""Finds (building once if needed) the control-plane binaries via hack/build-controlplane.sh."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "hack" / "build-controlplane.sh"
BINARIES = (
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok",
    "kwokctl",
)


class BinariesUnavailable(RuntimeError):
    """The control plane cannot be built or found; the message says what to install or set."""


def kubernetes_version() -> str:
    for line in (REPO / "hack" / "k8s" / "go.mod").read_text().splitlines():
        if line.startswith("require k8s.io/kubernetes "):
            return line.split()[2]
    raise BinariesUnavailable("hack/k8s/go.mod does not require k8s.io/kubernetes")


def ensure_binaries() -> Path:
    """The folder holding every binary. Builds what is missing (minutes the first time,
    instant afterwards); raises BinariesUnavailable with the script's own message."""
    if not BUILD_SCRIPT.exists():
        raise BinariesUnavailable(f"{BUILD_SCRIPT} not found: localcluster runs from a checkout")
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, env=os.environ.copy(),
    )
    if done.returncode != 0:
        raise BinariesUnavailable(
            f"{BUILD_SCRIPT.name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
    bin_dir = Path(done.stdout.strip().splitlines()[-1])
    missing = [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        raise BinariesUnavailable(f"{bin_dir} lacks {', '.join(missing)}")
    return bin_dir
