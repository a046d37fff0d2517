"""Real workload controllers next to the local control plane: JobSet, LeaderWorkerSet and
the Kubeflow training-operator, built from their Go modules (hack/build-controllers.sh)
and run as local processes against the cluster.

Each is installed as its own manifests describe it, read from its module: its CRDs, and
its webhook configurations with the module's kustomize patches applied (their object
selectors: JobSet's pod webhook sees only JobSet pods). What a local process changes:
- webhooks are reached at `https://127.0.0.1:PORT/<path>` instead of an in-cluster
  Service, with a CA generated for the cluster in `caBundle` and a serving certificate
  for 127.0.0.1 given to the controller (its own certificate rotation, which issues
  certificates for the Service's DNS name, is turned off in its configuration);
- no leader election, metrics off, health probes on a local port (how `start` knows the
  controller is ready).
The training-operator's certificate rotation cannot be turned off: it issues a certificate
for `training-operator.kubeflow.svc` and writes its CA into its webhook configuration
itself. Its webhooks keep that Service reference; the Service has no selector and an
Endpoints object at this machine's own address (the apiserver runs with
`--enable-aggregator-routing`, so it dials a Service's endpoints, not its cluster IP,
and checks the certificate against the Service's name as in a real cluster).
"""

from __future__ import annotations

import base64
import datetime
import fcntl
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from kube import ApiError, KubeClient
from kube.resources import (
    CRDS,
    ENDPOINTS,
    MUTATING_WEBHOOKS,
    NAMESPACES,
    SECRETS,
    SERVICES,
    VALIDATING_WEBHOOKS,
)
from localcluster.ports import free_port

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "hack" / "build-controllers.sh"
WEBHOOK_KINDS = {r.kind: r for r in (MUTATING_WEBHOOKS, VALIDATING_WEBHOOKS)}


class ControllerError(RuntimeError):
    """A controller could not be built, installed or started; says which and why."""


@dataclass(frozen=True)
class ControllerSpec:
    name: str
    config_api: str | None
    """The apiVersion of its Configuration file (None: configured by flags only; its own
    certificate rotation then serves the webhooks through `service`)."""
    namespace: str = ""
    """The namespace it expects to exist (its Service and certificate Secret live there)."""
    secret: str = ""
    """The Secret its certificate rotation fills."""
    cert_dir: str = ""
    """Where it reads that Secret's files, a path fixed in its code (kubelet's part,
    mounting the Secret there, is played here: `_cert_mount`)."""
    service: str = ""
    """The Service its certificate is issued for."""
    webhook_name: str = ""
    """The name its certificate rotation expects its webhook configuration to have."""


SPECS = {
    "jobset": ControllerSpec("jobset", "config.jobset.x-k8s.io/v1alpha1"),
    "lws": ControllerSpec("lws", "config.lws.x-k8s.io/v1alpha1"),
    "training-operator": ControllerSpec(
        "training-operator", None, "kubeflow", "training-operator-webhook-cert",
        "/tmp/k8s-webhook-server/serving-certs", "training-operator",
        "validator.training-operator.kubeflow.org"),
}
SERVICE_PORT = 443
CERT_FILES = frozenset({"tls.crt", "tls.key", "ca.crt"})
"""What a filled certificate Secret holds (cert-controller's rotation writes all three)."""


def ensure_controllers(names: Iterable[str]) -> Path:
    """The folder holding the built controllers (building what is missing)."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT), *names], capture_output=True,
                          text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise ControllerError(f"{BUILD_SCRIPT.name} {' '.join(names)} failed (exit "
                              f"{done.returncode}):\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


# -- certificates ---------------------------------------------------------------------
def make_certificates(folder: Path) -> bytes:
    """A CA and a serving certificate for 127.0.0.1 signed by it, as tls.crt/tls.key
    (and ca.crt) in `folder`; returns the CA's PEM for webhook caBundles."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phalanx-localcluster-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (folder / "ca.crt").write_bytes(ca_pem)
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return ca_pem


