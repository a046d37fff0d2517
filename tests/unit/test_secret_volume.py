"""localcluster's Secret volume: the files a controller reads follow its Secret, all of
them swapped at once (a new certificate is never paired with the old key)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from localcluster.controllers import write_secret_files


def _data(**files: str) -> dict[str, str]:
    return {name.replace("_", "."): base64.b64encode(text.encode()).decode()
            for name, text in files.items()}


def test_files_follow_the_secret_through_one_symlink_swap(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    (folder).mkdir()
    (folder / "tls.crt").write_text("from an older layout")  # a plain file is replaced
    assert write_secret_files(folder, _data(tls_crt="cert-1", tls_key="key-1"))
    assert (folder / "tls.crt").read_text() == "cert-1"
    assert (folder / "tls.key").read_text() == "key-1"
    assert os.readlink(folder / "tls.key") == "..data/tls.key"
    first = os.readlink(folder / "..data")

    assert not write_secret_files(folder, _data(tls_crt="cert-1", tls_key="key-1"))
    assert os.readlink(folder / "..data") == first  # unchanged: nothing rewritten

    assert write_secret_files(folder, _data(tls_crt="cert-2", tls_key="key-2"))
    assert os.readlink(folder / "..data") != first
    assert ((folder / "tls.crt").read_text(), (folder / "tls.key").read_text()) == (
        "cert-2", "key-2")
    versions = sorted(p.name for p in folder.iterdir() if p.name.startswith("..version-"))
    assert versions == [os.readlink(folder / "..data")]  # the old version is gone
