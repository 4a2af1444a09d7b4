"""splice.ipam: a subnet overlapping another host interface's address or connected route
is refused (issue 9, item 9), through the prefixes the CNI adapter injects."""

from __future__ import annotations

import ipaddress

import pytest

from splice.ipam.allocator import Ipam, host_overlap
from splice.ipam.config import parse_ipam_config
from splice.ipam.errors import HostOverlap, IpamConfigError

N = ipaddress.ip_network
I = ipaddress.ip_interface

HOST = [
    ("lo", I("127.0.0.1/8")), ("lo", N("127.0.0.0/8")),
    ("eth0", I("192.168.1.10/24")), ("eth0", N("192.168.1.0/24")),
    ("eth0", I("fd00:1::10/64")), ("eth0", N("fd00:1::/64")),
    ("wg0", "10.232.0.0/16"),          # a connected route (string form)
    ("dummy0", I("10.9.0.7/32")),      # a lone address
    ("tun0", N("0.0.0.0/0")),          # a default route through a device: ignored
    ("eth0", N("fe80::/64")),
]


def cfg(subnets, **ipam):
    ranges = [[{"subnet": s}] for s in subnets]
    return parse_ipam_config({"ranges": ranges, **ipam}, "net")


def test_allow_overlap_parsing():
    assert cfg(["10.1.0.0/24"]).allow_overlap is False
    assert cfg(["10.1.0.0/24"], allowOverlap=True).allow_overlap is True
    with pytest.raises(IpamConfigError, match="allowOverlap: expected true or false"):
        cfg(["10.1.0.0/24"], allowOverlap="yes")


@pytest.mark.parametrize("subnet, what", [
    ("192.168.1.0/24", "the address 192.168.1.10/24 of host interface eth0"),
    ("192.168.0.0/16", "the address 192.168.1.10/24 of host interface eth0"),
    ("10.232.3.0/24", "the connected route 10.232.0.0/16 of host interface wg0"),
    ("10.9.0.0/24", "the address 10.9.0.7/32 of host interface dummy0"),
    ("fd00:1::/64", "the address fd00:1::10/64 of host interface eth0"),
])
def test_overlap_refused(subnet, what):
    with pytest.raises(HostOverlap, match=rf"subnet {subnet} of network net overlaps {what}: .*\"allowOverlap\": true"):
        host_overlap(cfg([subnet]), HOST)


@pytest.mark.parametrize("subnet", ["10.1.0.0/24", "192.168.2.0/24", "fd00:2::/64", "10.233.0.0/16"])
def test_no_overlap(subnet):
    host_overlap(cfg([subnet]), HOST)


def test_own_interfaces_are_not_conflicts():
    # the network's bridge carries its gateway (10.1.0.1/24) and the connected route
    host = HOST + [("cni0", I("10.1.0.1/24")), ("cni0", N("10.1.0.0/24"))]
    host_overlap(cfg(["10.1.0.0/24"]), host)
    # the same subnet on another network's bridge (another gateway) is a conflict
    other = parse_ipam_config({"subnet": "10.1.0.0/24", "gateway": "10.1.0.254"}, "net")
    with pytest.raises(HostOverlap, match="overlaps the address 10.1.0.1/24 of host interface cni0"):
        host_overlap(other, host)
    only_route = HOST + [("cni1", N("10.1.0.0/24"))]
    with pytest.raises(HostOverlap, match="overlaps the connected route 10.1.0.0/24 of host interface cni1"):
        host_overlap(cfg(["10.1.0.0/24"]), only_route)
    # named by the caller (a macvlan master on the host's LAN)
    host_overlap(cfg(["192.168.1.0/24"]), HOST, own_interfaces=["eth0"])


def test_ipam_checks_through_the_injected_callable(tmp_path):
    calls = []

    def host_routes():
        calls.append(1)
        return HOST

    c = cfg(["192.168.1.0/24"], dataDir=str(tmp_path))
    ipam = Ipam(c, host_routes=host_routes)
    with pytest.raises(HostOverlap) as e:
        ipam.allocate("c1", "eth0")
    from splice.plugins.cni.errors import from_exception

    assert isinstance(e.value, IpamConfigError) and from_exception(e.value).code == 7
    with pytest.raises(HostOverlap):
        ipam.status()
    assert len(calls) == 2
    assert not (tmp_path / "net").exists()  # refused before the store is touched
    assert ipam.release("c1", "eth0") == [] and len(calls) == 2  # release/get/gc never check
    # opted out
    ok = Ipam(cfg(["192.168.1.0/24"], dataDir=str(tmp_path), allowOverlap=True), host_routes=host_routes)
    assert [str(l.address.ip) for l in ok.allocate("c1", "eth0")] == ["192.168.1.2"]
    ok.status()
    assert len(calls) == 2  # not even asked
    # no callable (the default): no check
    assert Ipam(cfg(["192.168.1.0/24"], dataDir=str(tmp_path / "x"))).allocate("c1", "eth0")


def test_bad_prefix_from_the_adapter():
    with pytest.raises(ValueError, match="host prefix 'nonsense' of interface 'eth9'"):
        host_overlap(cfg(["10.1.0.0/24"]), [("eth9", "nonsense")])
