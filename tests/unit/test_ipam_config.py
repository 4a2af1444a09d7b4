"""splice.ipam.config: host-local compatible parsing, defaults and every error."""

from __future__ import annotations

import ipaddress

import pytest

from splice.ipam.config import DEFAULT_DATA_DIR, parse_ipam_config, store_location
from splice.ipam.errors import IpamConfigError

A = ipaddress.ip_address
N = ipaddress.ip_network


def parse(ipam: dict, network: str = "net1", override=None):
    return parse_ipam_config(ipam, network, override)


def one(ipam: dict):
    cfg = parse(ipam)
    assert len(cfg.range_sets) == 1 and len(cfg.range_sets[0].ranges) == 1
    return cfg.range_sets[0].ranges[0]


def test_ipv4_defaults():
    r = one({"ranges": [[{"subnet": "10.1.0.0/24"}]]})
    assert r.subnet == N("10.1.0.0/24")
    assert r.gateway == A("10.1.0.1")
    assert r.range_start == A("10.1.0.1")
    assert r.range_end == A("10.1.0.254")


def test_ipv6_defaults_last_address():
    r = one({"ranges": [[{"subnet": "fd00:1::/64"}]]})
    assert r.gateway == A("fd00:1::1")
    assert r.range_start == A("fd00:1::1")
    assert r.range_end == A("fd00:1::ffff:ffff:ffff:ffff")


def test_explicit_values_and_whitespace():
    r = one({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20",
                          "gateway": "10.1.0.254"}]]})
    assert (r.range_start, r.range_end, r.gateway) == (A("10.1.0.10"), A("10.1.0.20"), A("10.1.0.254"))


def test_legacy_top_level_keys():
    cfg = parse({"subnet": "10.2.0.0/16", "rangeStart": "10.2.1.0", "rangeEnd": "10.2.1.255", "gateway": "10.2.0.1"})
    (rs,) = cfg.range_sets
    (r,) = rs.ranges
    assert r.subnet == N("10.2.0.0/16") and r.range_start == A("10.2.1.0") and r.range_end == A("10.2.1.255")


def test_legacy_and_ranges_legacy_first():
    cfg = parse({"subnet": "10.2.0.0/24", "ranges": [[{"subnet": "fd00::/64"}]]})
    assert [rs.version for rs in cfg.range_sets] == [4, 6]


def test_dual_stack_and_multi_range_set():
    cfg = parse({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.2.0.0/24"}], [{"subnet": "fd00::/120"}]]})
    assert [len(rs.ranges) for rs in cfg.range_sets] == [2, 1]
    assert cfg.range_sets[0].contains(A("10.2.0.7")) and not cfg.range_sets[1].contains(A("10.2.0.7"))
    assert cfg.gateways == {(4, int(A("10.1.0.1"))), (4, int(A("10.2.0.1"))), (6, int(A("fd00::1")))}


def test_ranges_override_replaces_ranges():
    cfg = parse({"ranges": [[{"subnet": "10.1.0.0/24"}]], "subnet": "10.9.0.0/24"},
                override=[[{"subnet": "192.168.5.0/24"}]])
    assert [str(r.subnet) for rs in cfg.range_sets for r in rs.ranges] == ["192.168.5.0/24"]


def test_ranges_override_errors_name_iprangess():
    with pytest.raises(IpamConfigError, match=r"ipRanges\[0\]\[0\]\.subnet"):
        parse({"ranges": [[{"subnet": "10.1.0.0/24"}]]}, override=[[{"subnet": "nope/24"}]])


def test_data_dir_default_and_store_dir(tmp_path):
    assert parse({"subnet": "10.1.0.0/24"}).data_dir == DEFAULT_DATA_DIR
    cfg = parse({"subnet": "10.1.0.0/24", "dataDir": str(tmp_path)}, network="mynet")
    assert cfg.store_dir == str(tmp_path / "mynet")


def test_routes_dns_resolvconf():
    cfg = parse({"subnet": "10.1.0.0/24", "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.5",
                                                                            "priority": 10}],
                 "dns": {"nameservers": ["1.1.1.1"]}, "resolvConf": "/etc/resolv.conf"})
    assert [r.to_dict() for r in cfg.routes] == [{"dst": "0.0.0.0/0"},
                                                 {"dst": "10.9.0.0/16", "gw": "10.1.0.5", "priority": 10}]
    assert cfg.dns == {"nameservers": ["1.1.1.1"]}
    assert cfg.resolv_conf == "/etc/resolv.conf"  # accepted, ignored


def test_store_location_without_ranges(tmp_path):
    cfg = store_location({"dataDir": str(tmp_path), "ranges": "garbage"}, "n")
    assert cfg.range_sets == () and cfg.store_dir == str(tmp_path / "n")


