"""The port-publishing service (splice.plugins.portmap.driver.PortmapDriver) in a throwaway
host namespace: mappings and options per call, as Docker's ProgramExternalConnectivity and
splice-portmap give them. Asserted with nft -j (test_portmap_net helpers)."""

from __future__ import annotations

from ipaddress import ip_interface

import pytest

from splice.libnet.netns import Netns
from splice.plugins.errors import CheckFailed, ConfigError, PortInUse
from splice.plugins.model import Attachment, IPConfig
from splice.plugins.owners import owner_tag
from splice.plugins.portmap.config import PortmapOptions, parse_portmap_config
from splice.plugins.portmap.driver import PortmapDriver
from splice.plugins.portmap.mapping import PortMapping

from .test_portmap_net import assert_no_portmap_elements, dnat_elements, elements, route_localnet

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

A = Attachment("net-a", "c-aaa", "eth0")
B = Attachment("net-b", "c-bbb", "eth0")
A_IPS = [IPConfig(ip_interface("10.46.0.2/24")), IPConfig(ip_interface("fd46::2/64"))]
B_IPS = [IPConfig(ip_interface("10.46.0.3/24"))]


@pytest.fixture
def host(host_ns):
    for cmd in ("ip link add pmbr type bridge", "ip addr add 10.46.0.1/24 dev pmbr",
                "ip addr add fd46::1/64 dev pmbr nodad", "ip link add pmd type veth peer name pmd2",
                "ip link set pmd master pmbr", "ip link set pmd up", "ip link set pmd2 up", "ip link set pmbr up"):
        host_ns.sh(*cmd.split())
    with Netns.open(host_ns.path) as ns:
        host_ns.netns = ns
        yield host_ns
    assert_no_portmap_elements(host_ns)
    assert route_localnet(host_ns, "pmbr") == "0"


def test_mappings_and_options_are_given_per_call(host):
    svc = PortmapDriver(host.netns)
    got = svc.publish(A, [PortMapping(8080, 80)], A_IPS)  # default options: snat on
    assert [str(p) for p in got] == ["*:8080/tcp -> 10.46.0.2:80", "*:8080/tcp -> [fd46::2]:80"]
    # the same service, another attachment with other options (no snat, conditions)
    cond = PortmapOptions(snat=False, conditions_v4=["ip saddr 192.0.2.0/24"])
    svc.publish(B, [PortMapping(9090, 90, "udp")], B_IPS, cond)
    ta, tb = owner_tag("net-a", "c-aaa", "eth0"), owner_tag("net-b", "c-bbb", "eth0")
    assert {k: v[1] for k, v in dnat_elements(host).items()} == {
        ("dnat4", ("tcp", 8080)): ta, ("dnat6", ("tcp", 8080)): ta, ("dnat4", ("udp", 9090)): tb}
    e = elements(host)
    assert set(e["ifrefs4"]) == {("pmbr", "10.46.0.2", "10.46.0.2")}  # B has no snat: no registration
    assert set(e["cond4"]) == {("udp", 9090)}
    svc.check(A, [PortMapping(8080, 80)], A_IPS)
    svc.check(B, [PortMapping(9090, 90, "udp")], B_IPS, cond)
    with pytest.raises(CheckFailed, match="masquerade of 10.46.0.3 on pmbr: no element in ifrefs4"):  # checked with snat
        svc.check(B, [PortMapping(9090, 90, "udp")], B_IPS, PortmapOptions(conditions_v4=cond.conditions_v4))
    with pytest.raises(PortInUse, match="tcp/8080 on every IPv4 address is already published by container c-aaa") as ei:
        svc.publish(B, [PortMapping(8080, 81)], B_IPS)
    assert ei.value.owner == ta
    with pytest.raises(ConfigError, match="mapped twice"):
        svc.publish(B, [PortMapping(7000, 1), PortMapping(7000, 2)], B_IPS)
    # unpublish with what publish got, and without (a revoke: found by owner)
    assert len(svc.unpublish(A, [PortMapping(8080, 80)], A_IPS)) == 2
    assert [str(p) for p in svc.unpublish(B)] == ["*:9090/udp -> 10.46.0.3:90"]
    assert svc.unpublish(B) == []
    svc.status()
    assert svc.gc("net-b", set()) == []


def test_gc_keeps_the_valid_attachments(host):
    svc = PortmapDriver(host.netns)
    svc.publish(A, [PortMapping(8080, 80)], A_IPS)
    svc.publish(Attachment("net-a", "c-old", "eth0"), [PortMapping(8081, 80)], B_IPS)
    assert svc.gc("net-a", {("c-aaa", "eth0")}) == [owner_tag("net-a", "c-old", "eth0")]
    assert {k[1] for k in dnat_elements(host)} == {("tcp", 8080)}
    assert svc.gc("net-a", set()) == [owner_tag("net-a", "c-aaa", "eth0")]


def test_the_thin_cni_path(host):
    """PortmapConfig from a CNI network config, handed over as mappings + options."""
    cfg = parse_portmap_config({"name": "net-a", "snat": True,
                                "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80}]}})
    svc = PortmapDriver(host.netns)
    svc.publish(A, cfg.mappings, A_IPS, cfg.options)
    assert set(dnat_elements(host)) == {("dnat4", ("tcp", 8080)), ("dnat6", ("tcp", 8080))}
    svc.check(A, cfg.mappings, A_IPS, cfg.options)
    svc.unpublish(A, cfg.mappings, A_IPS, cfg.options)
    assert dnat_elements(host) == {}
