"""The macvlan driver on this machine's kernel: the master is a veth in a throwaway host
namespace whose peer sits in a "switch" namespace, so traffic really leaves the master."""

from __future__ import annotations

import ipaddress
import os
import subprocess

import pytest

from splice.conformance import oracle
from splice.libnet.errors import NotSupported
from splice.libnet.netns import Netns
from splice.plugins import driver as framework
from splice.plugins.errors import CheckFailed, ConfigError, KernelError, UnsupportedField
from splice.plugins.macvlan.driver import MacvlanDriver
from splice.plugins.model import Attachment, IPConfig, Route
from splice.plugins.owners import link_alias, owner_tag

from ..conftest import missing_kernel_feature, only_lo, vlan_supported, make_switch

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
    return make_switch(host_ns, make_ns, MASTER, SWITCH_IP)


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


@pytest.mark.parametrize("conf,want", [
    ({"master": "eth0.10"}, ("eth0.10", "eth0", 10)),
    ({"master": "eth0", "vlan": 10}, ("eth0.10", "eth0", 10)),
    ({"master": "eth0.10", "vlan": 10}, ("eth0.10", "eth0", 10)),
    ({"master": "eth0", "vlan": "20"}, ("eth0.20", "eth0", 20)),
    ({"master": "bond0.2.30"}, ("bond0.2.30", "bond0.2", 30)),
    ({"master": "br.lan"}, ("br.lan", None, None)),  # no number: part of the name
    ({"master": "eth0", "vlan": 0}, ("eth0", None, None)),  # 0: no VLAN (as mtu 0)
    ({"master": "eth0"}, ("eth0", None, None)),
])
def test_config_vlan_master(conf, want):
    cfg = MacvlanDriver.parse_config(conf)  # pure: none of these links exists here
    assert (cfg.master, cfg.vlan_parent, cfg.vlan) == want


@pytest.mark.parametrize("conf,cls,words", [
    ({"master": "eth0.0"}, ConfigError, "outside 1-4094"),
    ({"master": "eth0.4095"}, ConfigError, "outside 1-4094"),
    ({"master": "eth0", "vlan": 4095}, ConfigError, "outside 1-4094"),
    ({"master": "eth0", "vlan": True}, ConfigError, "not an integer"),
    ({"master": "eth0", "vlan": "ten"}, ConfigError, "not an integer"),
    ({"master": "eth0.10", "vlan": 20}, ConfigError, "names VLAN 10 but vlan is 20"),
    ({"master": "eth0.010"}, ConfigError, "leading zeros"),
    ({"master": "abcdefghijk", "vlan": 4094}, ConfigError, "longer than 15 bytes"),
    ({"vlan": 10}, ConfigError, "vlan 10 needs a master"),
    ({"master": "eth0.10", "linkInContainer": True}, UnsupportedField, "linkInContainer with an 802.1Q master"),
])
def test_config_vlan_errors(conf, cls, words):
    with pytest.raises(cls, match=words):
        MacvlanDriver.parse_config(conf)


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


# -- 802.1Q sub-interfaces (needs_vm: 8021q) ---------------------------------------------------------
# ``wire0`` in the host, its peer ``wire1`` in a "switch" namespace with ``wire1.10`` =
# 10.77.10.1/24 and ``wire1.20`` = 10.77.20.1/24: only frames tagged with the VID reach them.
def registrations(d) -> list[str]:
    """Registration files (one per user) under the private SPLICE_VLAN_DIR."""
    if not os.path.isdir(d):
        return []
    return sorted(f"{e}/{f}" for e in os.listdir(d) for f in os.listdir(os.path.join(d, e)))


