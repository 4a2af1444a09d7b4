"""MAC spoof check (splice.libnet.spoofchk) in throwaway namespaces, asserted with the oracle."""

from __future__ import annotations

import pytest

from splice.conformance import oracle
from splice.libnet.netns import Netns
from splice.libnet.spoofchk import MacSpoofCheck

pytestmark = [pytest.mark.root, pytest.mark.timeout(30)]

TABLE = "splice_filter"
OWNER1, OWNER2 = "n1 c-one eth0", "n1 c-two eth0"
MAC1, MAC2 = "02:00:00:00:01:01", "02:00:00:00:01:02"


def spoof(ns, method: str, *args, **kwargs):
    with Netns.open(ns.path) as n:
        return n.run(lambda: getattr(MacSpoofCheck(), method)(*args, **kwargs))



def elements(ns) -> dict[str, dict]:
    """set name -> {key: owner comment} for the splice_filter sets (oracle: nft -j)."""
    out: dict[str, dict] = {"spoof_ifaces": {}, "spoof_allow": {}}
    for tbl, name, e in oracle.nft_map_elements(ns.name):
        if tbl == TABLE and name in out:
            key, _, comment = oracle.element_parts(e)
            out[name][key] = comment
    return out


def assert_nothing_left(ns) -> None:
    assert elements(ns) == {"spoof_ifaces": {}, "spoof_allow": {}}


