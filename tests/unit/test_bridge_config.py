"""parse_bridge_config: every option of the reference bridge, defaults, every error."""

from __future__ import annotations

import dataclasses

import pytest

from splice.plugins.bridge.config import BridgeConfig, parse_bridge_config
from splice.plugins.errors import ConfigError, UnsupportedField

pytestmark = pytest.mark.timeout(10)

BASE = {"cniVersion": "1.1.0", "name": "net1", "type": "splice-bridge"}


def parse(**kw) -> BridgeConfig:
    return parse_bridge_config({**BASE, **kw})


def fails(match: str, cls: type = ConfigError, **kw) -> ConfigError:
    with pytest.raises(cls, match=match) as info:
        parse(**kw)
    return info.value


# -- defaults -------------------------------------------------------------------------
def test_defaults():
    cfg = parse()
    assert cfg == BridgeConfig()
    assert cfg.bridge == "cni0"
    assert not (cfg.is_gateway or cfg.is_default_gateway or cfg.force_address or cfg.ip_masq)
    assert cfg.ip_masq_backend == "nftables"
    assert cfg.mtu is None
    assert not (cfg.hairpin_mode or cfg.promisc_mode)
    assert cfg.vlan == 0 and cfg.vlan_trunk == ()
    assert cfg.preserve_default_vlan is True  # the reference code's default
    assert not (cfg.enable_dad or cfg.mac_spoof_check or cfg.disable_container_interface or cfg.port_isolation)
    assert not cfg.vlan_filtering
    assert cfg.vlan_gateway_ifname is None


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse().bridge = "x"  # type: ignore[misc]


def test_foreign_and_unknown_keys_are_ignored():
    cfg = parse(
        ipam={"type": "host-local", "subnet": "10.1.0.0/24"},
        dns={"nameservers": ["1.1.1.1"]},
        runtimeConfig={"mac": "02:00:00:00:00:01", "portMappings": []},
        args={"cni": {"mac": "02:00:00:00:00:02"}},
        prevResult={"interfaces": []},
        capabilities={"mac": True},
        **{"cni.dev/valid-attachments": [], "somethingElse": 1},
    )
    assert cfg == BridgeConfig()


def test_not_a_dict():
    with pytest.raises(ConfigError, match="JSON object"):
        parse_bridge_config(["bridge"])  # type: ignore[arg-type]


# -- bridge --------------------------------------------------------------------------
def test_bridge_name():
    assert parse(bridge="mybr0").bridge == "mybr0"
    assert parse(bridge=None).bridge == "cni0"
    assert parse(bridge="a" * 15).bridge == "a" * 15


@pytest.mark.parametrize(
    "name, why",
    [("", "empty"), ("a" * 16, "longer than 15"), ("a/b", "'/'"), ("a b", "' '"), ("a:b", "':'"), (".", "'.'"),
     ("..", "'.'"), ("tab\t", "'\\\\t'")],
)
def test_bridge_name_invalid(name, why):
    err = fails(why, bridge=name)
    assert "bridge" in err.msg and repr(name)[:20] in err.msg


def test_bridge_name_type():
    fails("bridge 5 is not a valid interface name: it must be a string", bridge=5)


# -- booleans -------------------------------------------------------------------------
BOOLS = {
    "isGateway": "is_gateway",
    "isDefaultGateway": "is_default_gateway",
    "forceAddress": "force_address",
    "ipMasq": "ip_masq",
    "hairpinMode": "hairpin_mode",
    "promiscMode": "promisc_mode",
    "preserveDefaultVlan": "preserve_default_vlan",
    "enabledad": "enable_dad",
    "macspoofchk": "mac_spoof_check",
    "disableContainerInterface": "disable_container_interface",
    "portIsolation": "port_isolation",
}


@pytest.mark.parametrize("key, attr", BOOLS.items())
def test_bool_options(key, attr):
    assert getattr(parse(**{key: True}), attr) is True
    assert getattr(parse(**{key: False}), attr) is False


