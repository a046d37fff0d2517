"""`kubectl phalanx`: the explain API from anywhere kubectl works.

    kubectl phalanx groups                  every gang the caller may see
    kubectl phalanx explain NS/[KIND/]NAME  where a gang went and why, or why it waits
    kubectl phalanx topology [--level KEY]  domains and their free capacity
    kubectl phalanx ui [--address A]        the topology map page, served on loopback

It goes through the API server's service proxy
(`/api/v1/namespaces/NS/services/https:SERVICE:https/proxy/...`) with the user's own
kubeconfig, so the user needs no network path to the scheduler, and the API server
checks that the user may reach the Service (`services/proxy`). The proxy strips the
`Authorization` header before forwarding, so the kubeconfig's bearer token travels in
`X-Phalanx-Authorization`, where the secure explain API takes it and checks it with a
TokenReview: the scheduler sees the user, not the API server. A kubeconfig with a client
certificate and no token is refused by the scheduler (401): use a token (`kubectl create
token`, an exec plugin) or pass `--token`.

A browser cannot add that header, so `ui` serves the page on a loopback port of the
user's machine and adds it to every request it forwards (like `kubectl proxy`, anything
on this machine that reaches the port is served as the user: it listens on loopback
only, and forwards only the page's own routes).

Exit codes: 0 done (explain: placed), 2 explain: not placed, 1 error.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any
from urllib.parse import quote

import orjson

from kube import ApiError, KubeClient, Response, RetryPolicy, api_path
from scheduler.api.auth import PROXIED_AUTHORIZATION
from scheduler.gang import GANG_NAME
from scheduler.render import render
from topology.presets import short_level

SERVICE = "phalanx-scheduler"
NAMESPACE = "phalanx-system"
PORT = "https"


class PluginError(Exception):
    """Exit 1 with this message."""


def proxy_path(namespace: str, service: str, port: str, route: str) -> str:
    """The API server's service-proxy path to `route` on the Service's HTTPS port."""
    base = api_path("", "v1", "services", namespace, f"https:{service}:{port}", "proxy")
    return base + route


def forward(kube: KubeClient, args: argparse.Namespace, route: str,
            query: dict[str, str] | None = None) -> Response:
    """GET `route` of the scheduler through the service proxy, as the user."""
    token = args.token or _bearer(kube)
    headers = {PROXIED_AUTHORIZATION: f"Bearer {token}"} if token else {}
    path = proxy_path(args.scheduler_namespace, args.service, args.port, route)
    reply = kube.request("GET", path, query=query, headers=headers, timeout=args.timeout,
                         retry=RetryPolicy(attempts=2))
    assert isinstance(reply, Response)
    return reply


def fetch(kube: KubeClient, args: argparse.Namespace, route: str,
          query: dict[str, str] | None = None) -> Any:
    try:
        return forward(kube, args, route, query).json()
    except ApiError as exc:
        raise PluginError(f"{route}: {exc.status}: {_detail(exc)}"
                          f"{_hint(exc.status, args)}") from None


def _detail(exc: ApiError) -> str:
    detail = exc.message
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
        detail = orjson.loads(exc.message).get("detail", detail)
    return str(detail)


def _hint(status: int, args: argparse.Namespace) -> str:
    return {401: " (the scheduler needs a bearer token: a token kubeconfig or --token)",
            409: "; name the kind as NAMESPACE/KIND/NAME",
            503: f" (is the Service {args.scheduler_namespace}/{args.service} serving?)",
            }.get(status, "")


def _bearer(kube: KubeClient) -> str | None:
    value = kube.authorization()
    if value and value.lower().startswith("bearer "):
        return value.split(" ", 1)[1].strip()
    return None


def cmd_groups(kube: KubeClient, args: argparse.Namespace) -> int:
    body = fetch(kube, args, "/v1/groups")
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    rows = [("NAMESPACE", "NAME", "KIND", "STATE", "BOUND", "SIZE")]
    rows += [(g["namespace"], g["name"], g["kind"], g["state"], str(g["bound"]),
              str(g["size"])) for g in body["groups"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    return 0


def cmd_explain(kube: KubeClient, args: argparse.Namespace) -> int:
    named = GANG_NAME.match(args.group)
    if not named:
        raise PluginError(f"expected NAMESPACE/NAME or NAMESPACE/KIND/NAME, got {args.group!r}")
    route = f"/v1/groups/{quote(named['namespace'])}/{quote(named['name'])}/explain"
    body = fetch(kube, args, route, {"kind": named["kind"]} if named["kind"] else None)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(body))
    return 0 if body.get("verdict") == "placed" else 2


def cmd_topology(kube: KubeClient, args: argparse.Namespace) -> int:
    body = fetch(kube, args, "/v1/topology", {"level": args.level} if args.level else None)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    print(f"{body['nodes']} nodes, {body['unlabelled_nodes']} without every level's label")
    for level in body["levels"]:
        print(f"{short_level(level['level'])}: {level['total_domains']} domains")
        for domain in level["domains"][: args.limit]:
            free = ", ".join(f"{k}={v}" for k, v in sorted(domain["free"].items()))
            print(f"  {domain['domain']:<60} nodes={domain['nodes']:<6} {free}")
    return 0


def cmd_ui(kube: KubeClient, args: argparse.Namespace) -> int:
    from scheduler.kubectl_ui import serve_page

    return serve_page(lambda route, query: forward(kube, args, route, query), args.address)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kubectl phalanx", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG, ~/.kube/config)")
    top.add_argument("--context", help="kubeconfig context")
    top.add_argument("--scheduler-namespace", default=NAMESPACE,
                     help=f"namespace of the scheduler's Service (default {NAMESPACE})")
    top.add_argument("--service", default=SERVICE, help=f"its Service (default {SERVICE})")
    top.add_argument("--port", default=PORT, help=f"the Service's port name (default {PORT})")
    top.add_argument("--token", help="bearer token for the scheduler (default: the "
                                     "kubeconfig's)")
    top.add_argument("--timeout", type=float, default=15.0, help="seconds")
    top.add_argument("--json", action="store_true", help="print the route's JSON")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("groups", help="every gang you may see").set_defaults(func=cmd_groups)
    explain = sub.add_parser("explain", help="where a gang went and why")
    explain.add_argument("group", metavar="NAMESPACE/[KIND/]NAME")
    explain.set_defaults(func=cmd_explain)
    topology = sub.add_parser("topology", help="domains and their free capacity")
    topology.add_argument("--level", help="one level's label key")
    topology.add_argument("--limit", type=int, default=20, help="domains shown per level")
    topology.set_defaults(func=cmd_topology)
    ui = sub.add_parser("ui", help="serve the topology map page on a loopback port")
    ui.add_argument("--address", default="127.0.0.1:8271",
                    help="loopback HOST:PORT to serve on (default 127.0.0.1:8271; port 0 "
                         "picks a free one)")
    ui.set_defaults(func=cmd_ui)
    return top


def main(argv: list[str] | None = None) -> int:
    import os

    args = parser().parse_args(argv)
    try:
        kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] \
            or os.path.expanduser("~/.kube/config")
        kube = KubeClient.from_kubeconfig(kubeconfig, context=args.context,
                                          user_agent="kubectl-phalanx/0.1.0")
    except Exception as exc:  # unreadable kubeconfig, unknown context
        print(f"kubectl phalanx: cannot load the kubeconfig: {exc}", file=sys.stderr)
        return 1
    try:
        result: int = args.func(kube, args)
        return result
    except PluginError as exc:
        print(f"kubectl phalanx: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
