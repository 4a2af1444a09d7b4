"""The macvlan driver on this machine's kernel: the master is a veth in a throwaway host
namespace whose peer sits in a "switch" namespace, so traffic really leaves the master."""

from __future__ import annotations

import ipaddress

import pytest

from splice.conformance import oracle
from splice.libnet.netns import Netns
from splice.plugins import driver as framework
from splice.plugins.errors import CheckFailed, ConfigError, KernelError, UnsupportedField
from splice.plugins.macvlan.driver import MacvlanDriver
from splice.plugins.model import Attachment, IPConfig, Route
from splice.plugins.owners import link_alias

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

IF = ipaddress.ip_interface
MASTER = "mv0"
SWITCH_IP = "10.88.0.254"


@pytest.fixture
def host(host_ns):
    with Netns.open(host_ns.path) as h:
        yield h


@pytest.fixture
def switch(host_ns, make_ns):
    sw = make_ns()
    host_ns.sh("ip", "link", "add", MASTER, "type", "veth", "peer", "name", "sw0", "netns", sw.name)
    host_ns.sh("ip", "link", "set", MASTER, "up")
    sw.sh("ip", "link", "set", "sw0", "up")
    sw.sh("ip", "addr", "add", f"{SWITCH_IP}/24", "dev", "sw0")
    return sw


def macvlan(host: Netns, network: str = "mvnet", **conf):
    return framework.create("macvlan", {"name": network, "type": "splice-macvlan", "master": MASTER, **conf}, host)


def att(ns, cid: str, network: str = "mvnet", ifname: str = "eth0", mac: str | None = None) -> Attachment:
    return Attachment(network=network, container_id=cid, ifname=ifname, netns=ns.path if ns else None, mac=mac)


def ip4(n: int) -> IPConfig:
    return IPConfig(address=IF(f"10.88.0.{n}/24"), gateway=ipaddress.ip_address(SWITCH_IP))


def test_registry_and_config():
    assert framework.driver_class("macvlan") is MacvlanDriver
    cfg = MacvlanDriver.parse_config({"master": "eth0"})
    assert (cfg.master, cfg.mode, cfg.mtu, cfg.link_in_container) == ("eth0", "bridge", None, False)
    assert MacvlanDriver.parse_config({}).master is None  # resolved at ADD
    for bad in ({"mode": "source"}, {"mode": 3}, {"mtu": 10}, {"mtu": "1500"}, {"master": "a" * 16},
                {"mac": "01:00:00:00:00:01"}, {"linkInContainer": "yes"}):
        with pytest.raises(ConfigError):
            MacvlanDriver.parse_config(bad)
    for vlan in ({"master": "eth0.10"}, {"master": "eth0", "vlan": 10}):
        with pytest.raises(UnsupportedField, match="VLAN sub-interfaces"):
            MacvlanDriver.parse_config(vlan)


def test_attach_two_containers_reach_each_other_and_the_switch(host_ns, switch, host, make_ns):
    d = macvlan(host)
    a, b = make_ns(), make_ns()
    wa = d.attach(att(a, "ca"), [ip4(2)], [])
    wb = d.attach(att(b, "cb"), [ip4(3)], [Route(dst=ipaddress.ip_network("0.0.0.0/0"))])
    la = oracle.link(a.name, "eth0")
    assert la["linkinfo"]["info_kind"] == "macvlan" and la["linkinfo"]["info_data"]["mode"] == "bridge"
    assert la["ifalias"] == link_alias("mvnet", "ca", "eth0")
    assert la["address"] == wa.interfaces[0].mac and wa.interfaces[0].sandbox == a.path
    assert oracle.addresses(a.name, "eth0") == ["10.88.0.2/24"]
    assert any(r["dst"] == "default" and r.get("gateway") == SWITCH_IP for r in oracle.routes(b.name))
    assert oracle.ping(a.name, "10.88.0.3") and oracle.ping(a.name, SWITCH_IP) and oracle.ping(b.name, SWITCH_IP)
    assert oracle.link_names(host_ns.name) == {"lo", MASTER}  # nothing left in the host
    d.check(att(a, "ca"), wa)
    d.check(att(b, "cb"), wb)
    d.detach(att(a, "ca"), wa.ips)
    d.detach(att(a, "ca"), wa.ips)  # idempotent
    d.detach(att(b, "cb"), None)
    assert oracle.link_names(a.name) == {"lo"} and oracle.link_names(b.name) == {"lo"}


