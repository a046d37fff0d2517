"""The secure explain API against the real API server: TLS with a given pair (reloaded
when it changes), TokenReview authentication and SubjectAccessReview authorisation, for
ServiceAccounts holding TokenRequest tokens."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kube import ApiError, api_path
from localcluster.binaries import ensure_binaries
from localcluster.bulk import ensure_namespace, wait_until
from localcluster.controllers import host_address
from localcluster.ports import free_port
from tests.integration.helpers import (
    POOL,
    pool_nodes,
    stop_process,
    token_kubeconfig,
)

pytestmark = pytest.mark.integration
SCHEDULER = "phalanx-secure"
TEAMS = ("team-a", "team-b")


def _pair(folder: Path, serial: int, host: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phalanx-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .sign(key, hashes.SHA256()))
    crt, pem = folder / "tls.crt", folder / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def _served_serial(host: str, port: int) -> int:
    pem = ssl.get_server_certificate((host, port))
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def _apply(kube, path: str, obj: dict) -> None:
    try:
        kube.create(path, obj)
    except ApiError as exc:
        if exc.status != 409:
            raise


def _token(kube, namespace: str, account: str) -> str:
    review = kube.create(api_path("", "v1", "serviceaccounts", namespace, account, "token"),
                         {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                          "spec": {"expirationSeconds": 3600}})
    return str(review["status"]["token"])


def _grants(kube) -> dict[str, str]:
    """reader: may get/list pods in team-a only; metrics: may get /metrics only; viewer:
    the reader's rights and get /v1/topology (the map page draws the map for it)."""
    rbac = "rbac.authorization.k8s.io"
    for team in TEAMS:
        ensure_namespace(kube, team)
    for account in ("reader", "metrics", "viewer"):
        _apply(kube, api_path("", "v1", "serviceaccounts", "team-a"),
               {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}})
    _apply(kube, api_path(rbac, "v1", "roles", "team-a"), {
        "apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})
    _apply(kube, api_path(rbac, "v1", "rolebindings", "team-a"), {
        "apiVersion": f"{rbac}/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "team-a"}
                     for account in ("reader", "viewer")]})
    for account, url in (("metrics", "/metrics"), ("viewer", "/v1/topology")):
        _apply(kube, api_path(rbac, "v1", "clusterroles"), {
            "apiVersion": f"{rbac}/v1", "kind": "ClusterRole",
            "metadata": {"name": f"phalanx-test-{account}"},
            "rules": [{"nonResourceURLs": [url], "verbs": ["get"]}]})
        _apply(kube, api_path(rbac, "v1", "clusterrolebindings"), {
            "apiVersion": f"{rbac}/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": f"phalanx-test-{account}"},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole",
                        "name": f"phalanx-test-{account}"},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "team-a"}]})
    return {account: _token(kube, "team-a", account)
            for account in ("reader", "metrics", "viewer")}


def _gang(kube, team: str, name: str = "train", replicas: int = 2) -> None:
    _apply(kube, api_path("apps", "v1", "statefulsets", team), {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": team},
        "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"schedulerName": SCHEDULER,
                                       "nodeSelector": {POOL: "pool-sec"},
                                       "containers": [{"name": "w", "image": "trainer",
                                                       "resources": {"limits": {
                                                           "nvidia.com/gpu": "8"}}}]}}}})


