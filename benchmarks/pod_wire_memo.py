"""The pod decoder (`topology.records.PodWire`) on pods as a real API server stores them,
two builds side by side.

Real pods differ in more than their names: the service account admission plugin mounts
each pod's token under a random volume name (`kube-api-access-xxxxx`), and controllers
write per-pod env (a rank). This takes the ten API-server pods of
`tests/unit/data/apiserver_pods.json`, makes `--pods` of them with a token mount and a
RANK of their own each, and decodes one list of them with each build (a `--base` git
ref checked out in a worktree, and this working tree), each in its own process, best of
`--repeats`: microseconds per pod and how many entries the decoder's memo kept.

    python -m benchmarks.pod_wire_memo --base HEAD~1 --pods 20000

prints a table and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PODS = REPO / "tests" / "unit" / "data" / "apiserver_pods.json"

MEASURE = r"""
import copy, json, sys, time
import orjson
from topology.records import PodWire
count, repeats = int(sys.argv[1]), int(sys.argv[2])
templates = orjson.loads(open(sys.argv[3], "rb").read())["items"]
pods = []
for index in range(count):
    pod = copy.deepcopy(templates[index % len(templates)])
    pod["metadata"]["name"] = f"{pod['metadata']['name']}-{index}"
    for container in pod["spec"].get("containers") or ():
        container.setdefault("env", []).append({"name": "RANK", "value": str(index)})
        for mount in container.get("volumeMounts") or ():
            if mount["name"].startswith("kube-api-access-"):
                mount["name"] = f"kube-api-access-{index:05x}"
    pods.append(pod)
data = orjson.dumps({"kind": "PodList", "metadata": {}, "items": pods})
best = float("inf")
for _ in range(repeats):
    wire = PodWire()
    start = time.perf_counter()
    items, _, _ = wire.page(data)
    records = [wire.record(item) for item in items]
    best = min(best, time.perf_counter() - start)
print(json.dumps({"us_per_pod": round(best / count * 1e6, 1),
                  "memo_entries": {kind: len(table) for kind, table in wire._memo.items()}}))
"""


def _measure(root: Path, pods: int, repeats: int) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(pods), str(repeats), str(PODS)],
                         env=env, cwd=root, capture_output=True, text=True, check=True)
    found: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD~1", help="git ref of the build compared")
    parser.add_argument("--pods", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternations of the two builds (the machine is noisy)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wire-base-") as tmp:
        base_root = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_root), args.base],
                       cwd=REPO, check=True, capture_output=True)
        try:
            runs: dict[str, list[dict[str, object]]] = {"base": [], "candidate": []}
            for _ in range(args.rounds):
                runs["base"].append(_measure(base_root, args.pods, args.repeats))
                runs["candidate"].append(_measure(REPO, args.pods, args.repeats))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_root)], cwd=REPO,
                           check=False, capture_output=True)
    best = {build: min(runs[build], key=lambda r: float(str(r["us_per_pod"])))
            for build in runs}
    print(f"{'build':<10} {'us/pod':>8}  memo entries (requests, inter_pod)")
    for build, found in best.items():
        memo = found["memo_entries"]
        assert isinstance(memo, dict)
        print(f"{build:<10} {found['us_per_pod']:>8}  {memo['requests']}, {memo['inter_pod']}")
    ratio = float(str(best["base"]["us_per_pod"])) / float(str(best["candidate"]["us_per_pod"]))
    print(json.dumps({"benchmark": "pod_wire_memo", "base": args.base, "pods": args.pods,
                      "runs": runs, "best": best, "base_over_candidate": round(ratio, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
