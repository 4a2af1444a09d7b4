"""splice-bridge + splice-ipam through the installed executables, run like libcni."""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import threading

import pytest

from splice.conformance import oracle
from splice.conformance.runtime import CniCallError

from ..conftest import missing_kernel_feature, vlan_filtering_supported
from .conftest import ALL_VERSIONS, bridge_conflist, count_leases, vt

pytestmark = pytest.mark.root


def sandbox_addr(result: dict, version: str) -> str:
    if vt(version) < (0, 3, 0):
        return result["ip4"]["ip"]
    return result["ips"][0]["address"]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_add_check_del_every_version(version, runtime, host_ns, sandbox_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, version)
    result = runtime.add(conf, "ctr-1", sandbox_ns.path)
    assert result["cniVersion"] == version
    if vt(version) < (0, 3, 0):
        assert "interfaces" not in result and "ips" not in result
        assert result["ip4"]["gateway"] == "10.77.0.1"
    else:
        assert [i["name"] for i in result["interfaces"]] == ["sptbr0", result["interfaces"][1]["name"], "eth0"]
        assert result["interfaces"][2]["sandbox"] == sandbox_ns.path
        assert result["ips"][0]["interface"] == 2
        assert result["ips"][0]["gateway"] == "10.77.0.1"
        if vt(version) >= (1, 0, 0):
            assert "version" not in result["ips"][0]
        else:
            assert result["ips"][0]["version"] == "4"
    addr = sandbox_addr(result, version)
    assert oracle.addresses(sandbox_ns.name, "eth0") == [addr]
    iface = ipaddress.ip_interface(addr)
    assert iface.network == ipaddress.ip_network("10.77.0.0/24"), addr  # the subnet and its prefix length
    assert iface.ip not in (ipaddress.ip_address("10.77.0.0"), ipaddress.ip_address("10.77.0.1"),
                            ipaddress.ip_address("10.77.0.255")), addr  # not the network, gateway, broadcast
    assert "10.77.0.1/24" in oracle.addresses(host_ns.name, "sptbr0")
    assert oracle.ping(sandbox_ns.name, "10.77.0.1")
    if vt(version) >= (0, 4, 0):
        runtime.check(conf, "ctr-1", sandbox_ns.path)
    if vt(version) >= (1, 1, 0):
        runtime.status(conf)
    runtime.delete(conf, "ctr-1", sandbox_ns.path)
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_two_containers_talk_and_masquerade(runtime, host_ns, make_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.1.0", isDefaultGateway=True)
    c1, c2 = make_ns(), make_ns()
    r1 = runtime.add(conf, "ctr-a", c1.path)
    r2 = runtime.add(conf, "ctr-b", c2.path)
    a1 = r1["ips"][0]["address"].split("/")[0]
    a2 = r2["ips"][0]["address"].split("/")[0]
    assert a1 != a2
    assert oracle.ping(c1.name, a2)
    # default route via the gateway
    routes = oracle.routes(c1.name)
    assert any(r["dst"] == "default" and r.get("gateway") == "10.77.0.1" for r in routes)
    # one masquerade element per container, tagged with its owner
    elements = oracle.nft_map_elements(host_ns.name)
    comments = json.dumps(elements)
    assert "ctr-a" in comments and "ctr-b" in comments
    runtime.delete(conf, "ctr-a", c1.path)
    runtime.delete(conf, "ctr-b", c2.path)
    leaks.assert_clean([c1, c2], [ipam_dir])


@pytest.mark.parametrize("variant", ["twice", "netns-gone", "no-netns-env", "no-prevresult", "iface-gone"])
def test_del_is_idempotent(variant, runtime, host_ns, make_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    sb = make_ns()
    runtime.add(conf, "ctr-del", sb.path)
    sandboxes = [sb]
    if variant == "twice":
        runtime.delete(conf, "ctr-del", sb.path)
        runtime.delete(conf, "ctr-del", sb.path, use_cache=False)
    elif variant == "netns-gone":
        subprocess.run(["ip", "netns", "del", sb.name], check=True)
        sandboxes = []
        runtime.delete(conf, "ctr-del", sb.path)
    elif variant == "no-netns-env":
        runtime.delete(conf, "ctr-del", None)
        # like containerd: the sandbox dies afterwards, taking the veth with it
        subprocess.run(["ip", "netns", "del", sb.name], check=True)
        sandboxes = []
        runtime.delete(conf, "ctr-del", None, use_cache=False)
    elif variant == "no-prevresult":
        runtime.delete(conf, "ctr-del", sb.path, use_cache=False)
    elif variant == "iface-gone":
        subprocess.run(["ip", "-n", sb.name, "link", "del", "eth0"], check=True)
        runtime.delete(conf, "ctr-del", sb.path)
    leaks.assert_clean(sandboxes, [ipam_dir])


def test_del_never_added_succeeds(runtime, sandbox_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    runtime.delete(conf, "never-added", sandbox_ns.path)
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_add_fails_when_interface_exists(runtime, sandbox_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    runtime.add(conf, "ctr-x", sandbox_ns.path)
    with pytest.raises(CniCallError) as e:
        runtime.add(conf, "ctr-y", sandbox_ns.path)
    assert e.value.code == 104
    runtime.delete(conf, "ctr-x", sandbox_ns.path)
    # the failed ADD released its reservation; the runtime's DEL for it is harmless
    runtime.delete(conf, "ctr-y", sandbox_ns.path, use_cache=False)
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_check_detects_missing_address(runtime, sandbox_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    result = runtime.add(conf, "ctr-c", sandbox_ns.path)
    runtime.check(conf, "ctr-c", sandbox_ns.path)
    subprocess.run(["ip", "-n", sandbox_ns.name, "addr", "del", result["ips"][0]["address"], "dev", "eth0"], check=True)
    with pytest.raises(CniCallError) as e:
        runtime.check(conf, "ctr-c", sandbox_ns.path)
    assert e.value.code == 105
    assert result["ips"][0]["address"].split("/")[0] in e.value.error["msg"]
    runtime.delete(conf, "ctr-c", sandbox_ns.path)
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_check_detects_missing_masquerade(runtime, host_ns, sandbox_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    runtime.add(conf, "ctr-m", sandbox_ns.path)
    host_ns.sh("nft", "flush", "set", "inet", "splice_nat", "src4")  # the masquerade entries (masq.py)
    with pytest.raises(CniCallError) as e:
        runtime.check(conf, "ctr-m", sandbox_ns.path)
    assert e.value.code == 105
    runtime.delete(conf, "ctr-m", sandbox_ns.path)
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_gc_removes_stale_attachments(runtime, host_ns, make_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.1.0")
    keep, stale = make_ns(), make_ns()
    runtime.add(conf, "ctr-keep", keep.path)
    runtime.add(conf, "ctr-stale", stale.path)
    # the stale container's sandbox disappears without a DEL (a crash, a reboot)
    subprocess.run(["ip", "netns", "del", stale.name], check=True)
    errors = runtime.gc(conf, [("ctr-keep", "eth0")])
    assert errors == []
    assert count_leases(ipam_dir, "spt-net") == 1
    assert "ctr-stale" not in json.dumps(oracle.nft_map_elements(host_ns.name))
    assert "ctr-keep" in json.dumps(oracle.nft_map_elements(host_ns.name))
    runtime.check(conf, "ctr-keep", keep.path)
    runtime.delete(conf, "ctr-keep", keep.path)
    leaks.assert_clean([keep], [ipam_dir])


def test_pool_exhaustion_leaves_nothing(runtime, host_ns, make_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.1.0")
    conf["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10", "rangeEnd": "10.77.0.11"}]]
    sbs = [make_ns() for _ in range(3)]
    runtime.add(conf, "ctr-0", sbs[0].path)
    runtime.status(conf)
    runtime.add(conf, "ctr-1", sbs[1].path)
    with pytest.raises(CniCallError) as st:
        runtime.status(conf)  # STATUS: the pool is exhausted -> 50 "not available"
    assert st.value.code == 50 and "10.77.0.0/24" in st.value.error["msg"]
    with pytest.raises(CniCallError) as e:
        runtime.add(conf, "ctr-2", sbs[2].path)
    assert e.value.code == 101
    assert oracle.link_names(sbs[2].name) == {"lo"}
    assert len([n for n in oracle.link_names(host_ns.name) if n.startswith("veth")]) == 2
    for i in range(3):
        runtime.delete(conf, f"ctr-{i}", sbs[i].path, use_cache=False)
    leaks.assert_clean(sbs, [ipam_dir])


def test_first_adds_race_to_create_the_bridge(runtime, host_ns, make_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    sbs = [make_ns() for _ in range(2)]
    results, errors = {}, []

    def go(i):
        try:
            results[i] = runtime.add(conf, f"race-{i}", sbs[i].path)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results[0]["ips"][0]["address"] != results[1]["ips"][0]["address"]
    for i in range(2):
        runtime.delete(conf, f"race-{i}", sbs[i].path)
    leaks.assert_clean(sbs, [ipam_dir])


def test_16_concurrent_adds_get_distinct_addresses(runtime, host_ns, make_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    sbs = [make_ns() for _ in range(16)]
    results, errors = {}, []

    def go(i):
        try:
            results[i] = runtime.add(conf, f"many-{i}", sbs[i].path)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    addrs = {results[i]["ips"][0]["address"] for i in range(16)}
    assert len(addrs) == 16
    for i in range(16):
        assert oracle.addresses(sbs[i].name, "eth0") == [results[i]["ips"][0]["address"]]
    for i in range(16):
        runtime.delete(conf, f"many-{i}", sbs[i].path)
    leaks.assert_clean(sbs, [ipam_dir])


FAILPOINTS = ["ipam.allocated", "bridge.veth_created", "bridge.sandbox_configured", "bridge.masq_added"]


@pytest.mark.parametrize("cleanup", ["del", "gc", "gc-sandbox-alive"])
@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_add_killed_midway_then_cleanup(failpoint, cleanup, runtime, host_ns, sandbox_ns, ipam_dir, leaks):
    """SIGKILL an ADD at a step (SPLICE_FAILPOINT=<step>:kill), then DEL or GC: nothing left."""
    conf = bridge_conflist(ipam_dir, "1.1.0")
    runtime.extra_env["SPLICE_FAILPOINT"] = f"{failpoint}:kill"
    with pytest.raises(CniCallError) as e:
        runtime.add(conf, "ctr-kill", sandbox_ns.path)
    assert e.value.rc == -signal.SIGKILL
    runtime.extra_env.pop("SPLICE_FAILPOINT")
    if cleanup == "del":
        runtime.delete(conf, "ctr-kill", sandbox_ns.path, use_cache=False)
        leaks.assert_clean([sandbox_ns], [ipam_dir])
    elif cleanup == "gc":
        subprocess.run(["ip", "netns", "del", sandbox_ns.name], check=True)
        assert runtime.gc(conf, []) == []
        leaks.assert_clean([], [ipam_dir])
    else:  # the sandbox lives on (a runtime that lost track of it): GC alone must clean up
        assert runtime.gc(conf, []) == []
        leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_add_failure_rolls_back(runtime, host_ns, sandbox_ns, ipam_dir, leaks):
    """A failing step (SPLICE_FAILPOINT=<step>:error) makes ADD undo everything it made."""
    conf = bridge_conflist(ipam_dir, "1.0.0")
    for fp in FAILPOINTS:
        runtime.extra_env["SPLICE_FAILPOINT"] = f"{fp}:error"
        with pytest.raises(CniCallError) as e:
            runtime.add(conf, "ctr-rb", sandbox_ns.path)
        assert e.value.error.get("msg"), e.value.stdout
        assert "Traceback" not in e.value.stdout
        leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_mac_precedence(runtime, host_ns, sandbox_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    conf["plugins"][0]["capabilities"] = {"mac": True}
    conf["plugins"][0]["args"] = {"cni": {"mac": "02:00:00:00:00:02"}}
    result = runtime.add(conf, "ctr-mac", sandbox_ns.path, cap_args={"mac": "02:00:00:00:00:01"},
                         cni_args="MAC=02:00:00:00:00:03")
    assert oracle.link(sandbox_ns.name, "eth0")["address"] == "02:00:00:00:00:01"
    assert result["interfaces"][2]["mac"] == "02:00:00:00:00:01"
    runtime.delete(conf, "ctr-mac", sandbox_ns.path, cni_args="MAC=02:00:00:00:00:03")
    del conf["plugins"][0]["capabilities"]
    result = runtime.add(conf, "ctr-mac2", sandbox_ns.path, cni_args="MAC=02:00:00:00:00:03")
    assert oracle.link(sandbox_ns.name, "eth0")["address"] == "02:00:00:00:00:02"
    runtime.delete(conf, "ctr-mac2", sandbox_ns.path, cni_args="MAC=02:00:00:00:00:03")
    del conf["plugins"][0]["args"]
    runtime.add(conf, "ctr-mac3", sandbox_ns.path, cni_args="MAC=02:00:00:00:00:03")
    assert oracle.link(sandbox_ns.name, "eth0")["address"] == "02:00:00:00:00:03"
    runtime.delete(conf, "ctr-mac3", sandbox_ns.path, cni_args="MAC=02:00:00:00:00:03")
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_static_ip_from_cni_args(runtime, sandbox_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    result = runtime.add(conf, "ctr-ip", sandbox_ns.path, cni_args="IP=10.77.0.42")
    assert result["ips"][0]["address"] == "10.77.0.42/24"
    runtime.delete(conf, "ctr-ip", sandbox_ns.path, cni_args="IP=10.77.0.42")
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_dual_stack(runtime, host_ns, sandbox_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    conf["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/64"}]]
    result = runtime.add(conf, "ctr-ds", sandbox_ns.path)
    addrs = [ip["address"] for ip in result["ips"]]
    assert addrs[0].startswith("10.77.0.") and addrs[1].startswith("fd77::")
    assert sorted(oracle.addresses(sandbox_ns.name, "eth0")) == sorted(addrs)
    assert oracle.ping(sandbox_ns.name, "10.77.0.1")
    runtime.check(conf, "ctr-ds", sandbox_ns.path)
    runtime.delete(conf, "ctr-ds", sandbox_ns.path)
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_check_detects_missing_default_route(runtime, sandbox_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0", isDefaultGateway=True)
    runtime.add(conf, "ctr-r", sandbox_ns.path)
    runtime.check(conf, "ctr-r", sandbox_ns.path)
    subprocess.run(["ip", "-n", sandbox_ns.name, "route", "del", "default"], check=True)
    with pytest.raises(CniCallError) as e:
        runtime.check(conf, "ctr-r", sandbox_ns.path)
    assert e.value.code == 105 and "0.0.0.0/0" in e.value.error["msg"]
    runtime.delete(conf, "ctr-r", sandbox_ns.path)
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_chained_after_another_plugin_keeps_prev_result(runtime, sandbox_ns, ipam_dir, leaks):
    """A prevResult from an earlier plugin is passed on with splice's additions appended."""
    conf = bridge_conflist(ipam_dir, "1.0.0")
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "dummy-if"}],
            "ips": [{"address": "192.0.2.9/24", "interface": 0}], "routes": [{"dst": "192.0.2.0/24"}]}
    plugin = runtime.plugin_conf(conf, conf["plugins"][0], prev_result=prev)
    out = runtime.exec_plugin("splice-bridge", "ADD", plugin, container_id="ctr-ch", netns=sandbox_ns.path,
                              ifname="eth0")
    assert out["interfaces"][0] == {"name": "dummy-if"}
    assert [i["name"] for i in out["interfaces"][1:3]] == ["sptbr0", out["interfaces"][2]["name"]]
    assert out["interfaces"][3]["name"] == "eth0"
    assert out["ips"][0] == {"address": "192.0.2.9/24", "interface": 0}
    assert out["ips"][1]["interface"] == 3
    assert {"dst": "192.0.2.0/24"} in out["routes"]
    check = runtime.plugin_conf(conf, conf["plugins"][0], prev_result=out)
    runtime.exec_plugin("splice-bridge", "CHECK", check, container_id="ctr-ch", netns=sandbox_ns.path, ifname="eth0")
    runtime.exec_plugin("splice-bridge", "DEL", check, container_id="ctr-ch", netns=sandbox_ns.path, ifname="eth0")
    leaks.assert_clean([sandbox_ns], [ipam_dir])


@pytest.mark.needs_vm
@pytest.mark.parametrize("version", ["0.4.0", "1.1.0"])
def test_vlan_gateway_add_check_del(version, runtime, host_ns, make_ns, ipam_dir, leaks):
    """vlan + isGateway through the executable: the result lists <bridge>.<vlan>, CHECK
    accepts it, containers on the VLAN reach each other and the gateway. (ipMasq off: the
    VM guest has no nftables inet family.)"""
    if not vlan_filtering_supported(host_ns):
        missing_kernel_feature("bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)")
    conf = bridge_conflist(ipam_dir, version, ipMasq=False, vlan=100, preserveDefaultVlan=False)
    c1, c2 = make_ns(), make_ns()
    r1 = runtime.add(conf, "ctr-a", c1.path)
    r2 = runtime.add(conf, "ctr-b", c2.path)
    names = [i["name"] for i in r1["interfaces"]]
    assert names == ["sptbr0", names[1], "eth0", "sptbr0.100"]
    assert "sandbox" not in r1["interfaces"][3]
    assert r1["ips"][0]["interface"] == 2 and r1["ips"][0]["gateway"] == "10.77.0.1"
    assert oracle.addresses(host_ns.name, "sptbr0.100") == ["10.77.0.1/24"]
    vlans = {p["ifname"]: p["vlans"] for p in oracle.bridge_vlans(host_ns.name)}
    assert [(v["vlan"], set(v.get("flags", []))) for v in vlans[names[1]]] == [(100, {"PVID", "Egress Untagged"})]
    a2 = r2["ips"][0]["address"].split("/")[0]
    assert oracle.ping(c1.name, a2) and oracle.ping(c2.name, "10.77.0.1")
    runtime.check(conf, "ctr-a", c1.path)
    runtime.check(conf, "ctr-b", c2.path)
    runtime.delete(conf, "ctr-a", c1.path)
    runtime.delete(conf, "ctr-b", c2.path)
    gw_port = {n for n in oracle.link_names(host_ns.name) if n.startswith("vethg")}
    assert len(gw_port) == 1  # the shared gateway interface stays, as the reference
    leaks.allow |= {"sptbr0.100"} | gw_port
    leaks.assert_clean([c1, c2], [ipam_dir])


def test_a_subnet_overlapping_another_host_interface_is_refused(runtime, host_ns, make_ns, ipam_dir, leaks):
    """Issue 9 item 9 (as Docker refuses it): the network's first ADD and every STATUS refuse
    a subnet overlapping another host interface's connected route, code 7, nothing made;
    ``allowOverlap: true`` opts out; the network's own bridge route is no overlap."""
    host_ns.sh("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
    host_ns.sh("ip", "addr", "add", "10.77.0.200/25", "dev", "up0")
    host_ns.sh("ip", "link", "set", "up0", "up")
    leaks.allow |= {"up0", "up1"}
    sb = make_ns()
    conf = bridge_conflist(ipam_dir, "1.1.0")
    with pytest.raises(CniCallError) as e:
        runtime.add(conf, "ctr-1", sb.path)
    assert e.value.code == 7 and "up0" in e.value.error["msg"] and "allowOverlap" in e.value.error["msg"], e.value
    with pytest.raises(CniCallError) as e:
        runtime.status(conf)
    assert e.value.code == 7
    assert oracle.link_names(sb.name) == {"lo"} and "sptbr0" not in oracle.link_names(host_ns.name)
    conf["plugins"][0]["ipam"]["allowOverlap"] = True
    runtime.add(conf, "ctr-1", sb.path)
    runtime.status(conf)
    runtime.delete(conf, "ctr-1", sb.path)
    host_ns.sh("ip", "link", "del", "up0")
    conf["plugins"][0]["ipam"].pop("allowOverlap")
    runtime.status(conf)  # the bridge's own route 10.77.0.0/24 is not an overlap
    leaks.assert_clean([sb], [ipam_dir])