@pytest.fixture(scope="module")
def secure(kube, local_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("secure")
    # On this machine's own address, not loopback: the API server's service proxy (the
    # `kubectl phalanx` test) dials a Service's endpoints, which may not be loopback.
    host = host_address()
    cert, key = _pair(folder, serial=1001, host=host)
    pool_nodes(kube, "pool-sec", 8, seed=77, fanout=(1, 1, 8))
    tokens = _grants(kube)
    port = free_port()
    config = folder / "config.yaml"
    config.write_text(f"schedulerName: {SCHEDULER}\n")
    log = folder / "phalanx.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig",
             str(local_cluster.kubeconfig), "--config", str(config),
             "--http-address", f"127.0.0.1:{free_port()}",
             "--secure-address", f"{host}:{port}",
             "--tls-cert-file", str(cert), "--tls-private-key-file", str(key)],
            stdout=out, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"https://{host}:{port}",
                          verify=ssl.create_default_context(cafile=str(cert)), timeout=10)
    try:
        wait_until(lambda: _answers(client), 30, "the secure port answers /healthz")
        for team in TEAMS:
            _gang(kube, team)
        yield client, tokens, (host, port), (cert, key), folder
    finally:
        client.close()
        stop_process(process)
        print(log.read_text()[-4000:])


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_anonymous_and_bad_tokens_get_401_and_probes_stay_open(secure):
    client, _, _, _, _ = secure
    for path in ("/v1/groups", "/v1/groups/team-a/train", "/metrics", "/v1/topology",
                 "/openapi.json"):
        reply = client.get(path)
        assert reply.status_code == 401, path
        assert "bearer token" in reply.json()["detail"]
        assert reply.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/v1/groups", headers=_as("not-a-token")).status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)  # open: no 401


def test_a_team_reads_its_own_gangs_only(secure):
    client, tokens, _, _, _ = secure
    reader = _as(tokens["reader"])

    def both_known() -> bool:
        # The list filters by the caller's rights: check through an admin-free path,
        # the detail routes, which answer 403 (known or not) for team-b.
        return client.get("/v1/groups/team-a/train", headers=reader).status_code == 200
    wait_until(both_known, 60, "team-a's gang known to the secure scheduler")
    detail = client.get("/v1/groups/team-a/train", headers=reader).json()
    assert detail["namespace"] == "team-a" and detail["name"] == "train"
    forbidden = client.get("/v1/groups/team-b/train", headers=reader)
    assert forbidden.status_code == 403
    assert "team-b" in forbidden.json()["detail"] and "reader" in forbidden.json()["detail"]
    listed = client.get("/v1/groups", headers=reader).json()["groups"]
    assert {(g["namespace"], g["name"]) for g in listed} == {("team-a", "train")}
    # The metrics account may list no namespace's pods: it sees no gang at all.
    assert client.get("/v1/groups", headers=_as(tokens["metrics"])).json()["groups"] == []


def test_metrics_and_topology_need_the_non_resource_url(secure):
    client, tokens, _, _, _ = secure
    assert client.get("/metrics", headers=_as(tokens["reader"])).status_code == 403
    reply = client.get("/metrics", headers=_as(tokens["metrics"]))
    assert reply.status_code == 200 and "phalanx_" in reply.text
    assert client.get("/v1/topology", headers=_as(tokens["metrics"])).status_code == 403