def test_private_mode_isolates(switch, host, make_ns):
    d = macvlan(host, mode="private")
    a, b = make_ns(), make_ns()
    d.attach(att(a, "ca"), [ip4(2)], [])
    d.attach(att(b, "cb"), [ip4(3)], [])
    assert oracle.link(a.name, "eth0")["linkinfo"]["info_data"]["mode"] == "private"
    assert not oracle.ping(a.name, "10.88.0.3")
    assert oracle.ping(a.name, SWITCH_IP)


def test_mac_mtu_and_config_mac_precedence(switch, host, make_ns):
    d = macvlan(host, mtu=1400, mac="02:00:00:00:aa:01")
    a, b = make_ns(), make_ns()
    w = d.attach(att(a, "ca"), [ip4(2)], [])
    assert oracle.link(a.name, "eth0")["address"] == "02:00:00:00:aa:01" == w.interfaces[0].mac
    assert oracle.link(a.name, "eth0")["mtu"] == 1400
    d.attach(att(b, "cb", mac="02:00:00:00:bb:02"), [ip4(3)], [])  # the runtime's MAC wins
    assert oracle.link(b.name, "eth0")["address"] == "02:00:00:00:bb:02"


def test_passthru_takes_the_master_alone(host_ns, switch, host, make_ns):
    d = macvlan(host, mode="passthru")
    a, b = make_ns(), make_ns()
    d.attach(att(a, "ca"), [ip4(2)], [])
    with pytest.raises(KernelError, match="passthru macvlan takes master 'mv0' alone"):
        d.attach(att(b, "cb"), [ip4(3)], [])
    with pytest.raises(KernelError, match="carries a passthru macvlan"):
        macvlan(host).attach(att(b, "cb"), [ip4(3)], [])
    assert oracle.link_names(b.name) == {"lo"} and oracle.link_names(host_ns.name) == {"lo", MASTER}
    assert oracle.ping(a.name, SWITCH_IP)


def test_errors_leave_nothing(host_ns, switch, host, make_ns):
    a = make_ns()
    with pytest.raises(ConfigError, match="master 'nope0' not found"):
        macvlan(host, master="nope0").attach(att(a, "ca"), [ip4(2)], [])
    with pytest.raises(ConfigError, match="loopback"):
        macvlan(host, master="lo").attach(att(a, "ca"), [ip4(2)], [])
    with pytest.raises(ConfigError, match="larger than the MTU 1500"):
        macvlan(host, mtu=9000).attach(att(a, "ca"), [ip4(2)], [])
    host_ns.sh("ip", "link", "add", "brx", "type", "bridge")
    host_ns.sh("ip", "link", "add", "pt0", "type", "veth", "peer", "name", "pt1")
    host_ns.sh("ip", "link", "set", "pt0", "master", "brx")
    with pytest.raises(ConfigError, match="port of another device"):
        macvlan(host, master="pt0").attach(att(a, "ca"), [ip4(2)], [])
    # a failure in the sandbox (the name is taken) removes the new link
    a.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "xpeer")
    from splice.plugins.errors import InterfaceExists

    with pytest.raises(InterfaceExists):
        macvlan(host).attach(att(a, "ca"), [ip4(2)], [])
    assert oracle.link_names(a.name) == {"lo", "eth0", "xpeer"}
    assert oracle.link(a.name, "eth0")["linkinfo"]["info_kind"] == "veth"
    macvlan(host).detach(att(a, "ca"), None)  # not ours: left alone
    assert oracle.link_names(a.name) == {"lo", "eth0", "xpeer"}
    assert oracle.link_names(host_ns.name) == {"lo", MASTER, "brx", "pt0", "pt1"}


def test_default_master_is_the_default_route_interface(host_ns, switch, host, make_ns):
    host_ns.sh("ip", "addr", "add", "10.88.0.1/24", "dev", MASTER)
    host_ns.sh("ip", "route", "add", "default", "via", SWITCH_IP)
    d = framework.create("macvlan", {"name": "mvnet", "type": "splice-macvlan"}, host)
    a = make_ns()
    d.attach(att(a, "ca"), [ip4(2)], [])
    assert oracle.ping(a.name, SWITCH_IP)
    d.status()