# -- manifests ------------------------------------------------------------------------
def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def apply_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 `replace`, `add` and `remove` on plain paths (what the controllers'
    kustomize patches use)."""
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "replace":
                parent[index] = op["value"]
            elif kind == "add":
                parent.insert(index, op["value"])
            elif kind == "remove":
                del parent[index]
            else:
                raise ControllerError(f"patch op {kind} not supported")
        elif kind in ("replace", "add"):
            parent[last] = op["value"]
        elif kind == "remove":
            del parent[last]
        else:
            raise ControllerError(f"patch op {kind} not supported")
    return doc


def webhook_configurations(folder: Path, spec: ControllerSpec, port: int,
                           ca_pem: bytes | None) -> list[dict[str, Any]]:
    """The controller's webhook configurations from its kustomization: manifests with
    its patches applied, renamed `<controller>-<name>` (kubebuilder's default names
    clash between controllers) or the name its certificate rotation expects, each
    webhook pointed at https://127.0.0.1:PORT<path> with `ca_pem`, or (no `ca_pem`) at
    the controller's Service, whose CA the controller injects itself."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = [doc for resource in kustomization.get("resources") or ()
            for doc in load_documents(folder / resource) if doc.get("kind") in WEBHOOK_KINDS]
    for patch in kustomization.get("patches") or ():
        target = patch.get("target") or {}
        ops = yaml.safe_load((folder / patch["path"]).read_text())
        for doc in docs:
            if (doc["kind"] == target.get("kind")
                    and doc["metadata"]["name"] == target.get("name")):
                apply_json_patch(doc, ops)
    for doc in docs:
        name = spec.webhook_name or f"{spec.name}-{doc['metadata']['name']}"
        doc["metadata"] = {"name": name}
        for hook in doc.get("webhooks") or ():
            path = (hook.get("clientConfig") or {}).get("service", {}).get("path", "/")
            if ca_pem is not None:
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}",
                                        "caBundle": base64.b64encode(ca_pem).decode()}
            else:
                hook["clientConfig"] = {"service": {
                    "name": spec.service, "namespace": spec.namespace, "path": path,
                    "port": SERVICE_PORT}}
    return docs


def host_address() -> str:
    """This machine's own IPv4 address (what a Service's endpoints may name: the API
    server refuses loopback addresses there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))  # no packet is sent
            address = str(sock.getsockname()[0])
        except OSError as exc:
            raise ControllerError(f"no non-loopback IPv4 address to serve webhooks on: "
                                  f"{exc}") from exc
    if ipaddress.ip_address(address).is_loopback:
        raise ControllerError("no non-loopback IPv4 address to serve webhooks on")
    return address


def install_crds(kube: KubeClient, folder: Path, timeout: float = 60) -> list[str]:
    names = []
    for path in sorted(folder.glob("*.yaml")):
        for doc in load_documents(path):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            name = doc["metadata"]["name"]
            try:
                kube.create(CRDS.path(), doc)
            except ApiError as exc:
                if exc.status != 409:
                    raise
            names.append(name)
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            conditions = (kube.get(CRDS.path(name=name)).get("status") or {}).get(
                "conditions") or ()
            if any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in conditions):
                break
            if time.monotonic() > deadline:
                raise ControllerError(f"CRD {name} not Established within {timeout:.0f}s")
            time.sleep(0.2)
    return names


# -- processes ------------------------------------------------------------------------
@dataclass
class RunningController:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    health_port: int
    cert_files: Path | None = None
    """Where its certificate Secret's files are kept (what its cert_dir shows it)."""
    cert_lock: IO[bytes] | None = None
    """Held while it runs when its cert_dir is the machine's own (no mount namespace)."""

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_controllers(kube: KubeClient, kubeconfig: Path, state: Path,
                      names: Iterable[str], timeout: float = 120) -> list[RunningController]:
    """Builds (if needed), installs and starts each controller; returns once every one
    reports ready and its webhooks are installed. `state` is a folder of the cluster's
    (the processes carry it in their command line, so the cluster's teardown finds them)."""
    wanted = list(names)
    unknown = [n for n in wanted if n not in SPECS]
    if unknown:
        raise ControllerError(f"unknown controller(s) {unknown}: choose from {sorted(SPECS)}")
    built = ensure_controllers(wanted)
    running = []
    for name in wanted:
        running.append(_start(kube, kubeconfig, state / "controllers" / name, built / name,
                              SPECS[name], timeout))
    return running