def test_fuzzed_with_a_token_never_answers_5xx(secure):
    """The published schema's operations, fuzzed over HTTPS with a real token (the reader's:
    some answers are 403): whatever the path or query, no 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    _, tokens, (host, port), (cert, _), _ = secure
    auth = _as(tokens["reader"])
    published = httpx.get(f"https://{host}:{port}/openapi.json", headers=auth, timeout=10,
                          verify=ssl.create_default_context(cafile=str(cert)))
    assert published.status_code == 200
    operations = [found.ok() for found in
                  schemathesis.openapi.from_dict(published.json()).get_all_operations()]
    assert len(operations) >= 4
    statuses: set[int] = set()

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        operation = data.draw(st.sampled_from(operations))
        case = data.draw(operation.as_strategy())
        reply = case.call(base_url=f"https://{host}:{port}", headers=auth,
                          verify=str(cert))  # the pair the server holds now
        statuses.add(reply.status_code)
        assert reply.status_code < 500, (case.path, reply.text)

    fuzz()
    assert 403 in statuses and statuses & {200, 404, 422}


PROXY_NAMESPACE = "phalanx-proxy"


@pytest.fixture(scope="module")
def proxied(secure, kube):
    """A Service whose endpoint is the secure port, reachable through the API server's
    service proxy by team-a's reader and viewer."""
    _, _, (host, port), _, _ = secure
    rbac, namespace = "rbac.authorization.k8s.io", PROXY_NAMESPACE
    ensure_namespace(kube, namespace)
    _apply(kube, api_path("", "v1", "services", namespace), {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "phalanx-scheduler"},
        "spec": {"ports": [{"name": "https", "port": 10271, "targetPort": port}]}})
    # The API server's service proxy only dials endpoint addresses that are a Pod's IP
    # (it checks the targetRef): a pod that stands for the scheduler's, never scheduled
    # (so KWOK leaves it alone), with this machine's address as its IP, as a kubelet
    # would report it.
    _apply(kube, api_path("", "v1", "pods", namespace), {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "phalanx-scheduler-0"},
        "spec": {"schedulerName": "nobody", "containers": [{"name": "p", "image": "phalanx"}]}})
    kube.call("PATCH", api_path("", "v1", "pods", namespace, "phalanx-scheduler-0", "status"),
              body={"status": {"podIP": host, "podIPs": [{"ip": host}]}},
              content_type="application/merge-patch+json")
    _apply(kube, api_path("", "v1", "endpoints", namespace), {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "phalanx-scheduler"},
        "subsets": [{"addresses": [{"ip": host, "targetRef": {
            "kind": "Pod", "namespace": namespace, "name": "phalanx-scheduler-0"}}],
            "ports": [{"name": "https", "port": port}]}]})
    _apply(kube, api_path(rbac, "v1", "roles", namespace), {
        "apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": {"name": "explain"},
        "rules": [{"apiGroups": [""], "resources": ["services/proxy"],
                   "resourceNames": ["https:phalanx-scheduler:https"], "verbs": ["get"]}]})
    _apply(kube, api_path(rbac, "v1", "rolebindings", namespace), {
        "apiVersion": f"{rbac}/v1", "kind": "RoleBinding", "metadata": {"name": "explain"},
        "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "explain"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "team-a"}
                     for account in ("reader", "viewer")]})


def _plugin_env(local_cluster, kubeconfig: Path, home: Path) -> tuple[str, dict[str, str]]:
    """The real kubectl, and an environment where it finds `kubectl-phalanx` on PATH."""
    kubectl = (local_cluster.bin_dir or ensure_binaries()) / "kubectl"
    return str(kubectl), {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                          "HOME": str(home), "KUBECONFIG": str(kubeconfig)}


def test_kubectl_phalanx_reaches_the_scheduler_through_the_api_server(
        secure, proxied, kube, local_cluster, tmp_path):
    """`kubectl phalanx` (the real kubectl finding the plugin on PATH) with a team's own
    token kubeconfig, through the API server's service proxy to a Service whose endpoint
    is the secure port: the scheduler sees the team's identity."""
    namespace = PROXY_NAMESPACE
    config = token_kubeconfig(kube, local_cluster.kubeconfig, "team-a", "reader",
                              tmp_path / "reader.kubeconfig")
    kubectl, env = _plugin_env(local_cluster, config, tmp_path)

    def plugin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl, "phalanx", "--scheduler-namespace", namespace,
                               *args], env=env, capture_output=True, text=True, timeout=60)

    explained = plugin("explain", "team-a/train")
    assert explained.returncode == 0, explained.stderr
    assert explained.stdout.startswith("team-a/train: Bound (placed)")
    listed = plugin("groups")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0][:2] == ["NAMESPACE", "NAME"] and [r[:2] for r in rows[1:]] == [
        ["team-a", "train"]]
    refused = plugin("explain", "team-b/train")
    assert refused.returncode == 1 and "403" in refused.stderr and "reader" in refused.stderr
    # The reader may not read /v1/topology: the scheduler says so, through the proxy.
    assert "403" in plugin("topology").stderr


