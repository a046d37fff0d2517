"""`kubectl phalanx` without a cluster: the proxy path it asks for and its input errors
(tests/integration/test_secure.py runs it through a real API server)."""

from scheduler.kubectl_plugin import main, parser, proxy_path


def test_proxy_path_names_the_services_https_port():
    # The name is `https:SERVICE:PORT`, percent-encoded as every path segment is.
    assert proxy_path("phalanx-system", "phalanx-scheduler", "https", "/v1/groups") == (
        "/api/v1/namespaces/phalanx-system/services/https%3Aphalanx-scheduler%3Ahttps/proxy"
        "/v1/groups")


def test_defaults_point_at_the_shipped_service():
    args = parser().parse_args(["groups"])
    assert (args.scheduler_namespace, args.service, args.port) == (
        "phalanx-system", "phalanx-scheduler", "https")


def test_bad_kubeconfig_and_bad_names_exit_1(tmp_path, capsys):
    assert main(["--kubeconfig", str(tmp_path / "missing"), "groups"]) == 1
    assert "cannot load the kubeconfig" in capsys.readouterr().err
    config = tmp_path / "config"
    config.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: k, "
                      "cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: "
                      "{token: t}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n")
    assert main(["--kubeconfig", str(config), "explain", "Not/A Name"]) == 1
    assert "NAMESPACE/NAME" in capsys.readouterr().err
