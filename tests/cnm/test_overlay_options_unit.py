"""splice-overlay's option table (no root): Docker's ``-o splice.<key>`` strings become the vxlan
driver's config keys, validated by its parse_config."""

from __future__ import annotations

import pytest

from splice.ipam.cluster.errors import ClusterConfigError
from splice.plugins.cnm.options import KINDS, translate
from splice.plugins.errors import ConfigError, UnsupportedField
from splice.plugins.vxlan.config import parse_vxlan_config

KIND = KINDS["vxlan"]
NID = "a" * 64
ETCD = '{"endpoints": ["http://10.0.0.1:2379"], "prefix": "/p"}'


def opts(internal: bool = False, **generic) -> dict:
    o = {"com.docker.network.generic": {"splice.vni": "42", "splice.etcd": ETCD, **generic}}
    if internal:
        o["com.docker.network.internal"] = True
    return o


def test_kind_entry():
    assert KIND.plugin == "splice-overlay" and KIND.overlay and not KIND.bridge and KIND.report_mac


def test_translate_and_parse():
    out = translate(KIND, NID, opts(**{"splice.subnetLen": "26", "splice.port": "8472", "splice.mtu": "1400",
                                       "splice.vtepInterface": "eth1", "com.docker.network.driver.mtu": "0"}),
                    has_gateway=True)
    cfg = out.config
    assert cfg["vni"] == 42 and cfg["etcd"]["endpoints"] == ["http://10.0.0.1:2379"]
    assert cfg["name"] == "vxlan42" and cfg["ipMasq"] is True and cfg["isDefaultGateway"] is False
    cfg["clusterCIDR"] = "10.244.0.0/16"  # the front-end sets it from the network's pool
    v = parse_vxlan_config(cfg)
    assert (v.network, v.vni, v.subnet_len, v.port, v.mtu, v.vtep_interface) == ("vxlan42", 42, 26, 8472, 1400, "eth1")
    assert v.etcd.prefix == "/p" and v.ip_masq and not v.is_default_gateway


def test_name_masq_internal():
    cfg = translate(KIND, NID, opts(**{"splice.name": "prod", "splice.ipMasq": "false"}), has_gateway=True).config
    assert cfg["name"] == "prod" and cfg["ipMasq"] is False
    cfg = translate(KIND, NID, opts(internal=True), has_gateway=True).config
    assert cfg["ipMasq"] is False
    cfg = translate(KIND, NID, opts(**{"com.docker.network.driver.mtu": "1400"}), has_gateway=True).config
    assert cfg["mtu"] == 1400


def test_refusals():
    with pytest.raises(UnsupportedField, match="splice.vlan"):
        translate(KIND, NID, opts(**{"splice.vlan": "3"}), has_gateway=True)
    with pytest.raises(ConfigError, match="boolean"):
        translate(KIND, NID, opts(**{"splice.ipMasq": "maybe"}), has_gateway=True)
    cfg = translate(KIND, NID, {"com.docker.network.generic": {"splice.etcd": ETCD}}, has_gateway=True).config
    cfg["clusterCIDR"] = "10.244.0.0/16"
    with pytest.raises(ConfigError, match="vni is required"):
        parse_vxlan_config(cfg)
    for key, value, text in (("splice.vni", "16777216", "vni"), ("splice.subnetLen", "15", "subnetLen"),
                             ("splice.etcd", '{"endpoints": []}', "endpoints")):
        cfg = translate(KIND, NID, opts(**{key: value}), has_gateway=True).config
        cfg["clusterCIDR"] = "10.244.0.0/16"
        with pytest.raises((ConfigError, ClusterConfigError), match=text):  # both code 7 / HTTP 400
            parse_vxlan_config(cfg)