@pytest.mark.parametrize(
    "ipam, match",
    [
        ({"ranges": [[{"subnet": "10.1.0.0/31"}]]}, r"ranges\[0\]\[0\]\.subnet: network 10.1.0.0/31 too small"),
        ({"ranges": [[{"subnet": "10.1.0.0/32"}]]}, r"too small to allocate from"),
        ({"ranges": [[{"subnet": "fd00::/127"}]]}, r"fd00::/127 too small to allocate from"),
        ({"ranges": [[{"subnet": "10.1.0.5/24"}]]}, r"subnet: '10.1.0.5/24' has host bits set"),
        ({"ranges": [[{"subnet": "10.1.0.0"}]]}, r"subnet: '10.1.0.0' needs a prefix length"),
        ({"ranges": [[{"subnet": "10.1.0.0/33"}]]}, r"subnet: invalid subnet '10.1.0.0/33'"),
        ({"ranges": [[{"subnet": 5}]]}, r"ranges\[0\]\[0\]\.subnet: missing or not a string"),
        ({"ranges": [[{}]]}, r"\.subnet: missing"),
        ({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}]]},
         r"ranges\[0\]\[0\]\.rangeStart: 10.2.0.1 is not in subnet 10.1.0.0/24"),
        ({"ranges": [[{"subnet": "10.1.0.0/24", "rangeEnd": "10.1.1.1"}]]}, r"rangeEnd: 10.1.1.1 is not in subnet"),
        ({"ranges": [[{"subnet": "10.1.0.0/24", "gateway": "10.9.0.1"}]]}, r"gateway: 10.9.0.1 is not in subnet"),
        ({"ranges": [[{"subnet": "10.1.0.0/24", "gateway": "fd00::1"}]]}, r"gateway: fd00::1 is not in subnet"),
        ({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.0"}]]}, r"rangeStart: 10.1.0.0 is the network"),
        ({"ranges": [[{"subnet": "10.1.0.0/24", "rangeEnd": "10.1.0.255"}]]}, r"rangeEnd: 10.1.0.255 is the broadcast"),
        ({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "bogus"}]]}, r"rangeStart: invalid IP address 'bogus'"),
        ({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.50", "rangeEnd": "10.1.0.40"}]]},
         r"ranges\[0\]\[0\]: rangeStart 10.1.0.50 is after rangeEnd 10.1.0.40"),
        ({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/25"}]]},
         r"ranges\[0\]\[0\] .* overlaps with ranges\[0\]\[1\]"),
        ({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.100"}],
                     [{"subnet": "10.1.0.0/24", "rangeEnd": "10.1.0.100"}]]},
         r"ranges\[0\]\[0\] .* overlaps with ranges\[1\]\[0\]"),
        ({"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.1.0.0/16"}]]}, r"ipam\[0\] .* overlaps with ranges\[0\]"),
        ({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]]}, r"ranges\[0\]: range set mixes IPv4 and IPv6"),
        ({"ranges": [[]]}, r"ranges\[0\]: empty range set"),
        ({"ranges": [{"subnet": "10.1.0.0/24"}]}, r"ranges\[0\]: a range set must be a list"),
        ({"ranges": {"subnet": "10.1.0.0/24"}}, r"ranges: expected a list of range sets"),
        ({"ranges": []}, r"no IP ranges specified"),
        ({}, r"no IP ranges specified"),
        ({"rangeStart": "10.1.0.5"}, r"rangeStart/rangeEnd given without subnet"),
        ({"subnet": "10.1.0.0/24", "routes": [{"dst": "10.1.0.1/8"}]}, r"routes\[0\]\.dst: invalid destination"),
        ({"subnet": "10.1.0.0/24", "routes": [{"gw": "10.1.0.1"}]}, r"routes\[0\]\.dst: missing"),
        ({"subnet": "10.1.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}, r"routes\[0\]\.gw: fd00::1 is not"),
        ({"subnet": "10.1.0.0/24", "routes": [{"dst": "0.0.0.0/0", "mtu": "x"}]}, r"routes\[0\]\.mtu: expected"),
        ({"subnet": "10.1.0.0/24", "routes": {"dst": "0.0.0.0/0"}}, r"routes: expected a list"),
        ({"subnet": "10.1.0.0/24", "dns": ["1.1.1.1"]}, r"dns: expected an object"),
        ({"subnet": "10.1.0.0/24", "dataDir": 7}, r"dataDir: expected a path string"),
        ({"subnet": "10.1.0.0/24", "resolvConf": 7}, r"resolvConf: expected a path string"),
    ],
)
def test_config_errors(ipam, match):
    with pytest.raises(IpamConfigError, match=match):
        parse(ipam)


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".", "-x", None, 5])
def test_bad_network_name(name):
    with pytest.raises(IpamConfigError, match="invalid network name"):
        parse_ipam_config({"subnet": "10.1.0.0/24"}, name)


def test_ipam_not_an_object():
    with pytest.raises(IpamConfigError, match="ipam: expected an object"):
        parse_ipam_config(None, "n")  # type: ignore[arg-type]
