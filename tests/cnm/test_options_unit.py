"""Option translation and the state files, without root or a kernel."""

from __future__ import annotations

import json
import os
import stat

import pytest

from splice.plugins.bridge.config import parse_bridge_config
from splice.plugins.cnm.options import KINDS, translate
from splice.plugins.cnm.state import StateDir, check_id
from splice.plugins.errors import ConfigError, UnsupportedField

NID = "445788ebb073b47f0bfc35f50a3343a2c2b2c3744833b1d2dbbf7b27f3737a2c"


def _bridge(generic=None, **opts):
    o = {"com.docker.network.generic": generic or {}, **opts}
    return translate(KINDS["bridge"], NID, o, has_gateway=True)


def test_bridge_defaults_are_dockers():
    t = _bridge()
    assert t.config == {"bridge": "br-445788ebb073", "isGateway": True, "isDefaultGateway": False, "ipMasq": True}
    assert not t.internal and t.dst_prefix == "eth" and t.host_binding_ipv4 is None
    parse_bridge_config(t.config)


def test_bridge_options():
    t = _bridge({"com.docker.network.bridge.name": "docker1", "com.docker.network.bridge.enable_icc": "false",
                 "com.docker.network.bridge.enable_ip_masquerade": "0", "com.docker.network.driver.mtu": "9000",
                 "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1", "splice.hairpinMode": "true",
                 "splice.vlanTrunk": '[{"id": 5}]'})
    assert t.config == {"bridge": "docker1", "isGateway": True, "isDefaultGateway": False, "ipMasq": False,
                        "portIsolation": True, "mtu": 9000, "hairpinMode": True, "vlanTrunk": [{"id": 5}]}
    assert t.host_binding_ipv4 == "127.0.0.1"
    cfg = parse_bridge_config(t.config)
    assert cfg.port_isolation and cfg.mtu == 9000 and cfg.vlan_trunk == (5,)


def test_internal_means_no_masquerade():
    t = _bridge(**{"com.docker.network.internal": True, "com.docker.network.enable_ipv6": True})
    assert t.internal and t.ipv6 and t.config["ipMasq"] is False


@pytest.mark.parametrize("generic, cls, words", [
    ({"com.docker.network.bridge.enable_icc": "yes"}, ConfigError, ["enable_icc", "boolean"]),
    ({"com.docker.network.driver.mtu": "1.5k"}, ConfigError, ["mtu", "integer"]),
    ({"com.docker.network.bridge.name": 7}, ConfigError, ["bridge.name", "string"]),
    ({"com.docker.network.bridge.inhibit_ipv4": "true"}, UnsupportedField, ["inhibit_ipv4", "not supported"]),
    ({"splice.bogus": "1"}, UnsupportedField, ["splice.bogus"]),
    ({"com.docker.network.container_iface_prefix": "e/th"}, ConfigError, ["container_iface_prefix"]),
])
def test_bad_options(generic, cls, words):
    with pytest.raises(cls) as e:
        _bridge(generic)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_bad_values_reach_the_drivers_parser():
    with pytest.raises(ConfigError, match="mtu"):
        parse_bridge_config(_bridge({"com.docker.network.driver.mtu": "10"}).config)
    with pytest.raises(ConfigError, match="vlan"):
        parse_bridge_config(_bridge({"splice.vlan": "\"ten\""}).config)


def test_lower_device_kinds():
    t = translate(KINDS["macvlan"], NID, {"com.docker.network.generic": {"parent": "eth0.10", "macvlan_mode": "vepa",
                                                                         "com.docker.network.driver.mtu": "1400"}}, True)
    assert t.config == {"master": "eth0.10", "mode": "vepa", "mtu": 1400}
    t = translate(KINDS["ipvlan"], NID, {"com.docker.network.generic": {"parent": "eth0", "ipvlan_mode": "l3",
                                                                        "ipvlan_flag": "private"}}, True)
    assert t.config == {"master": "eth0", "mode": "l3", "flag": "private"}
    with pytest.raises(ConfigError, match="parent"):
        translate(KINDS["macvlan"], NID, {}, True)
    with pytest.raises(UnsupportedField):
        translate(KINDS["macvlan"], NID, {"com.docker.network.generic": {"parent": "eth0", "splice.x": "1"}}, True)
    # the bridge namespace means nothing to a macvlan network: ignored, as Docker's drivers do
    t = translate(KINDS["macvlan"], NID, {"com.docker.network.generic": {"parent": "eth0",
                                                                         "com.docker.network.bridge.name": "x"}}, True)
    assert t.config == {"master": "eth0"}


def test_state_dir(tmp_path):
    s = StateDir(str(tmp_path / "st"))
    assert stat.S_IMODE(os.stat(tmp_path / "st").st_mode) == 0o700
    s.put("networks", NID, {"id": NID, "x": [1, 2]})
    path = tmp_path / "st" / "networks" / f"{NID}.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {"id": NID, "x": [1, 2]}
    s.put("networks", NID, {"id": NID, "x": 3})
    (tmp_path / "st" / "networks" / f"{NID}.json.77.tmp").write_text("{half")  # a crash mid-write
    (tmp_path / "st" / "networks" / "bad.json").write_text("[")
    assert list(StateDir(str(tmp_path / "st")).load("networks")) == [(NID, {"id": NID, "x": 3})]
    assert not (tmp_path / "st" / "networks" / f"{NID}.json.77.tmp").exists()
    s.delete("networks", NID)
    s.delete("networks", NID)
    with pytest.raises(ValueError):
        s.put("networks", "../x", {})
    for bad in ("", ".hidden", "a/b", "x" * 129, 5, None):
        with pytest.raises(ValueError):
            check_id(bad, "NetworkID")


def test_network_records_are_durable_endpoint_records_are_not(tmp_path, monkeypatch):
    """fsync for network records (they must outlive a power loss: dockerd never re-sends
    CreateNetwork), none for endpoint records (they die with what they describe)."""
    import os

    s = StateDir(str(tmp_path / "st"))
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    s.put("endpoints", "e" * 64, {"id": "e"})
    s.delete("endpoints", "e" * 64)
    assert synced == []
    s.put("networks", NID, {"id": NID})
    assert len(synced) == 2  # the file, then the directory
    assert [k for k, _ in StateDir(str(tmp_path / "st")).load("networks")] == [NID]