@pytest.fixture
def vstate(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLICE_VLAN_DIR", str(tmp_path / "vlans"))
    monkeypatch.setenv("SPLICE_LOCK_DIR", str(tmp_path / "locks"))
    yield tmp_path / "vlans"


@pytest.fixture
def wire(host_ns, make_ns, host, vstate):
    if not vlan_supported(host_ns):  # the clean error through the driver, nothing left, then skip
        host_ns.sh("ip", "link", "add", "wire0", "type", "veth", "peer", "name", "wire1")
        host_ns.sh("ip", "link", "set", "wire0", "up")
        a = make_ns()
        with pytest.raises(NotSupported, match=r"802.1Q sub-interface 'wire0.10' on 'wire0'.*8021q"):
            macvlan(host, master="wire0.10").attach(att(a, "ca"), [vip(10, 2)], [])
        host_ns.sh("ip", "link", "del", "wire0")
        only_lo(host_ns, a)
        assert registrations(vstate) == []
        missing_kernel_feature("802.1Q VLAN links (8021q): the clean NotSupported checked")
    switch = make_ns()
    host_ns.sh("ip", "link", "add", "wire0", "type", "veth", "peer", "name", "wire1", "netns", switch.name)
    host_ns.sh("ip", "link", "set", "wire0", "up")
    switch.sh("ip", "link", "set", "wire1", "up")
    switch.sh("sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
    for vid in (10, 20):
        switch.sh("ip", "link", "add", "link", "wire1", "name", f"wire1.{vid}", "type", "vlan", "id", str(vid))
        switch.sh("ip", "addr", "add", f"10.77.{vid}.1/24", "dev", f"wire1.{vid}")
        switch.sh("ip", "link", "set", f"wire1.{vid}", "up")
    yield switch
    assert registrations(vstate) == [], "registrations left behind"


def vip(vid: int, n: int) -> IPConfig:
    return IPConfig(address=IF(f"10.77.{vid}.{n}/24"), gateway=None)


def subifs(ns) -> set[str]:
    return {n for n in ns.links() if n.startswith("wire0.")}


def drop_ns(ns) -> None:
    subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=True)


@pytest.mark.needs_vm
@pytest.mark.timeout(120)
def test_vlan_two_containers_reach_each_other_and_the_switch(host_ns, wire, host, make_ns, vstate):
    switch = wire
    d10 = macvlan(host, master="wire0.10")
    d20 = macvlan(host, network="mv20", master="wire0", vlan=20)
    a, b, c = make_ns(), make_ns(), make_ns()
    wa = d10.attach(att(a, "ca"), [vip(10, 2)], [])
    o = oracle.link(host_ns.name, "wire0.10")  # made by the first ADD
    info = o["linkinfo"]["info_data"]
    assert (o["linkinfo"]["info_kind"], info["protocol"], info["id"], o["link"]) == ("vlan", "802.1Q", 10, "wire0")
    assert o["ifalias"] == "splice-vlan:wire0.10" and "UP" in o["flags"]
    wb = d10.attach(att(b, "cb"), [vip(10, 3)], [])
    assert oracle.link(host_ns.name, "wire0.10")["ifindex"] == o["ifindex"]  # shared
    la = oracle.link(a.name, "eth0")
    assert la["linkinfo"]["info_kind"] == "macvlan" and la["link_index"] == o["ifindex"]
    d20.attach(att(c, "cc", network="mv20"), [IPConfig(address=IF("10.77.10.4/24"))], [])  # VLAN 10's subnet
    assert subifs(host_ns) == {"wire0.10", "wire0.20"} and len(registrations(vstate)) == 3
    assert oracle.ping(a.name, "10.77.10.3") and oracle.ping(a.name, "10.77.10.1") and oracle.ping(b.name, "10.77.10.1")
    assert oracle.ip_json(switch.name, "-s", "link", "show", "wire1.10")[0]["stats64"]["rx"]["packets"] > 0
    assert not oracle.ping(c.name, "10.77.10.2", count=1, timeout=1), "VLAN 20 reached VLAN 10's container"
    assert not oracle.ping(c.name, "10.77.10.1", count=1, timeout=1), "VLAN 20 reached the switch's VLAN 10"
    d10.check(att(a, "ca"), wa)
    d10.check(att(b, "cb"), wb)
    d10.status()
    # kept while one user remains, removed by the last DEL; every DEL twice
    d10.detach(att(a, "ca"), wa.ips)
    d10.detach(att(a, "ca"), wa.ips)
    assert "wire0.10" in host_ns.links() and oracle.ping(b.name, "10.77.10.1")
    with pytest.raises(CheckFailed, match="not on master 'wire0.20'"):
        macvlan(host, master="wire0.20").check(att(b, "cb"), wb)
    d10.detach(att(b, "cb"), None)
    d10.detach(att(b, "cb"), None)
    assert subifs(host_ns) == {"wire0.20"}
    d20.detach(att(c, "cc", network="mv20"), None)
    assert subifs(host_ns) == set() and host_ns.links() == {"lo", "wire0"}
    only_lo(a, b, c)
    assert switch.links() == {"lo", "wire1", "wire1.10", "wire1.20"}


@pytest.mark.needs_vm
def test_vlan_preexisting_sub_interface_is_used_never_deleted(host_ns, wire, host, make_ns, vstate):
    host_ns.sh("ip", "link", "add", "link", "wire0", "name", "wire0.10", "type", "vlan", "id", "10")
    host_ns.sh("ip", "link", "set", "wire0.10", "up")
    before = oracle.link(host_ns.name, "wire0.10")
    d, a = macvlan(host, master="wire0", vlan=10), make_ns()
    w = d.attach(att(a, "ca"), [vip(10, 2)], [])
    assert oracle.ping(a.name, "10.77.10.1")
    d.check(att(a, "ca"), w)
    d.detach(att(a, "ca"), None)
    d.gc("mvnet", set())
    after = oracle.link(host_ns.name, "wire0.10")
    assert after["ifindex"] == before["ifindex"] and "ifalias" not in after
    host_ns.sh("ip", "link", "del", "wire0.10")
    only_lo(a)


@pytest.mark.needs_vm
def test_vlan_rollback_removes_what_this_add_made(host_ns, wire, host, make_ns, vstate):
    a, b = make_ns(), make_ns()
    with pytest.raises(ConfigError, match="larger than the MTU 1500 of master 'wire0.10'"):
        macvlan(host, master="wire0.10", mtu=9000).attach(att(a, "ca"), [vip(10, 2)], [])
    assert subifs(host_ns) == set() and registrations(vstate) == []
    a.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "xpeer")  # the name is taken
    from splice.plugins.errors import InterfaceExists

    with pytest.raises(InterfaceExists):
        macvlan(host, master="wire0.10").attach(att(a, "ca"), [vip(10, 2)], [])
    assert subifs(host_ns) == set() and registrations(vstate) == []
    assert a.links() == {"lo", "eth0", "xpeer"}
    # with another user on it, a failed ADD keeps it (and that user's registration)
    d = macvlan(host, master="wire0.10")
    d.attach(att(b, "cb"), [vip(10, 3)], [])
    with pytest.raises(InterfaceExists):
        d.attach(att(a, "ca"), [vip(10, 2)], [])
    assert subifs(host_ns) == {"wire0.10"} and len(registrations(vstate)) == 1
    assert oracle.ping(b.name, "10.77.10.1")
    with pytest.raises(ConfigError, match="parent link 'nosuch0' of the VLAN sub-interface 'nosuch0.10' not found"):
        macvlan(host, master="nosuch0.10").attach(att(b, "cx"), [vip(10, 4)], [])
    d.detach(att(b, "cb"), None)
    assert subifs(host_ns) == set()
    a.sh("ip", "link", "del", "eth0")
    only_lo(a, b)


