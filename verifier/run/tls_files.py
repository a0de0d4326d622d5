"""A throwaway TLS certificate for one trial's server, made by the harness (never a file the
user names: ``ssl_*`` options are refused in workload files).

``trustme`` makes a CA and a certificate for 127.0.0.1 signed by it, in memory, with no
network; the files go to the trial's scratch folder and go away with it. memcached reads
them in ``ssl_init()``, before it drops to ``-u nobody`` (1.6.18's main), but the files are
world-readable anyway so a server running as nobody can read them again: the key protects
nothing but one loopback server that lives for one soak.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

HOSTNAME = "127.0.0.1"  # the certificate's subject (an IP address SAN): what clients check


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate the clients trust
    chain: Path  # the server's certificate chain (-o ssl_chain_cert)
    key: Path  # its private key (-o ssl_key)

    def server_options(self) -> str:
        """The ``-o`` items that load them (``ssl_session_cache``: so ``stats`` counts each
        new TLS session in ``ssl_new_sessions``, the server's own proof that TLS happened)."""
        return f"ssl_chain_cert={self.chain},ssl_key={self.key},ssl_session_cache"


def make_certificate(folder: Path) -> TlsFiles:
    """A fresh CA and server certificate for 127.0.0.1, written to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert(HOSTNAME)
    files = TlsFiles(folder / "tls-ca.pem", folder / "tls-chain.pem", folder / "tls-key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    for index, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(str(files.chain), append=index > 0)
    issued.private_key_pem.write_to_path(str(files.key))
    for path in (files.ca, files.chain, files.key):
        path.chmod(0o644)  # the server may read them as nobody
    return files
