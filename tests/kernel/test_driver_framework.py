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
from splice.libnet.errors import NetError, TryAgain
from splice.libnet.locks import link_lock
from splice.libnet.netns import Netns
from splice.plugins import driver as framework
from splice.plugins.bridge.driver import BridgeDriver
from splice.plugins.errors import ConfigError
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


def _hold_lock(host: Netns, name: str, **kw):
    """Hold ``link_lock(name)`` in the host namespace from a background thread, as an
    ADD in progress would; returns (held, release) events."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with link_lock(name, **kw):
            held.set()
            assert release.wait(20)

    t = threading.Thread(target=host.run, args=(hold,), daemon=True)
    t.start()
    assert held.wait(20)
    return release, t


def test_an_add_holds_the_bridge_lock_while_it_makes_its_port(host_ns, make_ns, host, monkeypatch):
    sb = make_ns()
    bridge(host).ensure_network()
    veth = host_veth_name("netA", "c1", "eth0").encode()
    seen: list[str] = []
    real = rtnl.Rtnl._transact

    def transact(self, reqs):
        if any(veth in bytes(r.body) for r in reqs):
            try:  # the lock must be held (shared) by this ADD right now
                with link_lock(BR, exclusive=True, timeout=0.05):
                    seen.append("free")
            except TryAgain:
                seen.append("held")
        return real(self, reqs)

    monkeypatch.setattr(rtnl.Rtnl, "_transact", transact)
    w = bridge(host).attach(att(sb, "c1"), [ip4(2)], [])
    monkeypatch.undo()
    assert seen and set(seen) == {"held"}, seen
    bridge(host).detach(att(sb, "c1"), w.ips)


def test_gc_spares_a_port_another_network_is_still_tagging(host_ns, make_ns, host):
    """Defect 2: netB's ADD has made its veth on the shared bridge but not yet tagged it
    (it holds the bridge lock); GC of netA must not take it for a crashed ADD's leftover."""
    sb = make_ns()
    bridge(host).ensure_network()
    veth_b = host_veth_name("netB", "cb", "eth0")
    release, holder = _hold_lock(host, BR)
    host_ns.sh("ip", "link", "add", veth_b, "type", "veth", "peer", "name", "sp0000bbbb")
    host_ns.sh("ip", "link", "set", "sp0000bbbb", "netns", sb.name)
    host_ns.sh("ip", "link", "set", veth_b, "master", BR)
    t_gc = threading.Thread(target=lambda: bridge(host, "netA").gc("netA", set()))
    t_gc.start()
    time.sleep(0.3)
    assert t_gc.is_alive()  # GC waits for the ADD in progress
    assert veth_b in oracle.link_names(host_ns.name)
    host_ns.sh("ip", "link", "set", veth_b, "alias", link_alias("netB", "cb", "eth0"))  # the ADD tags it
    release.set()
    holder.join(20)
    t_gc.join(20)
    assert veth_b in oracle.link_names(host_ns.name)
    bridge(host, "netB").detach(att(sb, "cb", "netB"), None)
    assert oracle.link_names(host_ns.name) == {"lo", BR}
    assert oracle.link_names(sb.name) == {"lo"}


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
    """Defect 3: ADD A added the gateway address, then failed in its sandbox; its rollback
    found no other port and is about to remove the address. ADD B must not find the
    address, make its port and rely on it in between: B waits (bridge lock), then finds
    the address gone and adds it again."""
    a, b = make_ns(), make_ns()
    real_configure = libsandbox.configure

    def configure(rt, index, **kw):
        if kw["ifname"] == "ethA":
            raise NetError("injected sandbox failure of A")
        return real_configure(rt, index, **kw)

    monkeypatch.setattr(libsandbox, "configure", configure)
    gate, decided = threading.Event(), threading.Event()
    real_ports = rtnl.Rtnl.ports_of

    def ports_of(self, index):
        out = real_ports(self, index)
        decided.set()  # A's rollback has decided; B starts now
        assert gate.wait(20)
        return out

    monkeypatch.setattr(rtnl.Rtnl, "ports_of", ports_of)
    errors: dict[str, BaseException] = {}

    def run(key, fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            errors[key] = e

    d = bridge(host, isGateway=True)
    t_a = threading.Thread(target=run, args=("a", lambda: d.attach(att(a, "ca", ifname="ethA"), [ip4(2)], [])))
    t_a.start()
    assert decided.wait(20)
    t_b = threading.Thread(target=run, args=("b", lambda: d.attach(att(b, "cb"), [ip4(3)], [])))
    t_b.start()
    time.sleep(0.3)
    assert "eth0" not in oracle.link_names(b.name)  # B waits for A's rollback
    gate.set()
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


def test_a_very_long_container_id_gets_a_truncated_alias(host_ns, make_ns, host):
    """Issue 9 item 6: the kernel takes 254 alias bytes (255 with the NUL); a container id
    of 236 characters or more must not fail with ERANGE."""
    sb = make_ns()
    cid = "c" * 300
    d = bridge(host)
    w = d.attach(att(sb, cid), [ip4(2)], [])
    veth = host_veth_name("netA", cid, "eth0")
    alias = oracle.link(host_ns.name, veth)["ifalias"]
    assert len(alias.encode()) == 254 and alias == link_alias("netA", cid, "eth0")
    d.detach(att(sb, cid), w.ips)
    assert oracle.link_names(host_ns.name) == {"lo", BR}


def test_a_requested_mac_already_on_the_bridge_is_refused(host_ns, make_ns, host):
    """Issue 9 item 9: the bridge's MAC, a port's MAC or a container MAC the bridge has
    learned is refused for a new container, with nothing left behind."""
    a, b = make_ns(), make_ns()
    d = bridge(host, isGateway=True)
    wa = d.attach(Attachment("netA", "ca", "eth0", a.path, mac="02:aa:00:00:00:01"), [ip4(2)], [])
    assert oracle.ping(a.name, "10.66.0.1")  # the bridge learns ca's MAC behind its port
    br_mac = oracle.link(host_ns.name, BR)["address"]
    port_mac = oracle.link(host_ns.name, host_veth_name("netA", "ca", "eth0"))["address"]
    for mac in ("02:aa:00:00:00:01", br_mac, port_mac):
        with pytest.raises(ConfigError, match="already used on bridge"):
            d.attach(Attachment("netA", "cb", "eth0", b.path, mac=mac), [ip4(3)], [])
        assert oracle.link_names(b.name) == {"lo"}
        assert oracle.link_names(host_ns.name) == {"lo", BR, host_veth_name("netA", "ca", "eth0")}
    wb = d.attach(Attachment("netA", "cb", "eth0", b.path, mac="02:aa:00:00:00:02"), [ip4(3)], [])
    d.detach(att(a, "ca"), wa.ips)
    d.detach(att(b, "cb"), wb.ips)
    assert oracle.link_names(host_ns.name) == {"lo", BR}