@pytest.mark.needs_vm
def test_vlan_del_forms_release(host_ns, wire, host, make_ns, vstate):
    """No netns path and a gone netns: the macvlan died with its namespace; the
    registration is released and the last one removes the sub-interface."""
    d = macvlan(host, master="wire0.10")
    a, b = make_ns(), make_ns()
    d.attach(att(a, "ca"), [vip(10, 2)], [])
    d.attach(att(b, "cb"), [vip(10, 3)], [])
    path_a = a.path
    drop_ns(a)
    d.detach(Attachment(network="mvnet", container_id="ca", ifname="eth0", netns=path_a), None)  # netns gone
    assert subifs(host_ns) == {"wire0.10"} and len(registrations(vstate)) == 1
    drop_ns(b)
    d.detach(att(None, "cb"), None)  # no netns
    d.detach(att(None, "cb"), None)
    assert subifs(host_ns) == set() and registrations(vstate) == []


@pytest.mark.needs_vm
def test_vlan_gc_releases_stale_users(host_ns, wire, host, make_ns, vstate):
    d, other = macvlan(host, master="wire0.10"), macvlan(host, network="other", master="wire0.10")
    a, b, c = make_ns(), make_ns(), make_ns()
    d.attach(att(a, "ca"), [vip(10, 2)], [])
    d.attach(att(b, "cb"), [vip(10, 3)], [])
    other.attach(att(c, "cc", network="other"), [vip(10, 4)], [])
    drop_ns(b)  # cb's runtime died: no DEL
    d.gc("mvnet", {("ca", "eth0")})
    users = oracle_users(host_ns)
    assert users == {owner_tag("mvnet", "ca", "eth0"), owner_tag("other", "cc", "eth0")}
    d.gc("mvnet", set())  # another network's user is not this network's GC's
    assert oracle_users(host_ns) == {owner_tag("other", "cc", "eth0")} and "wire0.10" in host_ns.links()
    assert oracle.ping(c.name, "10.77.10.1")
    drop_ns(c)
    d.gc("other", set())
    assert subifs(host_ns) == set()
    d.detach(att(a, "ca"), None)
    only_lo(a)


def oracle_users(ns) -> set[str]:
    from splice.plugins import vlans

    from ..conftest import rtnl_in

    return rtnl_in(ns, lambda rt: vlans.users(rt, "wire0.10"))


@pytest.mark.needs_vm
def test_vlan_status_looks_at_the_parent(host_ns, wire, host):
    d = macvlan(host, master="wire0.10")
    d.status()  # the sub-interface is made by the first ADD: only its parent must exist and be up
    host_ns.sh("ip", "link", "set", "wire0", "down")
    with pytest.raises(KernelError, match="parent link 'wire0' of the VLAN sub-interface 'wire0.10' is down"):
        d.status()
    with pytest.raises(ConfigError, match="parent link 'nosuch0'"):
        macvlan(host, master="nosuch0.10").status()
    d.gc("mvnet", set())
    assert subifs(host_ns) == set()
