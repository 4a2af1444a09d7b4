"""BridgeDriver.remove_network (the Docker front-end's DeleteNetwork): a bridge splice made
goes once no container port is left; someone else's bridge only loses the gateways; a bridge
with ports stays. In-process, in a throwaway host namespace."""

from __future__ import annotations

import ipaddress

import pytest

from splice.conformance import oracle
from splice.libnet.netns import Netns
from splice.plugins import driver as framework
from splice.plugins.model import Attachment, IPConfig

from ..conftest import missing_kernel_feature, vlan_filtering_supported

pytestmark = pytest.mark.root

BR = "br-rm"
IF = ipaddress.ip_interface


@pytest.fixture
def host(host_ns):
    with Netns.open(host_ns.path) as h:
        yield h


def bridge(host, **conf):
    return framework.create("bridge", {"bridge": BR, "isGateway": True, **conf}, host)


def test_removes_the_bridge_splice_made_once_no_port_is_left(host_ns, host):
    d = bridge(host)
    d.ensure_network([IF("10.66.0.1/24")])
    att = Attachment(network="n1", container_id="ep1", ifname="eth")
    w = d.attach(att, [IPConfig(address=IF("10.66.0.2/24"))], [], placement=framework.IN_HOST)
    assert d.remove_network([IF("10.66.0.1/24")]) is False  # a port is on it: kept
    assert BR in oracle.link_names(host_ns.name)
    d.detach(att, w.ips)
    assert d.remove_network([IF("10.66.0.1/24")]) is True
    assert oracle.link_names(host_ns.name) == {"lo"}
    assert d.remove_network([IF("10.66.0.1/24")]) is True  # idempotent


def test_someone_elses_bridge_only_loses_the_gateway(host_ns, host):
    host_ns.sh("ip", "link", "add", BR, "type", "bridge")
    host_ns.sh("ip", "addr", "add", "192.0.2.1/24", "dev", BR)
    d = bridge(host)
    d.ensure_network([IF("fd00:66::1/64")])
    assert "fd00:66::1/64" in oracle.addresses(host_ns.name, BR)
    assert d.remove_network([IF("fd00:66::1/64")]) is True
    assert BR in oracle.link_names(host_ns.name)
    assert [a for a in oracle.addresses(host_ns.name, BR) if not a.startswith("fe80")] == ["192.0.2.1/24"]


@pytest.mark.needs_vm
def test_vlan_gateway_port_goes_with_the_bridge(host_ns, host):
    if not vlan_filtering_supported(host_ns):
        missing_kernel_feature("bridge VLAN filtering")
    d = bridge(host, vlan=10)
    d.ensure_network([IF("10.67.0.1/24")])
    assert f"{BR}.10" in oracle.link_names(host_ns.name)
    assert d.remove_network([IF("10.67.0.1/24")]) is True
    assert oracle.link_names(host_ns.name) == {"lo"}
