"""splice-ipvlan (+ splice-ipam) through the installed executables, run like libcni.

This machine's kernel lacks ipvlan (and 8021q): the tests that make an ipvlan are
``needs_vm`` and run in the user-mode-linux guest (scripts/vm-run.sh, from scripts/test.sh);
on the host they only check that ADD fails cleanly with the kernel's refusal. The master is
a veth in the throwaway host namespace whose peer sits in a "switch" namespace holding
10.89.0.254/24, so the containers' traffic really leaves the master.
"""

from __future__ import annotations

import subprocess

import pytest

from splice.conformance import oracle
from splice.conformance.runtime import CniCallError

from ..conftest import make_switch, missing_kernel_feature
from .conftest import ALL_VERSIONS, Leaks, count_leases, vt

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

MASTER = "ipv0"
SWITCH_IP = "10.89.0.254"
NET = "spt-ipv"


def ipvlan_supported(ns) -> bool:
    """Probe (not a version check): can ``ip link add`` make an ipvlan in ``ns``?"""
    ns.sh("ip", "link", "add", "probe1", "type", "veth", "peer", "name", "probe2")
    try:
        return ns.sh("ip", "link", "add", "link", "probe1", "name", "probe0", "type", "ipvlan",
                     check=False).returncode == 0
    finally:
        ns.sh("ip", "link", "del", "probe1")


@pytest.fixture
def switch(host_ns, make_ns):
    return make_switch(host_ns, make_ns, MASTER, SWITCH_IP)


@pytest.fixture
def ipvleaks(host_ns):
    return Leaks(host_ns, allow={MASTER})


@pytest.fixture
def kernel(host_ns, switch):
    """The ipvlan tests' gate: in the guest the kernel must have ipvlan; on the host
    (no ipvlan) the test is skipped, to run in the guest."""
    if not ipvlan_supported(host_ns):
        missing_kernel_feature("ipvlan links")


def conflist(ipam_dir, version: str = "1.0.0", subnet: str = "10.89.0.0/24", gateway: str | None = SWITCH_IP,
             name: str = NET, range_start: str | None = None, **opts) -> dict:
    rng = {"subnet": subnet}
    if range_start:
        rng["rangeStart"] = range_start
    if gateway:
        rng["gateway"] = gateway
    plugin = {
        "type": "splice-ipvlan",
        "master": MASTER,
        "ipam": {"type": "splice-ipam", "ranges": [[rng]], "routes": [{"dst": "0.0.0.0/0"}],
                 "dataDir": str(ipam_dir)},
    }
    plugin.update(opts)
    plugin = {k: v for k, v in plugin.items() if v is not None}
    return {"cniVersion": version, "name": name, "plugins": [plugin]}


def ipvlan_flag(link: dict) -> str:
    """The flag as `ip -j` shows it: a key ``bridge``/``private``/``vepa`` set to true."""
    data = link["linkinfo"]["info_data"]
    got = [f for f in ("bridge", "private", "vepa") if data.get(f) is True]
    assert len(got) == 1, data
    return got[0]


def addr_of(result: dict, version: str) -> str:
    return result["ip4"]["ip"] if vt(version) < (0, 3, 0) else result["ips"][0]["address"]


def clean(leaks, ipam_dir, *sandboxes, network: str = NET) -> None:
    leaks.assert_clean(list(sandboxes), [ipam_dir], network=network)


def test_host_kernel_without_ipvlan_fails_cleanly(runtime, host_ns, switch, sandbox_ns, ipam_dir, ipvleaks):
    """Where the kernel has no ipvlan, ADD says so (code 103) and leaves nothing."""
    if ipvlan_supported(host_ns):
        pytest.skip("this kernel has ipvlan: the refusal cannot be provoked (the other tests run here)")
    with pytest.raises(CniCallError, match="no ipvlan support in this kernel") as e:
        runtime.add(conflist(ipam_dir), "ctr-1", sandbox_ns.path)
    assert e.value.code == 103
    clean(ipvleaks, ipam_dir, sandbox_ns)


@pytest.mark.parametrize("opts,msg", [
    ({"mode": "l4"}, "mode must be one of l2, l3, l3s"),
    ({"flag": "nope"}, "flag must be one of bridge, private, vepa"),
    ({"mtu": "big"}, "mtu must be an integer"),
    ({"master": "ipv0.4095"}, "outside 1-4094"),
    ({"linkInContainer": "yes"}, "linkInContainer must be a boolean"),
])
def test_config_errors_leave_nothing(opts, msg, runtime, host_ns, switch, sandbox_ns, ipam_dir, ipvleaks):
    with pytest.raises(CniCallError, match=msg) as e:
        runtime.add(conflist(ipam_dir, **opts), "ctr-1", sandbox_ns.path)
    assert e.value.code == 7
    clean(ipvleaks, ipam_dir, sandbox_ns)


