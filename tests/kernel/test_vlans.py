"""802.1Q sub-interfaces made on demand (plugins/vlans.py): parse, ensure, release, gc.

The kernel tests need 8021q, which this host's kernel may lack: they are ``needs_vm``
(skip on such a host after checking the clean error, run in the UML guest). A "switch" sits
on the other end of a veth wire (a namespace with ``wire1.<vid>`` addresses), so a user of
the sub-interface only reaches it with frames tagged with that VID. Kernel state is read
with the oracle (``ip -j -d``); every test ends with a leak check (links and registrations).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from splice.conformance import oracle
from splice.libnet import rtnl
from splice.libnet.errors import NotSupported
from splice.libnet.netns import Netns
from splice.plugins import vlans
from splice.plugins.errors import ConfigError

from ..conftest import missing_kernel_feature, only_lo, rtnl_in as run, vlan_supported


# -- parse_master (no kernel) ----------------------------------------------------------------------
@pytest.mark.parametrize("master,vlan,want", [
    ("eth0", None, ("eth0", None)),
    ("eth0.10", None, ("eth0", 10)),
    ("eth0", 10, ("eth0", 10)),
    ("eth0.10", 10, ("eth0", 10)),
    ("eth0", "4094", ("eth0", 4094)),
    ("eth0.1", None, ("eth0", 1)),
    ("br.lan", None, ("br.lan", None)),   # a suffix that is no number is part of the name
    ("bond0.2.30", None, ("bond0.2", 30)),  # QinQ-style names: the last suffix is the VID
    ("abcdefghij.4094", None, ("abcdefghij", 4094)),  # 15 bytes
])
def test_parse_master(master, vlan, want):
    assert vlans.parse_master(master, vlan) == want


@pytest.mark.parametrize("master,vlan,words", [
    ("eth0.0", None, "outside 1-4094"),
    ("eth0.4095", None, "outside 1-4094"),
    ("eth0", 0, "outside 1-4094"),
    ("eth0", 4095, "outside 1-4094"),
    ("eth0", -1, "outside 1-4094"),
    ("eth0", True, "not an integer"),
    ("eth0", "ten", "not an integer"),
    ("eth0.10", 20, "names VLAN 10 but vlan is 20"),
    ("eth0.010", None, "leading zeros"),
    ("abcdefghij", 10000, "outside 1-4094"),
    ("abcdefghijk", 4094, "'abcdefghijk.4094' is longer than 15 bytes"),
    ("abcdefghijklmnop", None, "longer than 15 bytes"),
    ("", 10, "must not be empty"),
    ("a/b.3", None, "must not contain '/'"),
    ("a b", 3, "must not contain ' '"),
    (".5", None, None),  # "." + 5: not a parent + VID (empty parent), a name ".5"
])
def test_parse_master_errors(master, vlan, words):
    if words is None:
        assert vlans.parse_master(master, vlan) == (".5", None)
        return
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        vlans.parse_master(master, vlan)


# -- kernel ------------------------------------------------------------------------------------------
@pytest.fixture
def state(tmp_path, monkeypatch):
    """Registrations and locks in a private directory; checked empty at the end."""
    monkeypatch.setenv("SPLICE_VLAN_DIR", str(tmp_path / "vlans"))
    monkeypatch.setenv("SPLICE_LOCK_DIR", str(tmp_path / "locks"))
    yield tmp_path / "vlans"


def registrations(d) -> list[str]:
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def require_8021q(host_ns) -> None:
    """On a kernel without 8021q: check the clean error and that nothing is left, then skip
    (fail in the VM)."""
    if vlan_supported(host_ns):
        return
    host_ns.sh("ip", "link", "add", "wire0", "type", "veth", "peer", "name", "wire1")
    with pytest.raises(NotSupported, match=r"802.1Q sub-interface 'wire0.10' on 'wire0'.*8021q"):
        run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 10, user="u"))
    host_ns.sh("ip", "link", "del", "wire0")
    only_lo(host_ns)
    missing_kernel_feature("802.1Q VLAN links (8021q): the clean NotSupported checked")


@pytest.fixture
def wire(host_ns, make_ns, state):
    """``wire0`` in the host (MTU 1400), its peer ``wire1`` in a switch namespace with
    ``wire1.10`` = 10.77.10.1/24 and ``wire1.20`` = 10.77.20.1/24."""
    require_8021q(host_ns)
    switch = make_ns()
    host_ns.sh("ip", "link", "add", "wire0", "mtu", "1400", "type", "veth", "peer", "name", "wire1",
               "netns", switch.name)
    host_ns.sh("ip", "link", "set", "wire0", "up")
    switch.sh("ip", "link", "set", "wire1", "up")
    switch.sh("sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")  # ARP answers only on the address's own VLAN
    for vid in (10, 20):
        switch.sh("ip", "link", "add", "link", "wire1", "name", f"wire1.{vid}", "type", "vlan", "id", str(vid))
        switch.sh("ip", "addr", "add", f"10.77.{vid}.1/24", "dev", f"wire1.{vid}")
        switch.sh("ip", "link", "set", f"wire1.{vid}", "up")
    yield switch
    assert registrations(state) == [], "registrations left behind"


def host_links(ns) -> set[str]:
    return ns.links() - {"lo", "wire0"}


@pytest.mark.root
@pytest.mark.needs_vm
@pytest.mark.timeout(120)
def test_made_shared_tagged_and_removed_by_last_user(host_ns, sandbox_ns, wire, state):
    switch = wire
    link, created = run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 10, user="net-a c1 eth0"))
    assert created and link.name == "wire0.10"
    o = oracle.link(host_ns.name, "wire0.10")
    info = o["linkinfo"]["info_data"]
    assert (o["linkinfo"]["info_kind"], info["protocol"], info["id"]) == ("vlan", "802.1Q", 10)
    assert o["link"] == "wire0" and o["mtu"] == 1400 and "UP" in o["flags"]
    assert o["ifalias"] == "splice-vlan:wire0.10"
    # a second user (another network) shares it
    again, created2 = run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 10, user="net-b c2 eth0"))
    assert not created2 and again.index == link.index
    assert run(host_ns, lambda rt: vlans.users(rt, "wire0.10")) == {"net-a c1 eth0", "net-b c2 eth0"}

    # the user link: a macvlan in a sandbox, made with ip; tagged frames reach the switch's VLAN 10
    host_ns.sh("ip", "link", "add", "link", "wire0.10", "name", "mv0", "netns", sandbox_ns.name,
               "type", "macvlan", "mode", "bridge")
    sandbox_ns.sh("ip", "addr", "add", "10.77.10.2/24", "dev", "mv0")
    sandbox_ns.sh("ip", "link", "set", "mv0", "up")
    sandbox_ns.sh("ip", "addr", "add", "10.77.20.2/24", "dev", "mv0")  # VLAN 20's subnet, on VLAN 10
    assert oracle.ping(sandbox_ns.name, "10.77.10.1", count=2, timeout=3)
    assert not oracle.ping(sandbox_ns.name, "10.77.20.1", count=1, timeout=1), "VLAN 20 reached through VLAN 10"
    rx = oracle.ip_json(switch.name, "-s", "link", "show", "wire1.10")[0]["stats64"]["rx"]["packets"]
    assert rx > 0

    # the first user leaves: kept (the other one is registered; its link lives in no host dump)
    sandbox_ns.sh("ip", "link", "del", "mv0")
    assert run(host_ns, lambda rt: vlans.release(rt, "wire0.10", user="net-a c1 eth0")) is False
    assert "wire0.10" in host_ns.links()
    # an unregistered user in the host (made by someone else) keeps it too
    host_ns.sh("ip", "link", "add", "link", "wire0.10", "name", "mvh", "type", "macvlan")
    assert run(host_ns, lambda rt: vlans.release(rt, "wire0.10", user="net-b c2 eth0")) is False
    assert "wire0.10" in host_ns.links()
    host_ns.sh("ip", "link", "del", "mvh")
    # so does a bridge it was added to
    host_ns.sh("ip", "link", "add", "brx", "type", "bridge")
    host_ns.sh("ip", "link", "set", "wire0.10", "master", "brx")
    assert run(host_ns, lambda rt: vlans.release(rt, "wire0.10")) is False
    host_ns.sh("ip", "link", "del", "brx")
    # the last user is gone: deleted; releasing again is a no-op
    assert run(host_ns, lambda rt: vlans.release(rt, "wire0.10")) is True
    assert run(host_ns, lambda rt: vlans.release(rt, "wire0.10", user="net-b c2 eth0")) is False
    assert host_links(host_ns) == set() and sandbox_ns.links() == {"lo"}
    assert switch.links() == {"lo", "wire1", "wire1.10", "wire1.20"}


@pytest.mark.root
@pytest.mark.needs_vm
def test_preexisting_sub_interface_is_used_never_deleted(host_ns, wire, state):
    host_ns.sh("ip", "link", "add", "link", "wire0", "name", "wire0.20", "type", "vlan", "id", "20")
    before = oracle.link(host_ns.name, "wire0.20")
    link, created = run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 20, user="u1"))
    assert not created and link.index == before["ifindex"]
    assert run(host_ns, lambda rt: vlans.release(rt, "wire0.20", user="u1")) is False
    assert run(host_ns, lambda rt: vlans.gc(rt, set())) == []
    after = oracle.link(host_ns.name, "wire0.20")
    assert after["ifindex"] == before["ifindex"] and "ifalias" not in after and "UP" not in after["flags"]
    host_ns.sh("ip", "link", "del", "wire0.20")
    assert host_links(host_ns) == set()


@pytest.mark.root
@pytest.mark.needs_vm
def test_errors_leave_nothing(host_ns, wire, state):
    with pytest.raises(ConfigError, match="parent link 'nosuch0' of the VLAN sub-interface 'nosuch0.10' not found"):
        run(host_ns, lambda rt: vlans.ensure(rt, "nosuch0", 10, user="u"))
    for vid in (0, 4095):
        with pytest.raises(ConfigError, match="outside 1-4094"):
            run(host_ns, lambda rt: vlans.ensure(rt, "wire0", vid, user="u"))
    with pytest.raises(ConfigError, match="'lo' is the loopback"):
        run(host_ns, lambda rt: vlans.ensure(rt, "lo", 10, user="u"))
    # the name is taken by something that is not that VLAN of that parent
    host_ns.sh("ip", "link", "add", "wire0.30", "type", "veth", "peer", "name", "other0")
    with pytest.raises(ConfigError, match="'wire0.30' exists but is not the 802.1Q sub-interface of 'wire0'.*a veth"):
        run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 30, user="u"))
    host_ns.sh("ip", "link", "del", "wire0.30")
    host_ns.sh("ip", "link", "add", "link", "wire0", "name", "wire0.40", "type", "vlan", "id", "41")
    with pytest.raises(ConfigError, match="with VLAN id 40: it is VLAN 41"):
        run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 40, user="u"))
    host_ns.sh("ip", "link", "del", "wire0.40")
    assert host_links(host_ns) == set() and registrations(state) == []


@pytest.mark.root
@pytest.mark.needs_vm
@pytest.mark.timeout(240)
def test_concurrent_users_on_one_vlan(host_ns, sandbox_ns, wire, state, monkeypatch):
    """8 threads ensure / add a user link / delete it / release, on one VLAN, in parallel:
    no ensure ever sees it deleted under it (the user link is always made), and at the end
    it exists iff a user is registered. The windows an unlocked ensure or release would
    lose in (between finding the link and registering; between deciding and deleting) are
    widened with a sleep: with ``link_lock`` replaced by a no-op this test fails
    (LinkNotFound creating the macvlan: its parent deleted under it)."""
    rounds, errors, kept, created, deleted = 10, [], [], [], []
    barrier = threading.Barrier(8, timeout=60)
    for fn in ("_ensure_locked", "_host_users"):
        orig = getattr(vlans, fn)

        def slow(*a, _orig=orig):
            out = _orig(*a)
            time.sleep(0.02)
            return out

        monkeypatch.setattr(vlans, fn, slow)

    def worker(i: int, hns: Netns, sb: Netns) -> None:
        def body(rt):
            for r in range(rounds):
                barrier.wait()  # rounds start together, staggered: users come and go with gaps
                time.sleep(0.004 * ((i + r) % 8) * (1 + r % 3))  # in between (deletions happen)
                user = f"net c{i} eth0"
                link, made = vlans.ensure(rt, "wire0", 10, user=user)
                created.append(made)
                tmp = f"sp{i:02d}{r:04d}"
                rt.add_link("macvlan", tmp, parent=link.index, netns_fd=sb.fd, data=rtnl.Macvlan("bridge"))
                if i % 2 == 0 and r == rounds - 1:
                    kept.append((i, tmp))  # stays: its user remains
                    return
                run(sandbox_ns, lambda srt: srt.delete_link(name=tmp))
                deleted.append(vlans.release(rt, "wire0.10", user=user))

        try:
            rtnl.run(hns, body)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((i, repr(e)))
            barrier.abort()

    with Netns.open(host_ns.path) as hns, Netns.open(sandbox_ns.path) as sb:
        threads = [threading.Thread(target=worker, args=(i, hns, sb)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    # the race was run: the sub-interface was deleted and made again while others worked
    assert sum(created) > 1 and any(deleted), (sum(created), sum(deleted))
    assert len(kept) == 4 and "wire0.10" in host_ns.links()
    assert sandbox_ns.links() == {"lo"} | {tmp for _, tmp in kept}
    assert run(host_ns, lambda rt: vlans.users(rt, "wire0.10")) == {f"net c{i} eth0" for i, _ in kept}
    for n, (i, tmp) in enumerate(kept):
        run(sandbox_ns, lambda srt: srt.delete_link(name=tmp))
        gone = run(host_ns, lambda rt: vlans.release(rt, "wire0.10", user=f"net c{i} eth0"))
        assert gone is (n == len(kept) - 1)
    assert host_links(host_ns) == set() and sandbox_ns.links() == {"lo"}


@pytest.mark.root
@pytest.mark.needs_vm
def test_gc(host_ns, wire, state):
    run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 11, user="live"))       # used: kept
    run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 12))                    # nobody: removed
    run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 13))                    # in_use: kept
    run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 14, user="gone"))       # its link deleted behind
    host_ns.sh("ip", "link", "add", "link", "wire0", "name", "wire0.15", "type", "vlan", "id", "15")  # foreign
    host_ns.sh("ip", "link", "del", "wire0.14")
    assert len(registrations(state)) == 2
    assert run(host_ns, lambda rt: vlans.gc(rt, {"wire0.13"})) == ["wire0.12"]
    assert host_links(host_ns) == {"wire0.11", "wire0.13", "wire0.15"}
    assert len(registrations(state)) == 1  # wire0.14's stale registration dropped
    # the driver drops a stale user, then GC removes what nobody uses
    for user in run(host_ns, lambda rt: vlans.users(rt, "wire0.11")):
        run(host_ns, lambda rt: vlans.release(rt, "wire0.11", user=user))
    assert host_links(host_ns) == {"wire0.13", "wire0.15"}
    assert run(host_ns, lambda rt: vlans.gc(rt)) == ["wire0.13"]
    assert host_links(host_ns) == {"wire0.15"}
    host_ns.sh("ip", "link", "del", "wire0.15")


@pytest.mark.root
def test_errors_that_need_no_8021q(host_ns, state):
    """Checked before any VLAN link is asked for: they run on every kernel."""
    with pytest.raises(ConfigError, match="parent link 'nosuch0' of the VLAN sub-interface 'nosuch0.10' not found"):
        run(host_ns, lambda rt: vlans.ensure(rt, "nosuch0", 10, user="u"))
    with pytest.raises(ConfigError, match="'lo' is the loopback"):
        run(host_ns, lambda rt: vlans.ensure(rt, "lo", 10, user="u"))
    for vid in (0, 4095):
        with pytest.raises(ConfigError, match="outside 1-4094"):
            run(host_ns, lambda rt: vlans.ensure(rt, "lo", vid, user="u"))
    host_ns.sh("ip", "link", "add", "wire0", "type", "veth", "peer", "name", "wire1")
    host_ns.sh("ip", "link", "add", "wire0.30", "type", "veth", "peer", "name", "other0")
    with pytest.raises(ConfigError, match="'wire0.30' exists but is not the 802.1Q sub-interface of 'wire0'.*a veth"):
        run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 30, user="u"))
    # release and gc never touch a link without splice's alias, whatever its name
    assert run(host_ns, lambda rt: vlans.release(rt, "wire0.30", user="u")) is False
    assert run(host_ns, lambda rt: vlans.gc(rt)) == []
    assert run(host_ns, lambda rt: vlans.release(rt, "nosuch0.10")) is False
    assert host_ns.links() == {"lo", "wire0", "wire1", "wire0.30", "other0"}
    host_ns.sh("ip", "link", "del", "wire0")
    host_ns.sh("ip", "link", "del", "wire0.30")
    only_lo(host_ns)
    assert registrations(state) == []


@pytest.mark.root
@pytest.mark.needs_vm
def test_registration_counts_only_for_the_link_it_was_made_for(host_ns, wire, state):
    first, _ = run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 10, user="old"))
    host_ns.sh("ip", "link", "del", "wire0.10")  # deleted behind splice's back (its users die with it)
    second, created = run(host_ns, lambda rt: vlans.ensure(rt, "wire0", 10))
    assert created and second.index != first.index
    assert run(host_ns, lambda rt: vlans.users(rt, "wire0.10")) == set()
    assert run(host_ns, lambda rt: vlans.release(rt, "wire0.10")) is True
    assert host_links(host_ns) == set()
