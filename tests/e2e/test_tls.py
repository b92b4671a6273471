"""TLS on the gRPC control plane (``FREIGHT_USE_TLS``): a two-node cluster and its driver run
tasks, actors and object transfers over it, and the clients it must not let in are refused.

The CA and certificates are made here at test time with ``cryptography`` (a test dependency).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import freight
from freight import _launcher
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.testing import Cluster, connected_cluster, patched_environ, short_temp_dir
from freight.util.grpc_auth import TOKEN_METADATA_KEY, read_token, sync_channel
from freight.util.grpc_tls import add_port, check_tls

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    if os.environ.get("CI"):
        raise  # CI installs the test extras: a missing package there is a failure
    pytest.skip("needs the cryptography package: pip install -e '.[test]'", allow_module_level=True)

# ---- certificates ------------------------------------------------------------------------------

Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey):
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _make_ca(common_name: str) -> tuple[Key, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        _builder(common_name, _name(common_name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(
    ca: tuple[Key, x509.Certificate], common_name: str, names: list[x509.GeneralName]
) -> tuple[Key, x509.Certificate]:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        _builder(common_name, ca_cert.subject, key.public_key())
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(both), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write_cert(path: Path, cert: x509.Certificate) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _write_key(path: Path, key: Key) -> str:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return str(path)


@dataclass(frozen=True)
class Pki:
    """Paths of the test's PEM files."""

    ca: str  # the cluster's CA
    cert: str  # the cluster's certificate (127.0.0.1, localhost), signed by ``ca``
    key: str
    rogue_cert: str  # same names, signed by another CA
    rogue_key: str
    named_cert: str  # only the DNS name freight.internal, signed by ``ca``
    named_key: str

    def env(self) -> dict[str, str | None]:
        """The settings every process of a TLS cluster gets."""
        return {
            "FREIGHT_USE_TLS": "1",
            "FREIGHT_TLS_SERVER_CERT": self.cert,
            "FREIGHT_TLS_SERVER_KEY": self.key,
            "FREIGHT_TLS_CA_CERT": self.ca,
            "FREIGHT_TLS_SERVER_NAME": None,
        }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = _make_ca("freight test CA")
    loopback = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    key, cert = _issue(ca, "freight node", loopback)
    rogue_key, rogue_cert = _issue(_make_ca("someone else's CA"), "freight node", loopback)
    named_key, named_cert = _issue(ca, "freight node", [x509.DNSName("freight.internal")])
    return Pki(
        ca=_write_cert(d / "ca.pem", ca[1]),
        cert=_write_cert(d / "node.pem", cert),
        key=_write_key(d / "node.key", key),
        rogue_cert=_write_cert(d / "rogue.pem", rogue_cert),
        rogue_key=_write_key(d / "rogue.key", rogue_key),
        named_cert=_write_cert(d / "named.pem", named_cert),
        named_key=_write_key(d / "named.key", named_key),
    )


# ---- a cluster over TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(pki: Pki) -> Iterator[Cluster]:
    """Head, two node agents and this driver, all with the TLS settings (children inherit them)."""
    nodes = ({"num_cpus": 1}, {"num_cpus": 1, "resources": {"second": 1}})
    with connected_cluster(*nodes, env=dict(pki.env())) as c:
        yield c


@freight.remote
def square(x: int) -> int:
    return x * x


@freight.remote(resources={"second": 1})
def big_on_second_node() -> tuple[str, bytes]:
    return freight.get_runtime_context().get_node_id(), b"x" * (2 * 1024 * 1024)


@freight.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


def test_tasks_run_over_tls(cluster: Cluster) -> None:
    assert freight.get([square.remote(i) for i in range(4)], timeout=60) == [0, 1, 4, 9]


def test_actors_run_over_tls(cluster: Cluster) -> None:
    counter = Counter.remote()
    assert freight.get([counter.incr.remote() for _ in range(3)], timeout=60) == [1, 2, 3]
    freight.kill(counter)


def test_objects_move_between_agents_over_tls(cluster: Cluster) -> None:
    # The driver's agent pulls the 2 MiB result from the other agent over gRPC (PullObject).
    node_id, data = freight.get(big_on_second_node.remote(), timeout=60)
    assert node_id == cluster.nodes[1].node_id
    assert data == b"x" * (2 * 1024 * 1024)


def _addresses(cluster: Cluster) -> dict[str, str]:
    with sync_channel(cluster.address, read_token(cluster.session_dir)) as channel:
        nodes = pb_grpc.HeadServiceStub(channel).ListNodes(pb.ListNodesRequest(), timeout=10)
    agent = next(n.agent_address for n in nodes.nodes if n.node_id == cluster.nodes[1].node_id)
    return {"head": cluster.address, "agent": agent}