def test_add_remove_check_gc(host_ns):
    spoof(host_ns, "add", OWNER1, "vsp1", MAC1.upper())
    spoof(host_ns, "add", OWNER2, "vsp2", MAC2)
    spoof(host_ns, "add", OWNER1, "vsp1", MAC1)  # idempotent
    assert elements(host_ns) == {
        "spoof_ifaces": {"vsp1": OWNER1, "vsp2": OWNER2},
        "spoof_allow": {("vsp1", MAC1): OWNER1, ("vsp2", MAC2): OWNER2},
    }
    chain = [c for c in oracle.nft_objects(host_ns.name, "chain") if c["table"] == TABLE]
    assert chain == [{"family": "bridge", "table": TABLE, "name": "prerouting", "handle": chain[0]["handle"],
                      "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}]
    assert "iifname @spoof_ifaces iifname . ether saddr != @spoof_allow drop" in oracle.nft_text(host_ns.name)
    assert len([r for r in oracle.nft_objects(host_ns.name, "rule") if r["table"] == TABLE]) == 1
    assert spoof(host_ns, "check", OWNER1, "vsp1", MAC1) == []

    # re-add with another MAC replaces the allowed MAC, it does not add a second one
    spoof(host_ns, "add", OWNER1, "vsp1", "02:00:00:00:01:99")
    assert elements(host_ns)["spoof_allow"] == {("vsp1", "02:00:00:00:01:99"): OWNER1, ("vsp2", MAC2): OWNER2}
    problems = spoof(host_ns, "check", OWNER1, "vsp1", MAC1)
    assert any("not the allowed source MAC" in p for p in problems) and any("also allows" in p for p in problems)
    assert any("not guarded" in p for p in spoof(host_ns, "check", OWNER1, "vsp9", MAC1))

    spoof(host_ns, "remove", OWNER1)
    spoof(host_ns, "remove", OWNER1)  # twice is fine
    assert elements(host_ns) == {"spoof_ifaces": {"vsp2": OWNER2}, "spoof_allow": {("vsp2", MAC2): OWNER2}}
    spoof(host_ns, "remove", OWNER2, "vsp2", MAC2)  # the one-transaction form
    spoof(host_ns, "remove", OWNER2, "vsp2", MAC2)
    assert_nothing_left(host_ns)

    spoof(host_ns, "add", OWNER1, "vsp1", MAC1)
    spoof(host_ns, "add", OWNER2, "vsp2", MAC2)
    spoof(host_ns, "add", "n2 c-three eth0", "vsp3", "02:00:00:00:01:03")
    assert spoof(host_ns, "gc", "n1 ", lambda o: o == OWNER1) == [OWNER2]
    assert set(elements(host_ns)["spoof_ifaces"]) == {"vsp1", "vsp3"}
    assert spoof(host_ns, "gc", "", lambda o: False) == [OWNER1, "n2 c-three eth0"]
    assert_nothing_left(host_ns)


def test_remove_on_a_fresh_host_is_a_noop(host_ns):
    spoof(host_ns, "remove", OWNER1)
    spoof(host_ns, "remove", OWNER1, "vsp1", MAC1)
    assert spoof(host_ns, "check", OWNER1, "vsp1", MAC1) == ["table bridge splice_filter does not exist"]
    assert not any(t["name"] == TABLE for t in oracle.nft_objects(host_ns.name, "table"))


def test_invalid_arguments(host_ns):
    with pytest.raises(ValueError):
        spoof(host_ns, "add", OWNER1, "vsp1", "02:00:00:00:01")
    with pytest.raises(ValueError):
        spoof(host_ns, "add", OWNER1, "a-name-longer-than-15", MAC1)
    assert not any(t["name"] == TABLE for t in oracle.nft_objects(host_ns.name, "table"))


def _ping(src, dst_ip: str) -> bool:
    return oracle.ping(src.name, dst_ip, count=1, timeout=1)


def test_spoofed_source_mac_is_dropped(make_ns):
    host, c1, c2 = make_ns(), make_ns(), make_ns()
    host.sh("ip", "link", "add", "br0", "type", "bridge")
    host.sh("ip", "link", "set", "br0", "up")
    for c, port, ip, mac in ((c1, "vsp1", "10.98.0.2/24", MAC1), (c2, "vsp2", "10.98.0.3/24", MAC2)):
        host.sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", c.name)
        host.sh("ip", "link", "set", port, "master", "br0")
        host.sh("ip", "link", "set", port, "up")
        c.sh("ip", "link", "set", "eth0", "address", mac)
        c.sh("ip", "addr", "add", ip, "dev", "eth0")
        c.sh("ip", "link", "set", "eth0", "up")

    spoof(host, "add", OWNER1, "vsp1", MAC1)
    assert elements(host)["spoof_allow"] == {("vsp1", MAC1): OWNER1}
    assert _ping(c1, "10.98.0.3")  # the registered MAC passes

    c1.sh("ip", "link", "set", "eth0", "address", "02:00:00:00:01:66")
    c2.sh("ip", "neigh", "flush", "all")
    assert not _ping(c1, "10.98.0.3")  # another source MAC is dropped at the bridge
    assert _ping(c2, "10.98.0.2") is False  # c2's ARP gets no answer through the guarded port

    spoof(host, "remove", OWNER1)
    assert_nothing_left(host)
    c2.sh("ip", "neigh", "flush", "all")
    assert _ping(c1, "10.98.0.3")  # unguarded again


def test_common_paths_do_not_list_the_table(host_ns):
    from splice.libnet.nft import Nft

    class CountingNft(Nft):
        listings = 0

        def list_json(self, obj):
            CountingNft.listings += "table" in obj
            return super().list_json(obj)

    def body():
        s = MacSpoofCheck(CountingNft())
        s.add(OWNER1, "vsp1", MAC1)  # first use
        s.add(OWNER2, "vsp2", MAC2)
        s.add(OWNER1, "vsp1", MAC1)  # repeated ADD
        s.remove(OWNER1, "vsp1", MAC1)
        s.remove(OWNER1, "vsp1", MAC1)  # repeated DEL
        fast = CountingNft.listings
        s.remove(OWNER2)  # by owner only: lists
        return fast, CountingNft.listings
    with Netns.open(host_ns.path) as ns:
        assert ns.run(body) == (0, 1)
    assert_nothing_left(host_ns)
