"""Renders manifests/ from charts/phalanx with the chart's default values, so the plain
manifests and the chart can never say different things.

    python hack/render_manifests.py           # write manifests/{crd,deploy,rbac}
    python hack/render_manifests.py --check   # exit 1 naming every file that differs

helm comes from hack/build-helm.sh (built from its Go module once). manifests/examples/
is not the chart's: it stays hand-written.
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "phalanx"
MANIFESTS = REPO / "manifests"
FOLDERS = {"crds/": "crd/", "templates/deploy/": "deploy/", "templates/rbac/": "rbac/"}
"""Chart path prefix -> folder of manifests/ it is rendered into."""
SOURCE = "# Source: phalanx/"
HEADER = ("# Rendered from charts/phalanx/{source} by `make manifests`\n"
          "# (the chart's default values): edit the chart, not this file.\n")


def helm_binary() -> str:
    built = subprocess.run(["bash", str(REPO / "hack" / "build-helm.sh")], check=True,
                           stdout=subprocess.PIPE, text=True)
    return built.stdout.strip().splitlines()[-1]


def render(helm: str, *values: str) -> dict[str, str]:
    """`helm template` of the chart, as chart file -> its rendered documents."""
    out = subprocess.run([helm, "template", "phalanx", str(CHART), "--include-crds",
                          *values], check=True, stdout=subprocess.PIPE, text=True).stdout
    documents: dict[str, list[str]] = {}
    source = None
    for document in out.split("\n---\n"):
        lines = document.removeprefix("---\n").split("\n")
        if lines and lines[0].startswith(SOURCE):
            source = lines[0].removeprefix(SOURCE)
            lines = lines[1:]
        if source is None:
            raise ValueError(f"helm template printed a document without {SOURCE!r}")
        body = "\n".join(lines).strip("\n")
        if body:
            documents.setdefault(source, []).append(body + "\n")
    return {source: "---\n".join(docs) for source, docs in documents.items()}


def manifests(rendered: dict[str, str]) -> dict[Path, str]:
    """manifests/ path -> its text, for every chart file rendered."""
    out: dict[Path, str] = {}
    for source, text in rendered.items():
        prefix = next((p for p in FOLDERS if source.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"chart file {source} has no folder in manifests/ ({FOLDERS})")
        target = MANIFESTS / FOLDERS[prefix] / source.removeprefix(prefix)
        out[target] = HEADER.format(source=source) + text
    return out


def differences(wanted: dict[Path, str]) -> list[str]:
    """Unified diffs of every file that is not as rendered, and of every rendered folder's
    file the chart no longer renders."""
    found = []
    for path, text in sorted(wanted.items()):
        have = path.read_text() if path.exists() else ""
        if have != text:
            found.append("".join(difflib.unified_diff(
                have.splitlines(keepends=True), text.splitlines(keepends=True),
                f"{path.relative_to(REPO)} (committed)", f"{path.relative_to(REPO)} (chart)")))
    for folder in sorted(set(FOLDERS.values())):
        for path in sorted((MANIFESTS / folder).glob("*.yaml")):
            if path not in wanted:
                found.append(f"{path.relative_to(REPO)}: not rendered by the chart\n")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if manifests/ is not what the chart renders")
    args = parser.parse_args(argv)
    wanted = manifests(render(helm_binary()))
    if args.check:
        found = differences(wanted)
        sys.stdout.write("".join(found))
        if found:
            print(f"{len(found)} file(s) differ from charts/phalanx: run `make manifests`",
                  file=sys.stderr)
        return 1 if found else 0
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