def _start(kube: KubeClient, kubeconfig: Path, folder: Path, built: Path,
           spec: ControllerSpec, timeout: float) -> RunningController:
    folder.mkdir(parents=True, exist_ok=True)
    install_crds(kube, built / "crds")
    webhook_port, health_port = free_port(), free_port()
    args = [str(built / "manager"), f"--kubeconfig={kubeconfig}",
            f"--health-probe-bind-address=127.0.0.1:{health_port}",
            "--metrics-bind-address=0", "--leader-elect=false"]
    ca_pem: bytes | None = None
    if spec.config_api is not None:
        ca_pem = make_certificates(folder / "certs")
        config = {"apiVersion": spec.config_api, "kind": "Configuration",
                  "leaderElection": {"leaderElect": False},
                  "internalCertManagement": {"enable": False},
                  "webhook": {"port": webhook_port, "host": "127.0.0.1",
                              "certDir": str(folder / "certs")},
                  "metrics": {"bindAddress": "0"},
                  "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"}}
        (folder / "config.yaml").write_text(json.dumps(config, indent=2))
        args.append(f"--config={folder / 'config.yaml'}")
    else:
        args.append(f"--webhook-server-port={webhook_port}")
        _serve_through_service(kube, spec, webhook_port)
    webhooks = webhook_configurations(built / "webhook", spec, webhook_port, ca_pem)
    if ca_pem is None:
        _replace_webhooks(kube, webhooks)  # its certificate rotation fills them in
    log = folder / "controller.log"
    cert_files, lock = _cert_mount(spec, folder, args) if spec.cert_dir else (None, None)
    with open(log, "ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=folder)
    running = RunningController(spec.name, process, log, health_port, cert_files, lock)
    if cert_files is not None:
        _mount_secret(kube, spec, running, timeout)
    _wait_ready(running, timeout)
    if ca_pem is not None:
        _replace_webhooks(kube, webhooks)  # only once it serves: they fail closed
    return running


def _serve_through_service(kube: KubeClient, spec: ControllerSpec, port: int) -> None:
    """The controller's namespace, its empty certificate Secret, and its Service with
    endpoints at this machine's address and the webhook port."""
    namespace = spec.namespace
    _create(kube, NAMESPACES.path(), {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": namespace}})
    _create(kube, SECRETS.path(namespace), {"apiVersion": "v1", "kind": "Secret",
                                            "metadata": {"name": spec.secret}})
    for resource in (ENDPOINTS, SERVICES):
        try:
            kube.delete(resource.path(namespace, spec.service))
        except ApiError as exc:
            if exc.status != 404:
                raise
    kube.create(SERVICES.path(namespace), {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": spec.service},
        "spec": {"ports": [{"name": "webhook", "port": SERVICE_PORT, "targetPort": port}]}})
    kube.create(ENDPOINTS.path(namespace), {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": spec.service},
        "subsets": [{"addresses": [{"ip": host_address()}],
                     "ports": [{"name": "webhook", "port": port}]}]})


def _private_mounts() -> bool:
    """Whether a process can be given its own mount namespace here (root, or
    unprivileged user namespaces)."""
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _cert_mount(spec: ControllerSpec, folder: Path, args: list[str]
                ) -> tuple[Path, IO[bytes] | None]:
    """Where the controller's certificate files go, and `args` changed to run it so that
    its fixed cert_dir shows them. A controller whose cert_dir is a constant of its code
    (the training-operator's `/tmp/k8s-webhook-server/serving-certs`) gets a private
    mount namespace with its own folder bind-mounted there, as a kubelet mounts a Secret
    volume per pod: two local clusters (the tests' and a soak's) then never serve each
    other's certificates. Where no mount namespace can be had, the machine's own folder
    is used under a lock, and a second user is refused with the holder's name."""
    own = folder / "serving-certs"
    own.mkdir(parents=True, exist_ok=True)
    if _private_mounts():
        script = 'mkdir -p "$1" && mount --bind "$2" "$1" && shift 2 && exec "$@"'
        args[:0] = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                    "sh", spec.cert_dir, str(own)]
        return own, None
    shared = Path(spec.cert_dir)
    shared.mkdir(parents=True, exist_ok=True)
    lock = open(shared.parent / ".localcluster.lock", "a+b")  # noqa: SIM115 - held
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().decode(errors="replace").strip() or "another process"
        lock.close()
        raise ControllerError(
            f"{spec.name} reads its certificates from {spec.cert_dir}, a path fixed in "
            f"its code, and no private mount namespace can be had here (`unshare "
            f"--mount` failed): {holder} runs one already; run one at a time") from None
    lock.truncate(0)
    lock.write(f"pid {os.getpid()} for {folder}".encode())
    lock.flush()
    return shared, lock


def _mount_secret(kube: KubeClient, spec: ControllerSpec, running: RunningController,
                  timeout: float) -> None:
    """Once the controller's certificate rotation has filled its Secret, its files go
    where the controller reads them, as a kubelet mounts a Secret volume."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise ControllerError(f"{spec.name} exited with {running.process.returncode}:\n"
                                  f"{running.tail()}")
        data = kube.get(SECRETS.path(spec.namespace, spec.secret)).get("data") or {}
        if set(data) >= CERT_FILES:
            assert running.cert_files is not None
            write_secret_files(running.cert_files, data)
            threading.Thread(target=_keep_mounted, args=(kube, spec, running),
                             name=f"{spec.name}-secret-volume", daemon=True).start()
            return
        time.sleep(0.25)
    raise ControllerError(f"{spec.name}: its certificate Secret {spec.namespace}/"
                          f"{spec.secret} was not filled within {timeout:.0f}s:\n"
                          f"{running.tail()}")


SECRET_SYNC_S = 10.0
"""How often a mounted Secret's files follow the Secret (a kubelet: its sync period plus
its cache's TTL, about a minute by default; shorter here so a test sees it)."""


def _keep_mounted(kube: KubeClient, spec: ControllerSpec, running: RunningController) -> None:
    """Keeps the files of the controller's certificate Secret current while it runs, as
    a kubelet updates a Secret volume. The training-operator's rotation issues a new CA
    and certificate whenever it finds the Secret's invalid (after an apiserver restart
    the 60-minute soak saw it do so) and puts the new CA in its webhooks' caBundle at
    once; served from files copied once, its webhooks then failed every TLS handshake
    (`tls: bad certificate`) until the end of the run."""
    folder = running.cert_files
    assert folder is not None
    while running.process.poll() is None:
        time.sleep(SECRET_SYNC_S)
        try:
            data = kube.get(SECRETS.path(spec.namespace, spec.secret)).get("data") or {}
        except Exception:  # the apiserver is restarting: try at the next sync
            continue
        if set(data) >= CERT_FILES:
            write_secret_files(folder, data)


DATA_LINK = "..data"


def write_secret_files(folder: Path, data: dict[str, str]) -> bool:
    """Each key's decoded value as a file, all of them swapped at once as a kubelet's
    atomic writer does: written into a fresh `..<version>` folder, then the `..data`
    symlink renamed onto it; each file is a symlink through `..data`. A reader never pairs
    a new certificate with the old key. Returns whether anything changed."""
    contents = {name: base64.b64decode(value) for name, value in data.items()}
    folder.mkdir(parents=True, exist_ok=True)
    current = folder / DATA_LINK
    if current.is_dir() and all((current / name).is_file()
                                and (current / name).read_bytes() == content
                                for name, content in contents.items()):
        return False
    version = Path(tempfile.mkdtemp(prefix="..version-", dir=folder))
    for name, content in contents.items():
        (version / name).write_bytes(content)
    staged = folder / f"{DATA_LINK}_tmp"
    staged.unlink(missing_ok=True)
    staged.symlink_to(version.name)
    staged.replace(current)
    for name in contents:
        link = folder / name
        if link.is_symlink() and os.readlink(link) == f"{DATA_LINK}/{name}":
            continue
        staged = folder / f".{name}.link"
        staged.unlink(missing_ok=True)
        staged.symlink_to(f"{DATA_LINK}/{name}")
        staged.replace(link)  # a plain file from before, or a missing one
    for old in folder.glob("..version-*"):
        if old != version:
            shutil.rmtree(old, ignore_errors=True)
    return True


def _replace_webhooks(kube: KubeClient, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        resource = WEBHOOK_KINDS[doc["kind"]]
        name = doc["metadata"]["name"]
        try:
            kube.delete(resource.path(name=name))
        except ApiError as exc:
            if exc.status != 404:
                raise
        kube.create(resource.path(), doc)


def _create(kube: KubeClient, path: str, obj: dict[str, Any]) -> None:
    try:
        kube.create(path, obj)
    except ApiError as exc:
        if exc.status != 409:
            raise


def _wait_ready(running: RunningController, timeout: float) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{running.health_port}/readyz"
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise ControllerError(f"{running.name} exited with {running.process.returncode}:\n"
                                  f"{running.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    running.process.kill()
    raise ControllerError(f"{running.name} not ready within {timeout:.0f}s:\n{running.tail()}")


def stop_controllers(running: Iterable[RunningController]) -> None:
    for controller in running:
        if controller.process.poll() is None:
            controller.process.terminate()
    for controller in running:
        try:
            controller.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            controller.process.kill()
        if controller.cert_lock is not None:
            controller.cert_lock.close()