# ---------------------------------------------------------------- in the guest (ipvlan)

@pytest.mark.needs_vm
@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_l2_containers_reach_each_other_and_the_switch(version, kernel, runtime, host_ns, switch, make_ns,
                                                       ipam_dir, ipvleaks):
    conf = conflist(ipam_dir, version)
    c1, c2 = make_ns(), make_ns()
    r1 = runtime.add(conf, "ctr-1", c1.path)
    r2 = runtime.add(conf, "ctr-2", c2.path)
    assert r1["cniVersion"] == version
    master_mac = oracle.link(host_ns.name, MASTER)["address"]
    link = oracle.link(c1.name, "eth0")
    assert link["linkinfo"]["info_kind"] == "ipvlan"
    assert link["linkinfo"]["info_data"]["mode"] == "l2"
    assert link["address"] == master_mac == oracle.link(c2.name, "eth0")["address"]  # the master's MAC
    if vt(version) >= (0, 3, 0):
        assert [i["name"] for i in r1["interfaces"]] == ["eth0"]
        assert r1["interfaces"][0]["sandbox"] == c1.path and r1["interfaces"][0]["mac"] == master_mac
        assert r1["ips"][0]["interface"] == 0 and r1["ips"][0]["gateway"] == SWITCH_IP
    a1, a2 = addr_of(r1, version), addr_of(r2, version)
    assert oracle.addresses(c1.name, "eth0") == [a1]
    assert oracle.ping(c1.name, a2.split("/")[0])
    assert oracle.ping(c1.name, SWITCH_IP) and oracle.ping(c2.name, SWITCH_IP)
    assert any(r["dst"] == "default" and r.get("gateway") == SWITCH_IP for r in oracle.routes(c2.name))
    if vt(version) >= (0, 4, 0):
        runtime.check(conf, "ctr-1", c1.path)
    if vt(version) >= (1, 1, 0):
        runtime.status(conf)
    runtime.delete(conf, "ctr-1", c1.path)
    runtime.delete(conf, "ctr-1", c1.path)  # twice
    runtime.delete(conf, "ctr-2", c2.path)
    clean(ipvleaks, ipam_dir, c1, c2)


@pytest.mark.needs_vm
@pytest.mark.parametrize("mode", ["l3", "l3s"])
def test_l3_two_subnets_routed_through_the_device(mode, kernel, runtime, switch, make_ns, ipam_dir, ipvleaks):
    """l3/l3s: no gateway; a default route via the device; two subnets reach each other
    through the master's ipvlan port (the kernel routes by destination address)."""
    conf_a = conflist(ipam_dir, "1.1.0", subnet="10.89.1.0/24", gateway=None, name="spt-ipv-a", mode=mode)
    conf_b = conflist(ipam_dir, "1.1.0", subnet="10.89.2.0/24", gateway=None, name="spt-ipv-b", mode=mode)
    c1, c2 = make_ns(), make_ns()
    r1 = runtime.add(conf_a, "ctr-1", c1.path)
    r2 = runtime.add(conf_b, "ctr-2", c2.path)
    assert oracle.link(c1.name, "eth0")["linkinfo"]["info_data"]["mode"] == mode
    assert "gateway" not in r1["ips"][0]
    assert r1["routes"] == [{"dst": "0.0.0.0/0"}]
    dflt = [r for r in oracle.routes(c1.name) if r["dst"] == "default"]
    assert len(dflt) == 1 and "gateway" not in dflt[0] and dflt[0]["dev"] == "eth0"
    a2 = r2["ips"][0]["address"].split("/")[0]
    assert oracle.ping(c1.name, a2) and oracle.ping(c2.name, r1["ips"][0]["address"].split("/")[0])
    runtime.check(conf_a, "ctr-1", c1.path)
    runtime.check(conf_b, "ctr-2", c2.path)
    runtime.delete(conf_a, "ctr-1", c1.path)
    runtime.delete(conf_b, "ctr-2", c2.path)
    clean(ipvleaks, ipam_dir, c1, network="spt-ipv-a")
    clean(ipvleaks, ipam_dir, c2, network="spt-ipv-b")