@pytest.mark.parametrize("server", ["head", "agent"])
def test_a_plaintext_client_with_the_right_token_is_refused(cluster: Cluster, server: str) -> None:
    address = _addresses(cluster)[server]
    token = read_token(cluster.session_dir)
    with grpc.insecure_channel(address) as plain, pytest.raises(grpc.RpcError) as err:
        # Any method: the connection fails at the TLS handshake, before gRPC routes a call.
        pb_grpc.HeadServiceStub(plain).ClusterStatus(
            pb.ClusterStatusRequest(), metadata=[(TOKEN_METADATA_KEY, token)], timeout=10
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_certificate_from_another_ca_is_refused(cluster: Cluster, pki: Pki) -> None:
    token = read_token(cluster.session_dir)
    # The client trusts the cluster's CA (so it accepts the head) but presents a stranger's cert.
    with (
        patched_environ(
            FREIGHT_TLS_SERVER_CERT=pki.rogue_cert, FREIGHT_TLS_SERVER_KEY=pki.rogue_key
        ),
        sync_channel(cluster.address, token) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        pb_grpc.HeadServiceStub(channel).ClusterStatus(pb.ClusterStatusRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_tls_client_without_a_certificate_is_refused(cluster: Cluster, pki: Pki) -> None:
    token = read_token(cluster.session_dir)
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(pki.ca).read_bytes())
    with (
        grpc.secure_channel(cluster.address, credentials) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        pb_grpc.HeadServiceStub(channel).ClusterStatus(
            pb.ClusterStatusRequest(), metadata=[(TOKEN_METADATA_KEY, token)], timeout=10
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("server", ["head", "agent"])
def test_the_standard_health_check_answers_over_tls_without_a_token(
    cluster: Cluster, pki: Pki, server: str
) -> None:
    # As grpc_health_probe -tls -tls-ca-cert -tls-client-cert -tls-client-key asks it: the
    # cluster's mutual TLS, the stock health stub, no token.
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(pki.ca).read_bytes(),
        private_key=Path(pki.key).read_bytes(),
        certificate_chain=Path(pki.cert).read_bytes(),
    )
    with grpc.secure_channel(_addresses(cluster)[server], credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# ---- settings ----------------------------------------------------------------------------------


def test_tls_on_with_a_missing_key_file_stops_the_head_with_the_setting_named(
    pki: Pki, tmp_path: Path
) -> None:
    missing = str(tmp_path / "absent.key")
    env = {**pki.env(), "FREIGHT_TLS_SERVER_KEY": missing}
    with short_temp_dir() as tmp, patched_environ(FREIGHT_TEMP_DIR=str(tmp), **env):
        session_dir = _launcher.new_session_dir()
        with pytest.raises(RuntimeError) as err:
            _launcher.start_head(session_dir)
    message = str(err.value)
    assert f"FREIGHT_TLS_SERVER_KEY={missing!r} cannot be read (No such file or directory)" in (
        message
    )
    assert "Traceback" not in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"FREIGHT_TLS_SERVER_CERT": ""},
            "FREIGHT_USE_TLS is on but FREIGHT_TLS_SERVER_CERT is not set",
        ),
        ({"FREIGHT_TLS_SERVER_KEY": "KEY"}, "FREIGHT_TLS_SERVER_KEY='KEY' is not a PEM file"),
        ({"FREIGHT_TLS_CA_CERT": "KEY"}, "FREIGHT_TLS_CA_CERT='KEY' is not a PEM file"),
        ({"FREIGHT_TLS_SERVER_KEY": "ROGUE_KEY"}, "are not a usable pair"),
    ],
    ids=["cert-unset", "key-not-pem", "ca-not-pem", "key-of-another-cert"],
)
def test_bad_tls_settings_are_named(
    pki: Pki, tmp_path: Path, change: dict[str, str], expected: str
) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    stand_ins = {"KEY": str(not_pem), "ROGUE_KEY": pki.rogue_key}
    env = {**pki.env(), **{k: stand_ins.get(v, v) for k, v in change.items()}}
    expected = expected.replace("'KEY'", repr(str(not_pem)))
    with patched_environ(**env), pytest.raises(ValueError) as err:
        check_tls()
    assert expected in str(err.value)


def test_tls_off_needs_no_files() -> None:
    with patched_environ(FREIGHT_USE_TLS="0", FREIGHT_TLS_SERVER_CERT="/nonexistent"):
        check_tls()


def test_server_name_lets_one_certificate_with_a_dns_name_serve_an_ip(pki: Pki) -> None:
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    env = {
        **pki.env(),
        "FREIGHT_TLS_SERVER_CERT": pki.named_cert,
        "FREIGHT_TLS_SERVER_KEY": pki.named_key,
    }
    with patched_environ(**env), ThreadPoolExecutor(max_workers=2) as pool:
        server = grpc.server(pool)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("test.Echo", {"Echo": echo})]
        )
        address = f"127.0.0.1:{add_port(server, '127.0.0.1:0')}"
        server.start()
        try:
            # The certificate names freight.internal, not 127.0.0.1: refused without the name...
            with sync_channel(address, "t") as channel, pytest.raises(grpc.RpcError) as err:
                channel.unary_unary("/test.Echo/Echo")(b"hi", timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            # ...accepted with it.
            with (
                patched_environ(FREIGHT_TLS_SERVER_NAME="freight.internal"),
                sync_channel(address, "t") as channel,
            ):
                assert channel.unary_unary("/test.Echo/Echo")(b"hi", timeout=10) == b"hi"
        finally:
            server.stop(None)