@pytest.mark.parametrize("key", BOOLS)
@pytest.mark.parametrize("bad", ["true", 1, 0, [], {}])
def test_bool_wrong_type(key, bad):
    err = fails(f"{key} must be a boolean, got {bad!r}".replace("[", r"\[").replace("]", r"\]"), **{key: bad})
    assert key in err.msg


def test_null_bools_are_defaults():
    cfg = parse(isGateway=None, preserveDefaultVlan=None)
    assert cfg.is_gateway is False and cfg.preserve_default_vlan is True


def test_default_gateway_implies_gateway():
    cfg = parse(isDefaultGateway=True)
    assert cfg.is_gateway and cfg.is_default_gateway
    cfg = parse(isGateway=True)
    assert cfg.is_gateway and not cfg.is_default_gateway


def test_preserve_default_vlan_false():
    assert parse(preserveDefaultVlan=False).preserve_default_vlan is False


# -- ipMasqBackend -------------------------------------------------------------------
def test_masq_backend_nftables():
    cfg = parse(ipMasq=True, ipMasqBackend="nftables")
    assert cfg.ip_masq and cfg.ip_masq_backend == "nftables"


def test_masq_backend_iptables_with_masq_is_unsupported():
    err = fails("nftables only", UnsupportedField, ipMasq=True, ipMasqBackend="iptables")
    assert "ipMasqBackend" in err.msg and "iptables" in err.msg


def test_masq_backend_iptables_without_masq_is_harmless():
    assert parse(ipMasqBackend="iptables").ip_masq_backend == "nftables"


@pytest.mark.parametrize("bad, match", [("pf", "ipMasqBackend must be .* got 'pf'"), (3, "ipMasqBackend must be a string, got 3")])
def test_masq_backend_invalid(bad, match):
    fails(match, ipMasqBackend=bad)


# -- mtu -------------------------------------------------------------------------------
def test_mtu():
    assert parse(mtu=1400).mtu == 1400
    assert parse(mtu=0).mtu is None
    assert parse(mtu=68).mtu == 68 and parse(mtu=65535).mtu == 65535


@pytest.mark.parametrize("bad, match", [(67, "between 68 and 65535"), (65536, "got 65536"), (-1, "got -1"),
                                        ("1500", "mtu must be an integer, got '1500'"), (1500.0, "integer"),
                                        (True, "integer")])
def test_mtu_invalid(bad, match):
    fails(match, mtu=bad)


# -- hairpin / promisc -------------------------------------------------------------------
def test_hairpin_and_promisc_conflict():
    err = fails("hairpinMode and promiscMode", hairpinMode=True, promiscMode=True)
    assert "cannot both be true" in err.msg


# -- vlan ------------------------------------------------------------------------------------
def test_vlan():
    cfg = parse(vlan=100)
    assert cfg.vlan == 100 and cfg.vlan_filtering
    assert parse(vlan=4094).vlan == 4094
    assert parse(vlan=0).vlan == 0 and not parse(vlan=0).vlan_filtering


@pytest.mark.parametrize("bad, match", [(-1, "between 0 and 4094, got -1"), (4095, "got 4095"),
                                        ("5", "vlan must be an integer, got '5'"), (False, "integer")])
def test_vlan_invalid(bad, match):
    fails(match, vlan=bad)


def test_vlan_trunk_ids_and_ranges():
    cfg = parse(vlanTrunk=[{"id": 42}, {"minID": 100, "maxID": 103}, {"id": 101}, {"id": 7, "minID": 9, "maxID": 9}])
    assert cfg.vlan_trunk == (7, 9, 42, 100, 101, 102, 103)
    assert cfg.vlan_filtering


def test_vlan_trunk_empty_or_null():
    assert parse(vlanTrunk=[]).vlan_trunk == ()
    assert parse(vlanTrunk=None).vlan_trunk == ()
    assert not parse(vlanTrunk=[]).vlan_filtering


def test_vlan_trunk_ignores_unknown_item_keys():
    assert parse(vlanTrunk=[{"id": 5, "comment": "x"}]).vlan_trunk == (5,)


