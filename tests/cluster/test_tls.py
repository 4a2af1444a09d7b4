"""TLS to etcd: a one-member etcd serving https with client-certificate authentication, in a
namespace of its own on the test cluster's underlay (certificates made with openssl here)."""

from __future__ import annotations

import subprocess
import time

import pytest

from splice.ipam.cluster.errors import ClusterUnavailable
from splice.ipam.cluster.etcd import Etcd

from ..conftest import require_tool
from .harness import NET

pytestmark = pytest.mark.root
TLS_IP = f"{NET}.9"
URL = f"https://{TLS_IP}:2379"


def openssl(*argv: str, cwd) -> None:
    subprocess.run(["openssl", *argv], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certs(d, name: str = "ca") -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1",
            "-subj", f"/CN=splice-test-{name}", cwd=d)
    for who, ext in (("server", f"subjectAltName=IP:{TLS_IP}\nextendedKeyUsage=serverAuth,clientAuth\n"),
                     ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{who}.ext").write_text(ext)
        openssl("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}", cwd=d)
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", f"{name}.pem", "-CAkey", f"{name}.key",
                "-CAcreateserial", "-out", f"{who}.pem", "-days", "1", "-extfile", f"{who}.ext", cwd=d)


@pytest.fixture
def tls_etcd(etcd_cluster, tmp_path):
    require_tool("openssl")
    c = etcd_cluster
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    other = tmp_path / "other"
    other.mkdir()
    make_certs(other, "otherca")
    ns = f"{c.prefix}t"
    c._ns(ns)
    c._port(ns, "pt", TLS_IP)
    peer = f"http://{TLS_IP}:2380"
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{ns}", c.etcd, "--name", "tls", "--data-dir", str(tmp_path / "data"),
         "--listen-client-urls", URL, "--advertise-client-urls", URL,
         "--cert-file", str(certs / "server.pem"), "--key-file", str(certs / "server.key"),
         "--client-cert-auth", "--trusted-ca-file", str(certs / "ca.pem"),
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"tls={peer}",
         "--logger", "zap", "--log-level", "warn"],
        stdout=open(tmp_path / "tls.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield certs, other
    finally:
        proc.kill()
        proc.wait(10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        c._made.remove(ns)


def test_tls_client_certificate(cluster, tls_etcd, prefix):
    certs, other = tls_etcd
    e = Etcd([URL], ca_file=str(certs / "ca.pem"), cert_file=str(certs / "client.pem"),
             key_file=str(certs / "client.key"), retry_for=10)
    e.put(f"{prefix}/k", "v")   # (waits for the member to come up)
    assert e.get(f"{prefix}/k").value == b"v"
    w = e.watch(f"{prefix}/", prefix=True, start_revision=1)
    try:
        assert w.next(3)["result"]["created"]
        assert w.next(3)["result"]["events"][0]["kv"]["mod_revision"]
    finally:
        w.close()

    no_cert = Etcd([URL], ca_file=str(certs / "ca.pem"), timeout=1, retry_for=0)
    with pytest.raises(ClusterUnavailable) as ei:
        no_cert.get(f"{prefix}/k")
    assert "bad certificate" in ei.value.details
    assert URL in ei.value.details

    untrusted = Etcd([URL], ca_file=str(other / "otherca.pem"), cert_file=str(certs / "client.pem"),
                     key_file=str(certs / "client.key"), timeout=1, retry_for=0)
    t0 = time.monotonic()
    with pytest.raises(ClusterUnavailable) as ei:
        untrusted.get(f"{prefix}/k")
    assert "certificate verify failed" in ei.value.details and URL in ei.value.details
    assert time.monotonic() - t0 < 3
