"""splice-portmap configuration, mapping expansion and plugin helpers (no root, no kernel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import ip_address, ip_interface

import pytest

from splice.libnet.portmap.model import Published, cond_chain, interface_needs, users_counter
from splice.plugins.portmap.conditions import check_conditions
from splice.plugins.portmap.mapping import PortMapping, PortMappingError, expand
from splice.plugins.cni.portmap_plugin import sandbox_addresses
from splice.plugins.errors import ConfigError, UnsupportedField
from splice.plugins.portmap.config import PortmapOptions, parse_portmap_config
from splice.plugins.portmap.driver import describe_owner, gc_prefix, owner_tag


def conf(**kw) -> dict:
    c = {"cniVersion": "1.0.0", "name": "net1", "type": "splice-portmap"}
    c.update(kw)
    return c


def rc(*entries) -> dict:
    return {"portMappings": list(entries)}


def test_defaults_are_the_references():
    cfg = parse_portmap_config(conf())
    assert (cfg.network, cfg.snat, cfg.masq_all, cfg.conditions_v4, cfg.conditions_v6, cfg.mappings) == (
        "net1", True, False, (), (), ())
    assert cfg.options == PortmapOptions() == PortmapOptions(True, False, (), ())
    assert cfg.options != PortmapOptions(snat=False)


def test_mappings_are_parsed():
    cfg = parse_portmap_config(conf(runtimeConfig=rc(
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 53, "containerPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
        {"hostPort": 3868, "containerPort": 3868, "protocol": "sctp", "hostIP": "fd00::1"},
        {"hostPort": 9000, "containerPort": 90, "hostIP": ""},
    )))
    assert cfg.mappings == (
        PortMapping(8080, 80, "tcp"),
        PortMapping(53, 53, "udp", ip_address("127.0.0.1")),
        PortMapping(3868, 3868, "sctp", "fd00::1"),
        PortMapping(9000, 90, "tcp", None),
    )
    assert parse_portmap_config(conf(runtimeConfig={})).mappings == ()
    assert parse_portmap_config(conf(runtimeConfig={"portMappings": None})).mappings == ()


@pytest.mark.parametrize("entry, msg", [
    ({"hostPort": 0, "containerPort": 80}, "Invalid host port number: 0"),
    ({"hostPort": 80, "containerPort": -1}, "Invalid container port number: -1"),
    ({"hostPort": 70000, "containerPort": 80}, "Invalid host port number: 70000"),
    ({"hostPort": "80", "containerPort": 80}, "hostPort must be an integer"),
    ({"hostPort": True, "containerPort": 80}, "hostPort must be an integer"),
    ({"containerPort": 80}, "hostPort is missing"),
    ({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}, "invalid protocol 'icmp'"),
    ({"hostPort": 80, "containerPort": 80, "protocol": 6}, "protocol must be a string"),
    ({"hostPort": 80, "containerPort": 80, "hostIP": "not-an-ip"}, "invalid hostIP 'not-an-ip'"),
    ({"hostPort": 80, "containerPort": 80, "hostIP": 1}, "hostIP must be a string"),
    ("8080:80", "expected an object"),
])
def test_bad_mappings(entry, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_portmap_config(conf(runtimeConfig=rc(entry)))


@pytest.mark.parametrize("extra, exc, msg", [
    ({"snat": "true"}, ConfigError, "snat must be a boolean"),
    ({"masqAll": 1}, ConfigError, "masqAll must be a boolean"),
    ({"backend": "iptables"}, UnsupportedField, "backend: 'iptables' is not supported"),
    ({"backend": "ebtables"}, ConfigError, "backend must be 'nftables'"),
    ({"externalSetMarkChain": "KUBE-MARK-MASQ"}, UnsupportedField, "externalSetMarkChain"),
    ({"externalSetMarkChain": "X", "markMasqBit": 13}, ConfigError, "Cannot specify externalSetMarkChain and markMasqBit"),
    ({"markMasqBit": 32}, ConfigError, "MasqMarkBit must be between 0 and 31"),
    ({"markMasqBit": "13"}, ConfigError, "markMasqBit must be an integer"),
    ({"conditionsV4": "ip saddr 1.2.3.4"}, ConfigError, "conditionsV4 must be a list"),
    ({"conditionsV6": ["ip6 saddr ::1; flush ruleset"]}, ConfigError, "must not contain ';'"),
    ({"conditionsV4": ["ip saddr 1.2.3.4\nflush ruleset"]}, ConfigError, "must not contain"),
    ({"conditionsV4": [""]}, ConfigError, "non-empty string"),
    ({"runtimeConfig": []}, ConfigError, "runtimeConfig must be an object"),
    ({"runtimeConfig": {"portMappings": {}}}, ConfigError, "portMappings must be a list"),
    ({"name": ""}, ConfigError, "missing network name"),
])
def test_bad_options(extra, exc, msg):
    with pytest.raises(exc, match=msg):
        parse_portmap_config(conf(**extra))


def test_accepted_options():
    cfg = parse_portmap_config(conf(snat=False, masqAll=True, backend="nftables", markMasqBit=13,
                                    conditionsV4=["ip saddr 10.0.0.0/8", " iifname eth0 "], conditionsV6=None))
    assert (cfg.snat, cfg.masq_all, cfg.mark_masq_bit) == (False, True, 13)
    assert cfg.conditions_v4 == ("ip saddr 10.0.0.0/8", "iifname eth0")
    assert cfg.conditions_v6 == ()


A = [ip_interface("10.1.0.2/24"), ip_interface("fd01::2/64")]


def test_expand_families_and_host_ips():
    got = expand([PortMapping(80, 8080), PortMapping(81, 81, host_ip="0.0.0.0"), PortMapping(82, 82, host_ip="::"),
                  PortMapping(83, 83, host_ip="192.0.2.1"), PortMapping(84, 84, host_ip="fd01::1")], A)
    assert [str(p) for p in got] == [
        "*:80/tcp -> 10.1.0.2:8080", "*:81/tcp -> 10.1.0.2:81", "192.0.2.1:83/tcp -> 10.1.0.2:83",
        "*:80/tcp -> [fd01::2]:8080", "*:82/tcp -> [fd01::2]:82", "[fd01::1]:84/tcp -> [fd01::2]:84"]
    assert [p.map for p in got] == ["dnat4", "dnat4", "dnat4_ip", "dnat6", "dnat6", "dnat6_ip"]
    # the first address of each family, link-local skipped; a family missing -> no element
    got = expand([PortMapping(80, 80), PortMapping(83, 83, host_ip="fd01::1")],
                 [ip_interface("fe80::1/64"), "10.1.0.2/24", "10.1.0.3/24"])
    assert [str(p) for p in got] == ["*:80/tcp -> 10.1.0.2:80"]
    assert expand([PortMapping(80, 80)], []) == []


def test_expand_rejects_contradictions():
    with pytest.raises(PortMappingError, match="mapped twice"):
        expand([PortMapping(80, 80), PortMapping(80, 81)], A)
    with pytest.raises(PortMappingError, match="both on every IPv6 address and on a given address"):
        expand([PortMapping(80, 80, host_ip="::"), PortMapping(80, 80, host_ip="fd01::1")], A)
    assert len(expand([PortMapping(80, 80), PortMapping(80, 80, "udp")], A)) == 4  # other protocol: fine


def test_published_keys_and_values():
    p = Published("udp", 53, ip_address("192.0.2.1"), ip_address("10.1.0.2"), 5353)
    assert p.key() == {"concat": ["192.0.2.1", "udp", 53]} and p.data() == {"concat": ["10.1.0.2", 5353]}
    assert p == Published("udp", 53, ip_address("192.0.2.1"), ip_address("10.1.0.2"), 5353)
    assert len({p, Published("udp", 53, ip_address("192.0.2.1"), ip_address("10.1.0.2"), 5353)}) == 1
    with pytest.raises(AttributeError):
        p.host_port = 1  # type: ignore[misc]
    assert users_counter(4, "br0", False) == "users4:br0" and users_counter(6, "br0", True) == "all6:br0"
    assert users_counter(4, None, False) == "users4:"
    assert interface_needs({"users6:br0": 1}, "br0") == {
        "hairpin": True, "localhost": False, "masq_all": False, "localnet": False}
    assert interface_needs({"all4:br0": 2, "users4:br1": 1}, "br0") == {
        "hairpin": True, "localhost": False, "masq_all": True, "localnet": True}
    assert not any(interface_needs({"users4:br1": 1}, "br0").values())
    assert cond_chain(4, ["a"]) != cond_chain(4, ["b"]) and cond_chain(4, ["a"]).startswith("cond4-")
    assert check_conditions([" ip saddr 1.2.3.4 "]) == ("ip saddr 1.2.3.4",)


def test_sandbox_addresses_follow_the_reference():
    result = {"interfaces": [{"name": "br0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/ns"},
                             {"name": "eth1", "sandbox": "/ns"}],
              "ips": [{"address": "10.1.0.2/24", "interface": 2}, {"address": "10.9.0.1/24", "interface": 0},
                      {"address": "10.2.0.2/24", "interface": 3}, {"address": "fd01::2/64"}]}
    assert sandbox_addresses(result, "eth0") == [ip_interface("10.1.0.2/24"), ip_interface("fd01::2/64")]
    assert sandbox_addresses(None, "eth0") is None
    assert sandbox_addresses({"ips": []}, "eth0") == []


def test_owner_tags():
    assert owner_tag("net1", "c1", "eth0") == f"{gc_prefix('net1')}c1 eth0"
    assert len(gc_prefix("net1")) == 9
    assert describe_owner("1234abcd c1 eth0") == "container c1 (interface eth0, network 1234abcd)"
    assert describe_owner(None) == "another container"
    long = owner_tag("net1", "c" * 300, "eth0")
    assert len(long.encode()) == 127


def test_version_and_module_stay_light():
    """VERSION loads the plugin module only: no nftables, pyroute2, config or driver."""
    code = ("import sys; import splice.plugins.cni.portmap_plugin as m; "
            "print(sorted(x for x in ('nftables', 'pyroute2', 'splice.libnet.portmap', 'splice.libnet.portmap.model', "
            "'splice.plugins.portmap.config', 'splice.plugins.portmap.driver') if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    exe = os.path.join(os.path.dirname(sys.executable), "splice-portmap")
    if os.access(exe, os.X_OK):
        p = subprocess.run([exe], input=b'{"cniVersion":"0.4.0"}', capture_output=True,
                           env={**os.environ, "CNI_COMMAND": "VERSION", "SPLICE_AGENT_SOCKET": "/nonexistent"})
        assert json.loads(p.stdout)["supportedVersions"] == ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def test_in_process_add_without_prev_result_and_passthrough():
    """The CNI plugin through run_plugin, with no kernel work (no mappings or no prevResult)."""
    import io

    from splice.plugins.cni.portmap_plugin import PortmapPlugin
    from splice.plugins.cni.skel import run_plugin

    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/1/ns/net", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/x", "CNI_NETNS_OVERRIDE": "1"}
    out = io.StringIO()
    rc_ = run_plugin(PortmapPlugin(), env=env, stdin=io.BytesIO(json.dumps(conf()).encode()), stdout=out)
    assert rc_ == 1 and json.loads(out.getvalue())["msg"] == "must be called as chained plugin"
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.1.0.2/24", "interface": 0, "gateway": "10.1.0.1"}]}
    out = io.StringIO()
    rc_ = run_plugin(PortmapPlugin(), env=env, stdin=io.BytesIO(json.dumps(conf(prevResult=prev)).encode()), stdout=out)
    assert rc_ == 0 and json.loads(out.getvalue()) == {**prev, "routes": [], "dns": {}} or \
        json.loads(out.getvalue())["ips"] == prev["ips"]
    out = io.StringIO()
    run_plugin(PortmapPlugin(), env={**env, "CNI_COMMAND": "DEL"},
               stdin=io.BytesIO(json.dumps(conf()).encode()), stdout=out)
    assert out.getvalue() == ""  # DEL without mappings: nothing to do


def test_fast_path_pairs_are_the_owned_table_base_pairs():
    """builders writes the ownership pairs without loading nftowned; they must be the
    ones the owned-table base (state.T) reads, checks and deletes."""
    from splice.libnet.portmap import builders, model, state

    keys = [("dnat4", {"concat": ["tcp", 8080]}), ("dnat4", ("tcp", 8080)), ("dnat6_ip", ("fd00::1", 132, 80)),
            ("ifrefs4", {"concat": ["br0", "10.0.0.2", "10.0.0.2"]}), ("refs4", ("10.0.0.2", "10.0.0.2")),
            ("cond4", {"concat": ["udp", 53]})]
    for m, k in keys:
        assert model.key_digest(m, k) == state.T.key_digest(m, k)
        assert builders.owner_pair(m, k, "n1 c1 eth0") == state.T.pair(m, k, "n1 c1 eth0")
        assert builders.map_elem(m, k, "o", 1) == state.T.elem(m, k, "o", 1)
    assert model.key_digest("dnat4", ("tcp", 8080)) == model.key_digest("dnat4", (6, 8080))
