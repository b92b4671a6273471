"""Optional TLS for the gRPC control plane (``FREIGHT_USE_TLS``), in addition to the token.

With TLS on, the cluster's gRPC servers (head, node agents) listen through :func:`add_port` and
every client channel (:func:`freight.util.grpc_auth.aio_channel` and ``sync_channel``) dials with
:func:`channel_credentials`. As with Ray's ``RAY_TLS_*``, every process presents the same
certificate, as server and as client; with ``FREIGHT_TLS_CA_CERT`` set, servers require a client
certificate signed by that CA (mutual TLS). docs/decisions/0019-tls-for-grpc.md says what this
encrypts and what it does not.

A bad setting is a :class:`ValueError` that names it and says what to do, raised when a process
starts (:func:`check_tls`) rather than as a failed handshake later.
"""

from __future__ import annotations

import re
import ssl
from typing import Any, NamedTuple

import grpc

from freight.config import settings

__all__ = [
    "TLSFiles",
    "add_port",
    "channel_credentials",
    "channel_options",
    "check_tls",
    "server_credentials",
    "tls_files",
]

_CERT_BLOCK = b"-----BEGIN CERTIFICATE-----"
_KEY_BLOCK = re.compile(rb"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----")


class TLSFiles(NamedTuple):
    """The PEM contents named by the ``FREIGHT_TLS_*`` settings."""

    cert: bytes  # certificate chain this process presents (as server and as client)
    key: bytes  # its private key
    ca: bytes | None  # CA bundle peers are verified against; None: gRPC's default roots


def _read(env: str, path: str, what: str) -> bytes:
    if not path:
        raise ValueError(
            f"FREIGHT_USE_TLS is on but {env} is not set: set it to the path of {what}, "
            "or turn TLS off with FREIGHT_USE_TLS=0."
        )
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(
            f"{env}={path!r} cannot be read ({e.strerror or e}): point it at a readable file "
            f"holding {what}."
        ) from None


def _not_pem(env: str, path: str, block: str) -> ValueError:
    return ValueError(
        f"{env}={path!r} is not a PEM file: expected a '-----BEGIN {block}-----' block. "
        "Convert a DER file with `openssl x509 -inform der` (certificates) or "
        "`openssl pkey -inform der` (keys)."
    )


def _no_password() -> bytes:
    return b""  # never prompt on a terminal for an encrypted key: fail instead


def tls_files() -> TLSFiles | None:
    """Read and check the files of the ``FREIGHT_TLS_*`` settings; None when TLS is off.

    Raises ValueError naming the setting at fault when a file is unset, unreadable, not PEM,
    an encrypted key, or a key that does not belong to the certificate.
    """
    if not settings.use_tls:
        return None
    cert_path, key_path, ca_path = (
        settings.tls_server_cert,
        settings.tls_server_key,
        settings.tls_ca_cert,
    )
    cert = _read(
        "FREIGHT_TLS_SERVER_CERT", cert_path, "the PEM certificate (chain) this process presents"
    )
    key = _read(
        "FREIGHT_TLS_SERVER_KEY", key_path, "the PEM private key of FREIGHT_TLS_SERVER_CERT"
    )
    ca = _read("FREIGHT_TLS_CA_CERT", ca_path, "the PEM CA certificate(s)") if ca_path else None
    if _CERT_BLOCK not in cert:
        raise _not_pem("FREIGHT_TLS_SERVER_CERT", cert_path, "CERTIFICATE")
    if not _KEY_BLOCK.search(key):
        raise _not_pem("FREIGHT_TLS_SERVER_KEY", key_path, "PRIVATE KEY")
    if b"ENCRYPTED" in key:
        raise ValueError(
            f"FREIGHT_TLS_SERVER_KEY={key_path!r} is encrypted, and gRPC needs a plain key: "
            "write one with `openssl pkey -in KEY -out KEY.plain` and keep it mode 0600."
        )
    if ca is not None and _CERT_BLOCK not in ca:
        raise _not_pem("FREIGHT_TLS_CA_CERT", ca_path, "CERTIFICATE")
    # The standard library parses what gRPC would only reject at the first handshake.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert_path, key_path, password=_no_password)
    except ssl.SSLError as e:
        raise ValueError(
            f"FREIGHT_TLS_SERVER_KEY={key_path!r} and FREIGHT_TLS_SERVER_CERT={cert_path!r} "
            f"are not a usable pair ({e.reason or e}): give the certificate and the key it was "
            "issued for."
        ) from None
    if ca is not None:
        try:
            context.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        except ssl.SSLError as e:
            raise ValueError(
                f"FREIGHT_TLS_CA_CERT={ca_path!r} holds no valid certificate ({e.reason or e})."
            ) from None
    return TLSFiles(cert, key, ca)


def check_tls() -> None:
    """Check the ``FREIGHT_TLS_*`` settings now (at start-up); raise ValueError if bad."""
    tls_files()


def server_credentials() -> grpc.ServerCredentials | None:
    """Server credentials of the ``FREIGHT_TLS_*`` settings; None when TLS is off.

    With a CA, clients must present a certificate signed by it (mutual TLS, as in Ray).
    """
    files = tls_files()
    if files is None:
        return None
    return grpc.ssl_server_credentials(
        [(files.key, files.cert)],
        root_certificates=files.ca,
        require_client_auth=files.ca is not None,
    )


def add_port(server: Any, address: str) -> int:
    """Make ``server`` (sync or asyncio) listen on ``address``, over TLS when
    ``FREIGHT_USE_TLS`` is on; return the port (0 when it could not bind)."""
    credentials = server_credentials()
    if credentials is None:
        return int(server.add_insecure_port(address))
    return int(server.add_secure_port(address, credentials))


def channel_credentials() -> grpc.ChannelCredentials | None:
    """Client credentials of the ``FREIGHT_TLS_*`` settings; None when TLS is off."""
    files = tls_files()
    if files is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=files.ca, private_key=files.key, certificate_chain=files.cert
    )


def channel_options(options: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``options`` plus the name clients expect in the server's certificate, when
    ``FREIGHT_TLS_SERVER_NAME`` is set (else the host they dial must be in it)."""
    name = settings.tls_server_name
    if not name or not settings.use_tls:
        return options
    return [*options, ("grpc.ssl_target_name_override", name)]