@pytest.mark.needs_vm
def test_private_flag_isolates_and_vepa_is_set(kernel, runtime, switch, make_ns, ipam_dir, ipvleaks):
    conf = conflist(ipam_dir, flag="private")
    c1, c2 = make_ns(), make_ns()
    runtime.add(conf, "ctr-1", c1.path)
    r2 = runtime.add(conf, "ctr-2", c2.path)
    assert ipvlan_flag(oracle.link(c1.name, "eth0")) == "private"
    assert not oracle.ping(c1.name, r2["ips"][0]["address"].split("/")[0], timeout=1)
    assert oracle.ping(c1.name, SWITCH_IP)
    runtime.check(conf, "ctr-1", c1.path)
    with pytest.raises(CniCallError, match="flag private, configured bridge") as e:
        runtime.check(conflist(ipam_dir), "ctr-1", c1.path)
    assert e.value.code == 105
    runtime.delete(conf, "ctr-1", c1.path)
    runtime.delete(conf, "ctr-2", c2.path)
    vepa = conflist(ipam_dir, flag="vepa")
    runtime.add(vepa, "ctr-3", c1.path)
    assert ipvlan_flag(oracle.link(c1.name, "eth0")) == "vepa"
    assert oracle.ping(c1.name, SWITCH_IP)
    runtime.delete(vepa, "ctr-3", c1.path)
    clean(ipvleaks, ipam_dir, c1, c2)


@pytest.mark.needs_vm
def test_mtu_mac_and_errors_leave_nothing(kernel, runtime, host_ns, switch, make_ns, ipam_dir, ipvleaks):
    c1, c2 = make_ns(), make_ns()
    conf = conflist(ipam_dir, "1.1.0", mtu=1400)
    runtime.add(conf, "ctr-1", c1.path)
    assert oracle.link(c1.name, "eth0")["mtu"] == 1400
    runtime.check(conf, "ctr-1", c1.path)
    # the kernel would accept an ipvlan MTU above the master's: splice refuses it
    for opts, code, msg in [({"mtu": 9000}, 7, "mtu 9000 is larger than the MTU 1500 of master 'ipv0'"),
                            ({"master": "nope0"}, 7, "master 'nope0' not found"),
                            ({"master": "lo"}, 7, "loopback"),
                            ({"master": "nope0.10"}, 7, "parent link 'nope0' of the VLAN sub-interface")]:
        with pytest.raises(CniCallError, match=msg) as e:
            runtime.add(conflist(ipam_dir, "1.1.0", **opts), "ctr-2", c2.path)
        assert e.value.code == code
        assert oracle.link_names(c2.name) == {"lo"}
    # a MAC asked by the runtime: an ipvlan has its master's
    with pytest.raises(CniCallError, match="MAC of its master") as e:
        runtime.add(conf, "ctr-2", c2.path, cni_args="IgnoreUnknown=1;MAC=02:00:00:00:bb:02")
    assert e.value.code == 7
    assert oracle.link_names(c2.name) == {"lo"} and count_leases(ipam_dir, NET) == 1
    # the name is taken in the sandbox
    c2.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "xpeer")
    with pytest.raises(CniCallError) as e:
        runtime.add(conf, "ctr-2", c2.path)
    assert e.value.code == 104 and oracle.link_names(c2.name) == {"lo", "eth0", "xpeer"}
    c2.sh("ip", "link", "del", "eth0")
    assert oracle.link_names(host_ns.name) == {"lo", MASTER} and count_leases(ipam_dir, NET) == 1
    runtime.delete(conf, "ctr-1", c1.path)
    clean(ipvleaks, ipam_dir, c1, c2)


@pytest.mark.needs_vm
def test_macvlan_and_ipvlan_on_one_master_refused_in_words(kernel, runtime, host_ns, switch, make_ns, ipam_dir,
                                                           ipvleaks):
    c1, c2 = make_ns(), make_ns()
    ipv = conflist(ipam_dir)
    mv = conflist(ipam_dir, name="spt-mv")
    mv["plugins"][0]["type"] = "splice-macvlan"
    runtime.add(ipv, "ctr-1", c1.path)
    with pytest.raises(CniCallError, match="the kernel refuses a macvlan on it") as e:
        runtime.add(mv, "ctr-2", c2.path)
    assert e.value.code == 103
    assert oracle.link_names(c2.name) == {"lo"} and count_leases(ipam_dir, "spt-mv") == 0
    runtime.delete(ipv, "ctr-1", c1.path)
    runtime.add(mv, "ctr-2", c2.path)
    with pytest.raises(CniCallError, match="the kernel refuses an ipvlan on it") as e:
        runtime.add(ipv, "ctr-1", c1.path)
    assert e.value.code == 103
    assert oracle.link_names(c1.name) == {"lo"} and count_leases(ipam_dir, NET) == 0
    runtime.delete(mv, "ctr-2", c2.path)
    clean(ipvleaks, ipam_dir, c1, c2)
    clean(ipvleaks, ipam_dir, network="spt-mv")


