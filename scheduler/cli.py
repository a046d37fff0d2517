"""`phalanx` command line. Subcommands are thin: parse, call the pure core, print."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from gcpause import census, gc_paused, heap_line, traced_growth, trim_heap, tune_heap
from scheduler.gang import GANG_NAME
from scheduler.offline import gang_of
from scheduler.request import request_for
from scheduler.sources import GangSpecError
from solver.errors import BadRequest
from solver.request import SolverConfig
from solver.solve import solve
from topology.presets import PRESETS, Preset, resolve_preset
from topology.records import (
    PodWire,
    RecordError,
    node_from_json,
    nodes_from_list_bytes,
    pod_from_json,
)
from topology.snapshot import build_snapshot, placed_pods, usage_from_pods
from topology.synthetic import SHAPES, ClusterSpec, as_list, synth_load, synth_nodes

if TYPE_CHECKING:
    from scheduler.config import Config

# `--preset aws` is the default AWS accelerator fleet (p5); the others name instance shapes.
SYNTH_PRESETS = {"aws": "p5", **{name: name for name in SHAPES}}
HEAP_LOG_S = 300.0
"""How often `phalanx run` logs where its memory is (one INFO line)."""


def _fanout(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 8,16,32, got {text!r}"
        ) from None


def _write_json(obj: object, target: str | None) -> None:
    data = orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n"
    if target in (None, "-"):
        sys.stdout.buffer.write(data)
    else:
        Path(target).write_bytes(data)


def cmd_synth(args: argparse.Namespace) -> int:
    spec = ClusterSpec(
        nodes=args.nodes, shape=SYNTH_PRESETS[args.preset], occupancy=args.occupancy,
        seed=args.seed, fanout=args.fanout,
    )
    nodes = synth_nodes(spec)
    _write_json(as_list("NodeList", nodes), args.out)
    if args.pods_out:
        _write_json(as_list("PodList", synth_load(spec, nodes)), args.pods_out)
    return 0


class InputError(ValueError):
    """Bad input to a CLI command: exit code 1 with this message."""


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def _load_documents(path: str, data: bytes | None = None) -> list[dict[str, Any]]:
    data = _read(path) if data is None else data
    try:
        if data.lstrip()[:1] in (b"{", b"["):
            # kubectl -o json of a 100k-node fleet: orjson, YAML parsing is ~1000x slower.
            loaded = orjson.loads(data)
            docs = loaded if isinstance(loaded, list) else [loaded]
        else:
            docs = [doc for doc in yaml.safe_load_all(data) if doc is not None]
    except (orjson.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON or YAML: {exc}") from None
    out: list[dict[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise InputError(f"{path}: expected Kubernetes objects, got {type(doc).__name__}")
        if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            out.extend(item for item in doc["items"] if isinstance(item, dict))
        else:
            out.append(doc)
    return out


def _records(path: str, kind: str) -> list[Any]:
    """Node or Pod records of a file. A JSON NodeList or PodList (kubectl -o json) goes
    through the wire path the scheduler's cache uses (only the fields placement reads,
    pods of one template sharing their parts); anything else, or a list the wire structs
    cannot take, through dicts, which name the bad field."""
    data = _read(path)
    try:
        if data.lstrip()[:1] == b"{":
            if kind == "Node" and (nodes := nodes_from_list_bytes(data)) is not None:
                return nodes
            if kind == "Pod" and b'"PodList"' in data[:4096]:
                wire = PodWire()
                items, _, _ = wire.page(data)
                return [wire.record(item) for item in items]
        parse = node_from_json if kind == "Node" else pod_from_json
        return [parse(doc) for doc in _load_documents(path, data)
                if doc.get("kind", kind) == kind]
    except RecordError as exc:
        raise InputError(f"{path}: {exc}") from None


def _levels(text: str) -> Preset:
    return resolve_preset(text if "," not in text and text in PRESETS else text.split(","))


def cmd_place(args: argparse.Namespace) -> int:
    # One pass over data that forms no cycles: the cyclic GC would rescan the millions of
    # objects of a 100k-node list again and again (measured: 2.5 s of 8.5 s at 110k).
    with gc_paused():
        return _place(args)


def _place(args: argparse.Namespace) -> int:
    nodes = _records(args.nodes, "Node")
    if not nodes:
        raise InputError(f"{args.nodes}: no Node objects")
    pods = _records(args.pods, "Pod") if args.pods else []
    gang_docs = _load_documents(args.gang)
    try:
        pods += [pod_from_json(doc) for doc in gang_docs if doc.get("kind") == "Pod"]
        gang = gang_of([doc for doc in gang_docs if doc.get("kind") != "Pod"], pods)
    except (GangSpecError, RecordError, ValueError) as exc:
        raise InputError(f"{args.gang}: {exc}") from None
    snapshot = build_snapshot(nodes, usage_from_pods(pods), _levels(args.levels),
                              placed_pods(pods))
    request = request_for(gang, snapshot.anti_affinity_keys)
    config = SolverConfig(algorithm=args.algorithm, time_limit_s=args.time_limit)
    try:
        result = solve(request, snapshot, config)
    except BadRequest as exc:
        raise InputError(f"{args.gang}: {exc}") from None
    _write_json(result.to_json(), None)
    if result.status != "placed":
        print(f"phalanx place: {request.name} cannot fit: {result.reason}", file=sys.stderr)
        return 2
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from kube import KubeClient
    from scheduler.api import serve
    from scheduler.app import Runner
    from scheduler.collaborators import Leading
    from scheduler.config import load_config
    from scheduler.errors import ConfigError

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="time=%(asctime)s level=%(levelname)s logger=%(name)s "
                               "msg=%(message)s")
    tune_heap()  # before any thread of ours makes an arena
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"phalanx run: {exc}", file=sys.stderr)
        return 1
    try:
        config = _serving_flags(config, args)
    except ConfigError as exc:
        print(f"phalanx run: {exc}", file=sys.stderr)
        return 1
    try:
        kube = KubeClient.from_kubeconfig(args.kubeconfig, pool_size=config.bind_concurrency * 2,
                                          user_agent=f"phalanx-scheduler/0.1.0 "
                                                     f"({config.scheduler_name})")
    except Exception as exc:  # kubeconfig unreadable, no in-cluster environment
        print(f"phalanx run: cannot load credentials: {exc}", file=sys.stderr)
        return 1
    elector = None
    leading = Leading()
    if config.leader_election.enabled:
        from scheduler.leader import LeaderElector, default_identity

        elector = LeaderElector(kube, config.leader_election, default_identity())
        leading = Leading(elector.leading)
    runner = Runner(kube, config, leading)
    if elector is not None:
        elector.on_change = lambda _: runner.wake.set()
        elector.start()
    runner.start()
    server = serve(runner, config.http_address, config.preset.keys)
    secure = None
    if config.secure_address:
        from scheduler.api.auth import ApiReviews, Delegated
        from scheduler.api.server import serve_secure
        from scheduler.api.tls import ServingPair, self_signed

        pair = (ServingPair(config.tls_cert_file, config.tls_key_file)
                if config.tls_cert_file else self_signed())
        secure, _ = serve_secure(runner, config.secure_address, config.preset.keys,
                                 Delegated(ApiReviews(kube)), pair)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("phalanx").info(
        "phalanx %s serving scheduler %s, explain API on http://%s%s", "0.1.0",
        config.scheduler_name, config.http_address,
        f" and https://{config.secure_address}" if config.secure_address else "")
    heap = logging.getLogger("phalanx.heap")
    # On demand, what the live objects are (growth in python_blocks, told by type).
    # The pod memo is the one cache of the process not keyed by what exists now.
    signal.signal(signal.SIGUSR1, lambda *_: heap.info(
        "census %s; pods=%d memo %s; heap %s; traced %s", census(), len(runner.cache.pods),
        runner.cache.pod_wire.sizes(), heap_line(), traced_growth() or "off"))
    while not stop.wait(HEAP_LOG_S):
        # Where the memory is, now and then: a long run's growth told apart from a
        # re-list's high-water mark (kube.watch logs the same after each re-list). The
        # C heap's free pages go back first (binds, Events and watch pages churn it).
        before = heap_line()
        trim_heap()
        heap.info("heap %s; trimmed from %s", heap_line(), before)
    # No new bind from here; in-flight ones finish (the binder pool drains) before the
    # Lease is released, so the next leader never races this one's last binds.
    server.should_exit = True
    if secure is not None:
        secure.should_exit = True
    runner.stop()
    if elector is not None:
        elector.stop(release=True)  # a standby takes over at its next retry
    return 0


def _serving_flags(config: Config, args: argparse.Namespace) -> Config:
    """--http-address, --secure-address and the TLS pair over the config file's values,
    checked by the same rules (ConfigError names the flag)."""
    from dataclasses import replace

    from scheduler.config import host_port, loopback_address
    from scheduler.errors import ConfigError

    if args.http_address:
        config = replace(config, http_address=loopback_address(args.http_address,
                                                               "--http-address"))
    if args.secure_address:
        config = replace(config, secure_address=host_port(args.secure_address,
                                                         "--secure-address"))
    if bool(args.tls_cert_file) != bool(args.tls_private_key_file):
        raise ConfigError("--tls-private-key-file" if args.tls_cert_file
                          else "--tls-cert-file", "given together with the other file",
                          args.tls_cert_file or args.tls_private_key_file)
    if args.tls_cert_file:
        config = replace(config, tls_cert_file=args.tls_cert_file,
                         tls_key_file=args.tls_private_key_file)
    return config



def cmd_explain(args: argparse.Namespace) -> int:
    """Exit codes: 0 placed, 2 not placed (pending, waiting, invalid), 1 error."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from scheduler.render import render

    named = GANG_NAME.match(args.group)
    if not named:
        raise InputError(f"expected NAMESPACE/NAME or NAMESPACE/KIND/NAME (DNS-1123 names, "
                         f"a kind such as StatefulSet), got {args.group!r}")
    namespace, kind, name = named["namespace"], named["kind"], named["name"]
    base = args.server.rstrip("/")
    url = f"{base}/v1/groups/{urllib.parse.quote(namespace)}/{urllib.parse.quote(name)}/explain"
    if kind:
        url += f"?kind={urllib.parse.quote(kind)}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as reply:
            body = orjson.loads(reply.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            detail = orjson.loads(detail).get("detail", detail)
        if exc.code == 409:
            detail += "; name the kind as NAMESPACE/KIND/NAME"
        raise InputError(f"{url}: {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"cannot reach the explain API at {base}: {reason} (is `phalanx "
                         f"run` serving there? see --server)") from None
    if args.json:
        _write_json(body, None)
    else:
        print(render(body))
    return 0 if body.get("verdict") == "placed" else 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phalanx", description="Topology-aware gang scheduler")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser(
        "synth", help="write a synthetic UltraCluster as a Kubernetes NodeList (and PodList)"
    )
    synth.add_argument("--nodes", type=int, required=True)
    synth.add_argument("--preset", choices=sorted(SYNTH_PRESETS), default="aws",
                       help="instance fleet: aws (= p5.48xlarge), p5, trn2, p6 (4 layers)")
    synth.add_argument("--occupancy", type=float, default=0.0,
                       help="fraction of nodes already busy (fully or partly) with existing load")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--fanout", type=_fanout, default=None,
                       help="children per network layer, top to bottom, e.g. 8,16,32")
    synth.add_argument("--out", default=None, help="NodeList file (default: stdout)")
    synth.add_argument("--pods-out", default=None, help="PodList file for the existing load")
    synth.set_defaults(func=cmd_synth)

    place = sub.add_parser(
        "place", help="offline what-if: where would this gang go on these nodes?",
        description="Exit codes: 0 placed, 2 cannot fit (reason on stderr and in the JSON), "
                    "1 bad input.")
    place.add_argument("--nodes", required=True, help="kubectl get nodes -o json output")
    place.add_argument("--pods", help="kubectl get pods -A -o json output (existing load)")
    place.add_argument("--gang", required=True,
                       help="StatefulSet, Job or PodGroup manifest (YAML or JSON; a PodGroup's "
                            "pods may sit in the same file or in --pods)")
    place.add_argument("--algorithm", choices=("cpsat", "greedy"), default="cpsat")
    place.add_argument("--levels", default="aws",
                       help="topology preset (aws, topograph, gke) or comma-separated label keys")
    place.add_argument("--time-limit", type=float, default=1.0, help="solver seconds")
    place.set_defaults(func=cmd_place)

    run = sub.add_parser("run", help="run the scheduler against a cluster")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster credentials)")
    run.add_argument("--config", help="YAML configuration file (validated at start-up)")
    run.add_argument("--http-address", help="HOST:PORT of the plain-HTTP explain API, "
                                            "loopback only (default from --config: "
                                            "127.0.0.1:10270)")
    run.add_argument("--secure-address", help="HOST:PORT of the HTTPS explain API, with "
                                              "TokenReview authentication and "
                                              "SubjectAccessReview authorisation")
    run.add_argument("--tls-cert-file", help="serving certificate (PEM) for "
                                             "--secure-address; reloaded when it changes")
    run.add_argument("--tls-private-key-file", help="its private key (PEM); without the "
                                                    "pair a self-signed one is generated")
    run.add_argument("-v", "--verbose", action="store_true", help="per-pod DEBUG logging")
    run.set_defaults(func=cmd_run)

    explain = sub.add_parser(
        "explain", help="why a gang is pending, or why it landed where it did",
        description="Reads the explain API of a running `phalanx run`. Exit codes: 0 placed, "
                    "2 not placed, 1 error.")
    explain.add_argument("group", metavar="NAMESPACE/[KIND/]NAME",
                         help="the gang: its namespace and the name of its PodGroup, "
                              "StatefulSet or Job (KIND when two gangs share the name)")
    explain.add_argument("--server", default="http://127.0.0.1:10270",
                         help="explain API base URL (default: %(default)s)")
    explain.add_argument("--json", action="store_true", help="print the route's JSON")
    explain.add_argument("--timeout", type=float, default=10.0, help="seconds")
    explain.set_defaults(func=cmd_explain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (InputError, ValueError) as exc:
        print(f"phalanx {args.command}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
