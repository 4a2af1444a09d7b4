"""The ``etcd`` configuration block (pure validation, no etcd needed)."""

from __future__ import annotations

import pytest

from splice.ipam.cluster.config import EtcdConfig, parse_etcd
from splice.ipam.cluster.errors import ClusterConfigError
from splice.ipam import errors as ie


def test_parse_etcd(tmp_path):
    assert parse_etcd({"endpoints": ["http://10.0.0.1:2379", "http://10.0.0.1:2379/", "http://h2"]}) == EtcdConfig(
        ("http://10.0.0.1:2379", "http://h2:2379"))
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for f in (ca, cert, key):
        f.write_text("x")
    c = parse_etcd({"endpoints": "https://a:1, https://b:2", "prefix": "/x/", "caFile": str(ca), "certFile": str(cert),
                    "keyFile": str(key), "timeout": 1})
    assert c == EtcdConfig(("https://a:1", "https://b:2"), "/x", str(ca), str(cert), str(key), 1.0)
    assert parse_etcd({"endpoints": ["http://a"], "prefix": "/"}).prefix == "/"


@pytest.mark.parametrize("raw, words", [
    (None, "expected an object"),
    ({}, "endpoints"),
    ({"endpoints": []}, "endpoints"),
    ({"endpoints": [5]}, "endpoints"),
    ({"endpoints": ["10.0.0.1:2379"]}, "http://HOST:PORT"),
    ({"endpoints": ["http://a"], "Endpoints": 1}, "unknown field"),
    ({"endpoints": ["http://a"], "prefix": "splice"}, "prefix"),
    ({"endpoints": ["http://a"], "caFile": "relative.pem"}, "absolute"),
    ({"endpoints": ["http://a"], "caFile": "/nonexistent/ca.pem"}, "no such file"),
    ({"endpoints": ["http://a"], "certFile": "/etc/hostname"}, "both certFile and keyFile"),
    ({"endpoints": ["http://a"], "timeout": 0}, "timeout"),
    ({"endpoints": ["http://a"], "timeout": True}, "timeout"),
])
def test_parse_etcd_errors(raw, words):
    with pytest.raises(ClusterConfigError, match=words) as ei:
        parse_etcd(raw)
    assert isinstance(ei.value, ie.IpamConfigError)