@pytest.mark.needs_vm
def test_del_forms_release_the_lease(kernel, runtime, switch, make_ns, ipam_dir, ipvleaks):
    conf = conflist(ipam_dir, "1.1.0")
    c1, c2, c3 = make_ns(), make_ns(), make_ns()
    for n, c in enumerate((c1, c2, c3)):
        runtime.add(conf, f"ctr-{n}", c.path)
    assert count_leases(ipam_dir, NET) == 3
    subprocess.run(["ip", "netns", "del", c1.name], check=True)  # netns gone
    runtime.delete(conf, "ctr-0", c1.path)
    runtime.delete(conf, "ctr-1", None)  # no netns
    runtime.delete(conf, "ctr-2", c3.path, use_cache=False)  # no prevResult
    runtime.delete(conf, "ctr-2", c3.path, use_cache=False)
    assert count_leases(ipam_dir, NET) == 0
    clean(ipvleaks, ipam_dir, c3)


@pytest.mark.needs_vm
def test_vlan_master_made_shared_and_removed_by_last_del(kernel, runtime, host_ns, switch, make_ns, ipam_dir,
                                                        ipvleaks):
    """``ipv0.10``: made on demand (tagged frames reach the switch's VLAN 10), shared by two
    containers and a second network, kept while used, removed by the last DEL."""
    switch.sh("ip", "link", "add", "link", "sw0", "name", "sw0.10", "type", "vlan", "id", "10")
    switch.sh("ip", "link", "set", "sw0.10", "up")
    switch.sh("ip", "addr", "add", "10.89.10.254/24", "dev", "sw0.10")
    conf = conflist(ipam_dir, "1.1.0", subnet="10.89.10.0/24", gateway="10.89.10.254", master="ipv0.10")
    other = conflist(ipam_dir, "1.1.0", subnet="10.89.10.0/24", gateway="10.89.10.254", name="spt-ipv-o",
                     range_start="10.89.10.100", master="ipv0", vlan=10)  # one L2 segment: disjoint ranges
    c1, c2, c3 = make_ns(), make_ns(), make_ns()
    runtime.add(conf, "ctr-1", c1.path)
    r2 = runtime.add(conf, "ctr-2", c2.path)
    runtime.add(other, "ctr-3", c3.path)
    sub = oracle.link(host_ns.name, "ipv0.10")
    assert sub["linkinfo"]["info_kind"] == "vlan" and sub["linkinfo"]["info_data"]["id"] == 10
    assert oracle.ping(c1.name, "10.89.10.254") and oracle.ping(c3.name, "10.89.10.254")
    assert oracle.ping(c1.name, r2["ips"][0]["address"].split("/")[0])
    runtime.delete(conf, "ctr-1", c1.path)
    runtime.delete(conf, "ctr-2", c2.path)
    assert "ipv0.10" in oracle.link_names(host_ns.name) and oracle.ping(c3.name, "10.89.10.254")
    runtime.delete(other, "ctr-3", c3.path)
    assert oracle.link_names(host_ns.name) == {"lo", MASTER}
    clean(ipvleaks, ipam_dir, c1, c2)
    clean(ipvleaks, ipam_dir, c3, network="spt-ipv-o")


@pytest.mark.needs_vm
def test_chained_without_ipam_takes_prev_result_addresses(kernel, cni, switch, sandbox_ns, ipvleaks):
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "x"}],
            "ips": [{"address": "10.89.0.42/24", "gateway": SWITCH_IP}], "routes": [{"dst": "0.0.0.0/0"}]}
    conf = {"cniVersion": "1.0.0", "name": NET, "type": "splice-ipvlan", "master": MASTER, "prevResult": prev}
    r = cni.run("splice-ipvlan", "ADD", conf, netns=sandbox_ns.path)
    assert r.rc == 0, r.stdout + r.stderr
    out = r.json
    assert [i["name"] for i in out["interfaces"]] == ["x", "eth0"]
    assert out["ips"] == [{"address": "10.89.0.42/24", "gateway": SWITCH_IP, "interface": 1}]
    assert oracle.ping(sandbox_ns.name, SWITCH_IP)
    conf["prevResult"] = out
    assert cni.run("splice-ipvlan", "CHECK", conf, netns=sandbox_ns.path).rc == 0
    assert cni.run("splice-ipvlan", "DEL", conf, netns=sandbox_ns.path).rc == 0
    ipvleaks.assert_clean([sandbox_ns], [], network=NET)
