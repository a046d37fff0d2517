"""`phalanx` command line. Subcommands are thin: parse, call the pure core, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from topology.synthetic import SHAPES, ClusterSpec, as_list, synth_load, synth_nodes

# `--preset aws` is the default AWS accelerator fleet (p5); the others name instance shapes.
SYNTH_PRESETS = {"aws": "p5", **{name: name for name in SHAPES}}


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ValueError as exc:
        print(f"phalanx {args.command}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
