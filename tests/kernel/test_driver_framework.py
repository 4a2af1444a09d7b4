"""The driver framework on the bridge driver: registry, placement, and the concurrency
defects of issue 8 (GC vs an ADD half-way, rollback vs an ADD relying on the gateway)."""

from __future__ import annotations

import ipaddress
import threading
import time

import pytest

from splice.conformance import oracle
from splice.libnet import rtnl
from splice.libnet import sandbox as libsandbox
from splice.libnet.errors import NetError
from splice.libnet.netns import Netns
from splice.plugins import driver as framework
from splice.plugins.bridge.driver import BridgeDriver
from splice.plugins.model import Attachment, IPConfig
from splice.plugins.owners import host_veth_name, link_alias

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

BR = "br-f"
IF = ipaddress.ip_interface


@pytest.fixture
def host(host_ns):
    with Netns.open(host_ns.path) as h:
        yield h


def bridge(host: Netns, network: str = "netA", **conf):
    return framework.create("bridge", {"name": network, "type": "splice-bridge", "bridge": BR, **conf}, host)


def att(ns, cid: str, network: str = "netA", ifname: str = "eth0") -> Attachment:
    return Attachment(network=network, container_id=cid, ifname=ifname, netns=ns.path if ns else None)


def ip4(n: int) -> IPConfig:
    return IPConfig(address=IF(f"10.66.0.{n}/24"))


def test_registry():
    assert framework.driver_class("bridge") is BridgeDriver
    with pytest.raises(KeyError, match="unknown driver 'nope'"):
        framework.driver_class("nope")


def test_placement_in_host_leaves_the_peer_in_the_host(host_ns, host):
    """Docker's way: the container end stays in the host under a temporary name, unconfigured."""
    d = bridge(host, isGateway=True)
    w = d.attach(att(None, "ep1"), [ip4(2)], [], placement=framework.IN_HOST)
    peer = w.interfaces[2]
    assert peer.sandbox is None and peer.name.startswith("sp")
    veth = host_veth_name("netA", "ep1", "eth0")
    assert oracle.link_names(host_ns.name) == {"lo", BR, veth, peer.name}
    assert oracle.link(host_ns.name, veth)["master"] == BR
    assert oracle.link(host_ns.name, veth)["ifalias"] == link_alias("netA", "ep1", "eth0")
    assert oracle.link(host_ns.name, peer.name)["address"] == peer.mac
    assert oracle.addresses(host_ns.name, peer.name) == []  # the runtime configures it
    assert oracle.addresses(host_ns.name, BR) == ["10.66.0.1/24"]
    d.detach(att(None, "ep1"), w.ips)
    assert oracle.link_names(host_ns.name) == {"lo", BR}


def test_ensure_network_is_idempotent(host_ns, host):
    d = bridge(host)
    d.ensure_network([IF("10.66.0.1/24")])
    d.ensure_network([IF("10.66.0.1/24")])
    assert oracle.link(host_ns.name, BR)["link_type"] == "ether"
    assert oracle.addresses(host_ns.name, BR) == ["10.66.0.1/24"]


def _blocking(monkeypatch, cls, name: str, when, gate: threading.Event, entered: threading.Event):
    real = getattr(cls, name)

    def wrapper(*a, **kw):
        if when(*a, **kw):
            entered.set()
            assert gate.wait(20), "test gate never opened"
        return real(*a, **kw)

    monkeypatch.setattr(cls, name, wrapper)


def test_gc_spares_a_port_another_network_is_still_tagging(host_ns, make_ns, host, monkeypatch):
    """Defect 2: netB's ADD has made its veth on the shared bridge but not yet tagged it;
    GC of netA must not take it for a crashed ADD's leftover."""
    sb = make_ns()
    gate, entered = threading.Event(), threading.Event()
    _blocking(monkeypatch, rtnl.Rtnl, "set_brport", lambda *a, **kw: True, gate, entered)
    errors: list[BaseException] = []

    def add_b():
        try:
            bridge(host, "netB").attach(att(sb, "cb", "netB"), [ip4(3)], [])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t_add = threading.Thread(target=add_b)
    t_add.start()
    assert entered.wait(20)
    veth_b = host_veth_name("netB", "cb", "eth0")
    assert veth_b in oracle.link_names(host_ns.name)
    assert not oracle.link(host_ns.name, veth_b).get("ifalias")  # untagged: the window

    t_gc = threading.Thread(target=lambda: bridge(host, "netA").gc("netA", set()))
    t_gc.start()
    time.sleep(0.3)
    gate.set()
    t_add.join(20)
    t_gc.join(20)
    assert not errors, errors
    assert veth_b in oracle.link_names(host_ns.name)
    assert oracle.link(host_ns.name, veth_b)["ifalias"] == link_alias("netB", "cb", "eth0")
    monkeypatch.undo()
    bridge(host, "netB").detach(att(sb, "cb", "netB"), None)
    assert oracle.link_names(host_ns.name) == {"lo", BR}


