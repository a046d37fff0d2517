"""The secure port's serving pair: given files (reloaded when they change, as
cert-manager or a kubelet-projected Secret rotates them), or a self-signed pair made at
start-up when none is given (with a warning: clients cannot verify it)."""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("phalanx.tls")

RELOAD_PERIOD_S = 5.0


@dataclass(frozen=True)
class ServingPair:
    cert_file: str
    key_file: str
    generated: bool = False


def self_signed(hosts: tuple[str, ...] = ()) -> ServingPair:
    """An EC P-256 pair for localhost, this host's name and `hosts`, valid one year,
    written to a private temporary folder (0700; /tmp is a memory-backed emptyDir in the
    shipped Deployment) because Python's ssl loads pairs from files only."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = {"localhost", socket.gethostname(), *hosts}
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phalanx-scheduler")])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(names) if n]
    alt += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = Path(tempfile.mkdtemp(prefix="phalanx-tls-"))
    os.chmod(folder, 0o700)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # the key leaves with us
    cert_file, key_file = folder / "tls.crt", folder / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    log.warning("no --tls-cert-file/--tls-private-key-file: serving a self-signed "
                "certificate (clients cannot verify it; give a pair for production)")
    return ServingPair(str(cert_file), str(key_file), generated=True)


class Reloader:
    """Loads the pair into the live SSLContext again whenever either file changes: new
    handshakes get the new certificate, open connections keep theirs. A pair that fails
    to load (half-written during a rotation) is logged and tried again next period."""

    def __init__(self, context: ssl.SSLContext, pair: ServingPair,
                 period_s: float = RELOAD_PERIOD_S) -> None:
        self.context, self.pair, self.period_s = context, pair, period_s
        self.stop = threading.Event()
        self.loaded = self._stamp()
        self.reloads = 0

    def _stamp(self) -> tuple[float, float, int, int]:
        cert, key = os.stat(self.pair.cert_file), os.stat(self.pair.key_file)
        return cert.st_mtime, key.st_mtime, cert.st_ino, key.st_ino

    def check(self) -> bool:
        """One look; True when a new pair was loaded."""
        try:
            stamp = self._stamp()
            if stamp == self.loaded:
                return False
            self.context.load_cert_chain(self.pair.cert_file, self.pair.key_file)
        except (OSError, ssl.SSLError) as exc:
            log.warning("serving pair not reloaded (tried again in %.0f s): %s",
                        self.period_s, exc)
            return False
        self.loaded = stamp
        self.reloads += 1
        log.info("serving certificate reloaded from %s", self.pair.cert_file)
        return True

    def start(self) -> None:
        def loop() -> None:
            while not self.stop.wait(self.period_s):
                self.check()

        threading.Thread(target=loop, name="tls-reload", daemon=True).start()
