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


def test_ui_serves_on_loopback_only(tmp_path, capsys):
    from scheduler.kubectl_ui import loopback

    assert loopback("127.0.0.1:0") == ("127.0.0.1", 0)
    assert loopback("localhost:8271") == ("127.0.0.1", 8271)
    assert loopback("[::1]:8271") == ("::1", 8271)
    for refused in ("0.0.0.0:8271", "10.0.0.5:8271", "example.com:80", "127.0.0.1:99999"):
        try:
            loopback(refused)
        except ValueError as exc:
            assert "--address" in str(exc) and refused in str(exc)
        else:
            raise AssertionError(f"{refused} was accepted")


def test_ui_forwards_the_page_routes_only_and_passes_refusals_on():
    """The loopback server with a forwarding double in place of the API server."""
    import threading
    from http.server import ThreadingHTTPServer

    import httpx

    from kube import ApiError, Response
    from scheduler.kubectl_ui import handler

    asked: list[tuple[str, dict[str, str] | None]] = []

    def forward(route: str, query: dict[str, str] | None) -> Response:
        asked.append((route, query))
        if query and query.get("namespace") == "secret":
            raise ApiError("GET", route, 403, "Forbidden", '{"detail": "forbidden"}')
        return Response(200, b"<html>map</html>", {"content-type": "text/html"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(forward))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        page = httpx.get(f"{base}/ui?namespace=ml")
        assert page.status_code == 200 and page.text == "<html>map</html>"
        assert httpx.get(f"{base}/").status_code == 200  # / is the page
        assert httpx.get(f"{base}/ui/content").status_code == 200
        assert httpx.get(f"{base}/v1/groups").status_code == 404
        assert httpx.get(f"{base}/ui?namespace=secret").status_code == 403
        assert asked == [("/ui", {"namespace": "ml"}), ("/ui", None), ("/ui/content", None),
                         ("/ui", {"namespace": "secret"})]
    finally:
        server.shutdown()
        server.server_close()