def test_gc_still_removes_a_crashed_adds_untagged_port(host_ns, make_ns, host):
    sb = make_ns()
    left = host_veth_name("netA", "crashed", "eth0")
    host_ns.sh("ip", "link", "add", left, "type", "veth", "peer", "name", "sp0000aaaa")
    host_ns.sh("ip", "link", "set", "sp0000aaaa", "netns", sb.name)
    bridge(host).ensure_network()
    host_ns.sh("ip", "link", "set", left, "master", BR)
    bridge(host).gc("netA", set())
    assert oracle.link_names(host_ns.name) == {"lo", BR}
    assert oracle.link_names(sb.name) == {"lo"}


def test_rollback_keeps_the_gateway_a_concurrent_add_relies_on(host_ns, make_ns, host, monkeypatch):
    """Defect 3: ADD A adds the gateway address, then fails in its sandbox; ADD B found
    the address in place and is about to create its port. A's rollback must not remove it."""
    a, b = make_ns(), make_ns()
    gate_a, in_a = threading.Event(), threading.Event()
    gate_b, in_b = threading.Event(), threading.Event()
    real_configure = libsandbox.configure

    def configure(rt, index, **kw):
        if kw["ifname"] == "ethA":
            in_a.set()
            assert gate_a.wait(20)
            raise NetError("injected sandbox failure of A")
        return real_configure(rt, index, **kw)

    monkeypatch.setattr(libsandbox, "configure", configure)
    veth_b = host_veth_name("netA", "cb", "eth0")
    _blocking(monkeypatch, rtnl.Rtnl, "add_veth", lambda self, name, *a, **kw: name == veth_b, gate_b, in_b)
    errors: dict[str, BaseException] = {}

    def run(key, fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            errors[key] = e

    d = bridge(host, isGateway=True)
    t_a = threading.Thread(target=run, args=("a", lambda: d.attach(att(a, "ca", ifname="ethA"), [ip4(2)], [])))
    t_a.start()
    assert in_a.wait(20)
    assert oracle.addresses(host_ns.name, BR) == ["10.66.0.1/24"]  # added by A
    t_b = threading.Thread(target=run, args=("b", lambda: d.attach(att(b, "cb"), [ip4(3)], [])))
    t_b.start()
    assert in_b.wait(20)  # B has seen the gateway address and is creating its port
    gate_a.set()  # A fails now and rolls back
    time.sleep(0.3)
    gate_b.set()
    t_a.join(20)
    t_b.join(20)
    assert "injected" in str(errors.get("a")) and "b" not in errors, errors
    assert oracle.addresses(host_ns.name, BR) == ["10.66.0.1/24"]  # B relies on it
    assert oracle.link_names(a.name) == {"lo"}
    monkeypatch.undo()
    d.detach(att(b, "cb"), None)
    assert oracle.link_names(host_ns.name) == {"lo", BR}
    assert oracle.link_names(b.name) == {"lo"}


def test_same_address_on_two_bridges_keeps_both_nats(host_ns, make_ns, host):
    """Defect 1: overlapping subnets on two bridges, one address in both: each attachment
    keeps its masquerade entry through the other's ADD and DEL."""
    a, b = make_ns(), make_ns()
    da = framework.create("bridge", {"name": "netA", "type": "splice-bridge", "bridge": "br-fa", "ipMasq": True,
                                     "isGateway": True}, host)
    db = framework.create("bridge", {"name": "netB", "type": "splice-bridge", "bridge": "br-fb", "ipMasq": True,
                                     "isGateway": True}, host)

    def entries() -> set[str]:
        return {f"{k[0]} {k[1]}" for k, _, _ in (oracle.element_parts(e) for t, name, e in
                oracle.nft_map_elements(host_ns.name) if (t, name) == ("splice_nat", "src4"))}

    wa = da.attach(att(a, "ca"), [ip4(2)], [])
    wb = db.attach(att(b, "cb", "netB"), [ip4(2)], [])
    assert entries() == {"br-fa 10.66.0.2", "br-fb 10.66.0.2"}
    db.detach(att(b, "cb", "netB"), wb.ips)
    assert entries() == {"br-fa 10.66.0.2"}
    da.check(att(a, "ca"), wa)
    wb = db.attach(att(b, "cb", "netB"), [ip4(2)], [])
    da.detach(att(a, "ca"), wa.ips)
    assert entries() == {"br-fb 10.66.0.2"}
    db.check(att(b, "cb", "netB"), wb)
    db.detach(att(b, "cb", "netB"), wb.ips)
    assert entries() == set()
    assert oracle.link_names(host_ns.name) == {"lo", "br-fa", "br-fb"}
