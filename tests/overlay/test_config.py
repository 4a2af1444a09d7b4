"""parse_vxlan_config: pure validation (no root, no etcd)."""

from __future__ import annotations

import pytest

from splice.plugins import errors as pe
from splice.plugins.vxlan.config import parse_vxlan_config

BASE = {"name": "ovl", "type": "splice-vxlan", "vni": 7, "clusterCIDR": "10.244.0.0/16",
        "etcd": {"endpoints": ["http://10.0.0.1:2379"]}}


def code(exc) -> int:
    return pe.classify(exc)[0]


def test_defaults():
    c = parse_vxlan_config(BASE)
    assert (c.vni, c.port, c.subnet_len, c.mtu, c.bridge, c.device, c.vtep_interface) == (
        7, 4789, 24, None, "spvxbr7", "spvx7", None)
    assert c.is_default_gateway and not c.ip_masq and c.lease_ttl == 20
    assert c.etcd.endpoints == ("http://10.0.0.1:2379",) and c.etcd.prefix == "/splice"


@pytest.mark.parametrize("change, words", [
    ({"vni": None}, "vni is required"),
    ({"vni": 0}, "vni must be between"),
    ({"vni": 1 << 24}, "vni must be between"),
    ({"vni": "7"}, "vni must be an integer"),
    ({"port": 70000}, "port must be between"),
    ({"mtu": 20}, "mtu must be between"),
    ({"clusterCIDR": None}, "clusterCIDR is required"),
    ({"clusterCIDR": "10.244.0.1/16"}, "clusterCIDR"),
    ({"subnetLen": 31}, "subnetLen"),
    ({"etcd": None}, "etcd"),
    ({"etcd": {"endpoints": []}}, "endpoints"),
    ({"device": "x" * 16}, "device"),
    ({"bridge": "spvx7"}, "must differ"),
    ({"ipam": {"type": "host-local"}}, "splice-ipam"),
    ({"ipam": {"type": "splice-ipam", "ranges": [[{"subnet": "10.1.0.0/24"}]]}}, "leased subnet"),
    ({"leaseTTL": 1}, "leaseTTL"),
    ({"ipMasq": "yes"}, "ipMasq must be a boolean"),
])
def test_config_errors_are_code_7(change, words):
    conf = {**BASE, **change}
    if change.get("etcd", 1) is None:
        del conf["etcd"]
    with pytest.raises(Exception) as e:
        parse_vxlan_config(conf)
    assert code(e.value) == 7 and words in str(e.value), e.value


@pytest.mark.parametrize("key, value", [("vlan", 10), ("promiscMode", True), ("isGateway", False),
                                        ("ipMasqBackend", "iptables")])
def test_unsupported_fields_are_code_2(key, value):
    with pytest.raises(pe.UnsupportedField) as e:
        parse_vxlan_config({**BASE, key: value})
    assert code(e.value) == 2 and key in str(e.value)


def test_error_rows():
    from splice.ipam.cluster.errors import SubnetTaken

    assert code(pe.NotAvailable("x")) == 50 and code(pe.LimitedConnectivity("x")) == 51
    assert code(pe.AgentRequired("x")) == 108 and code(SubnetTaken("x")) == 50