CHROMIUM = "/usr/bin/chromium"
# As root, and on a machine without outside network: no sandbox, no background fetches.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def test_the_map_page_in_chromium_shows_a_teams_gangs_and_why_one_waits(
        secure, proxied, kube, local_cluster, tmp_path):
    """`kubectl phalanx ui` as team-a's viewer, the page in headless Chromium: team-a's
    gangs only, the pending one with the reason and remedies the explain route gives, the
    placed one's footprint highlighted on a click and kept across the script's refresh.
    PHALANX_UI_SCREENSHOT=path keeps the screenshot (the README's)."""
    import os
    import shutil

    from playwright.sync_api import sync_playwright

    client, tokens, _, _, _ = secure
    viewer = _as(tokens["viewer"])
    _gang(kube, "team-a", "huge", replicas=20)  # 20 nodes' worth on the 8-node pool
    wait_until(lambda: client.get("/v1/groups/team-a/huge/explain", headers=viewer)
               .json().get("verdict") == "pending", 60, "team-a/huge pending")
    why = client.get("/v1/groups/team-a/huge/explain", headers=viewer).json()
    placed = client.get("/v1/groups/team-a/train", headers=viewer).json()
    config = token_kubeconfig(kube, local_cluster.kubeconfig, "team-a", "viewer",
                              tmp_path / "viewer.kubeconfig")
    kubectl, env = _plugin_env(local_cluster, config, tmp_path)
    proxy = subprocess.Popen([kubectl, "phalanx", "--scheduler-namespace", PROXY_NAMESPACE,
                              "ui", "--address", "127.0.0.1:0"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout is not None
        announced = proxy.stdout.readline()
        url = announced.split(" at ", 1)[1].split()[0]
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
            rows = {row.get_attribute("data-gang"): row
                    for row in page.locator("tr.gang").all()}
            assert set(rows) == {"team-a/StatefulSet/train", "team-a/StatefulSet/huge"}
            assert "Bound" in rows["team-a/StatefulSet/train"].inner_text()
            pending = page.locator('.pending[data-gang="team-a/StatefulSet/huge"]')
            assert pending.locator(".reason").inner_text() == why["summary"]
            assert why["remedies"] and pending.locator(".remedies li").all_inner_texts() \
                == why["remedies"]
            leaves = (rows["team-a/StatefulSet/train"].get_attribute("data-leaves")
                      or "").split()
            # One leaf per bottom domain the placement used (each pod's `domain`).
            assert len(leaves) == len({p["domain"] for p in placed["pods"]}) >= 1
            rows["team-a/StatefulSet/train"].click()
            assert page.locator(".leaf.hl").count() == len(leaves)
            page.wait_for_function("Number(document.body.dataset.refreshes) >= 1",
                                   timeout=30_000)
            assert page.locator(".leaf.hl").count() == len(leaves)  # kept across it
            shot = tmp_path / "ui.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert shot.stat().st_size > 10_000
        if os.environ.get("PHALANX_UI_SCREENSHOT"):
            shutil.copy(shot, os.environ["PHALANX_UI_SCREENSHOT"])
    finally:
        proxy.terminate()
        proxy.wait(10)


def test_a_rotated_pair_is_served_without_a_restart(secure):
    """Last in the module: afterwards the fixture's client no longer trusts the server."""
    _, _, (host, port), (cert, key), folder = secure
    assert _served_serial(host, port) == 1001
    staged = folder / "next"
    staged.mkdir(exist_ok=True)
    new_cert, new_key = _pair(staged, serial=2002, host=host)
    # As a projected Secret rotates: both files replaced by renames.
    new_key.replace(key)
    new_cert.replace(cert)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _served_serial(host, port) != 2002:
        time.sleep(0.5)
    assert _served_serial(host, port) == 2002