def test_check_detects_changes(switch, host, make_ns):
    d = macvlan(host)
    a = make_ns()
    w = d.attach(att(a, "ca"), [ip4(2)], [])
    d.check(att(a, "ca"), w)
    with pytest.raises(CheckFailed, match="mode bridge, configured private"):
        macvlan(host, mode="private").check(att(a, "ca"), w)
    a.sh("ip", "addr", "del", "10.88.0.2/24", "dev", "eth0")
    with pytest.raises(CheckFailed, match="10.88.0.2/24 not found"):
        d.check(att(a, "ca"), w)
    a.sh("ip", "addr", "add", "10.88.0.2/24", "dev", "eth0")
    a.sh("ip", "link", "set", "eth0", "address", "02:00:00:00:cc:03")
    with pytest.raises(CheckFailed, match="MAC"):
        d.check(att(a, "ca"), w)


def test_status_and_gc(host_ns, switch, host):
    macvlan(host).status()
    host_ns.sh("ip", "link", "set", MASTER, "down")
    with pytest.raises(KernelError, match="down"):
        macvlan(host).status()
    with pytest.raises(ConfigError, match="not found"):
        macvlan(host, master="nope0").status()
    macvlan(host).gc("mvnet", set())


def test_in_host_placement_and_detach_without_netns(host_ns, switch, host, make_ns):
    d = macvlan(host)
    w = d.attach(att(None, "ep1"), [ip4(2)], [], placement=framework.IN_HOST)
    tmp = w.interfaces[0].name
    assert w.interfaces[0].sandbox is None and tmp.startswith("sp")
    assert oracle.link(host_ns.name, tmp)["ifalias"] == link_alias("mvnet", "ep1", "eth0")
    assert oracle.addresses(host_ns.name, tmp) == []
    host_ns.sh("ip", "link", "del", tmp)
    d.detach(att(None, "ep1"), None)  # no netns: nothing to do
    gone = make_ns()
    d.detach(Attachment(network="mvnet", container_id="x", ifname="eth0", netns="/run/netns/spt-gone-x"), None)
    assert oracle.link_names(gone.name) == {"lo"}


def test_link_in_container(switch, host, make_ns):
    a = make_ns()
    a.sh("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
    a.sh("ip", "link", "set", "up0", "up")
    d = framework.create("macvlan", {"name": "mvnet", "master": "up0", "linkInContainer": True}, host)
    w = d.attach(att(a, "ca"), [ip4(2)], [])
    assert oracle.link(a.name, "eth0")["linkinfo"]["info_kind"] == "macvlan"
    d.check(att(a, "ca"), w)
    d.detach(att(a, "ca"), None)
    assert oracle.link_names(a.name) == {"lo", "up0", "up1"}


def test_failure_in_the_sandbox_after_the_rename_removes_the_link(host_ns, switch, host, make_ns):
    """A route the kernel refuses (its gateway is unreachable) fails ADD after the link was
    renamed and addressed: the link is deleted from the sandbox, nothing is left."""
    a = make_ns()
    bad = Route(dst=ipaddress.ip_network("10.99.0.0/24"), gw=ipaddress.ip_address("10.77.7.7"))
    with pytest.raises(Exception):
        macvlan(host).attach(att(a, "ca"), [ip4(2)], [bad])
    assert oracle.link_names(a.name) == {"lo"}
    assert oracle.link_names(host_ns.name) == {"lo", MASTER}


def test_crashed_add_leftover_under_the_temporary_name_is_found_by_alias(host_ns, switch, host, make_ns):
    a = make_ns()
    host_ns.sh("ip", "link", "add", "link", MASTER, "name", "sp0badc0de", "netns", a.name, "type", "macvlan")
    a.sh("ip", "link", "set", "sp0badc0de", "alias", link_alias("mvnet", "ca", "eth0"))
    macvlan(host).detach(att(a, "ca"), None)
    assert oracle.link_names(a.name) == {"lo"}