@pytest.mark.parametrize(
    "trunk, match",
    [
        ({"id": 5}, r"vlanTrunk must be a list"),
        ([5], r"vlanTrunk\[0\] must be an object"),
        ([{"id": 0}], r"vlanTrunk\[0\]\.id must be between 1 and 4094, got 0"),
        ([{"id": 4095}], r"vlanTrunk\[0\]\.id must be between 1 and 4094, got 4095"),
        ([{"id": "5"}], r"vlanTrunk\[0\]\.id must be an integer, got '5'"),
        ([{"id": 1}, {"minID": 0, "maxID": 5}], r"vlanTrunk\[1\]\.minID must be between 1 and 4094, got 0"),
        ([{"minID": 5, "maxID": 4095}], r"vlanTrunk\[0\]\.maxID must be between 1 and 4094, got 4095"),
        ([{"minID": 10, "maxID": 5}], r"vlanTrunk\[0\]: minID 10 is greater than maxID 5"),
        ([{"minID": 10}], r"vlanTrunk\[0\]: minID and maxID must be given together \(maxID is missing\)"),
        ([{"maxID": 10}], r"minID is missing"),
        ([{}], r"vlanTrunk\[0\] needs \"id\" or \"minID\"/\"maxID\""),
        ([{"minId": 1, "maxId": 3}], r"needs \"id\""),
    ],
)
def test_vlan_trunk_invalid(trunk, match):
    fails(match, vlanTrunk=trunk)


def test_vlan_with_trunk_is_native_plus_tagged():
    cfg = parse(vlan=10, vlanTrunk=[{"id": 20}])
    assert cfg.vlan == 10 and cfg.vlan_trunk == (20,)


def test_vlan_also_in_trunk():
    fails("vlan 10 is also listed in vlanTrunk", vlan=10, vlanTrunk=[{"minID": 5, "maxID": 15}])


def test_vlan_gateway_interface_name():
    cfg = parse(bridge="br0", vlan=100, isGateway=True)
    assert cfg.vlan_gateway_ifname == "br0.100"


def test_vlan_gateway_interface_name_too_long():
    err = fails("gateway interface name 'bridge-longer.100'", bridge="bridge-longer", vlan=100, isGateway=True)
    assert "shorter bridge name" in err.msg
    # without isGateway the long name is fine (no gateway interface is made)
    assert parse(bridge="bridge-longer", vlan=100).vlan == 100


# -- disableContainerInterface ---------------------------------------------------------------
def test_disable_container_interface_without_ipam():
    assert parse(disableContainerInterface=True).disable_container_interface
    assert parse(disableContainerInterface=True, ipam={}).disable_container_interface


def test_disable_container_interface_with_ipam():
    err = fails("disableContainerInterface cannot be used with IPAM", disableContainerInterface=True,
                ipam={"type": "splice-ipam", "subnet": "10.1.0.0/24"})
    assert "'splice-ipam'" in err.msg


# -- everything together --------------------------------------------------------------------
def test_full_config():
    cfg = parse(
        bridge="br-full",
        isGateway=True,
        isDefaultGateway=True,
        forceAddress=True,
        ipMasq=True,
        ipMasqBackend="nftables",
        mtu=9000,
        hairpinMode=True,
        vlan=3,
        vlanTrunk=[{"id": 4}],
        preserveDefaultVlan=False,
        enabledad=True,
        macspoofchk=True,
        portIsolation=True,
        ipam={"type": "splice-ipam"},
    )
    assert cfg == BridgeConfig(
        bridge="br-full", is_gateway=True, is_default_gateway=True, force_address=True, ip_masq=True,
        ip_masq_backend="nftables", mtu=9000, hairpin_mode=True, promisc_mode=False, vlan=3, vlan_trunk=(4,),
        preserve_default_vlan=False, enable_dad=True, mac_spoof_check=True, disable_container_interface=False,
        port_isolation=True,
    )
