"""splice-portmap through the installed executables, chained like libcni, with real traffic.

Topology: the runtime's host namespace gets the conflist's bridge (from splice-bridge or
the Go reference bridge) plus an uplink veth ``up0`` to a client namespace; containers
run the small TCP/UDP servers of tests/kernel/test_portmap_net.py.
"""

from __future__ import annotations

import json
import time

import pytest

from splice.conformance import oracle
from splice.conformance.runtime import CniCallError

from ..kernel.test_portmap_net import Servers, assert_no_portmap_elements, call, dnat_elements, elements, route_localnet
from .conftest import ALL_VERSIONS, vt

pytestmark = pytest.mark.root

BRIDGE = "sptbr0"
NET = "spt-net"
UP4_HOST, UP4_CLIENT, UP6_HOST, UP6_CLIENT = "192.0.2.1", "192.0.2.2", "2001:db8:1::1", "2001:db8:1::2"
GW4, GW6 = "10.77.0.1", "fd77::1"
WEB = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                        {"hostPort": 8080, "containerPort": 80, "protocol": "udp"}]}


def conflist(ipam_dir, version="1.1.0", *, go=False, dual=True, **portmap_opts) -> dict:
    ranges = [[{"subnet": "10.77.0.0/24"}]] + ([[{"subnet": "fd77::/64"}]] if dual else [])
    if go:
        main = {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "isDefaultGateway": True, "ipMasq": True,
                "hairpinMode": True, "ipam": {"type": "host-local", "ranges": ranges, "dataDir": str(ipam_dir)}}
    else:
        main = {"type": "splice-bridge", "bridge": BRIDGE, "isGateway": True, "isDefaultGateway": True,
                "ipMasq": True, "hairpinMode": True,
                "ipam": {"type": "splice-ipam", "ranges": ranges, "dataDir": str(ipam_dir)}}
    pm = {"type": "splice-portmap", "capabilities": {"portMappings": True}}
    pm.update(portmap_opts)
    return {"cniVersion": version, "name": NET, "plugins": [main, pm]}


@pytest.fixture
def uplink(host_ns, make_ns, leaks):
    """A client namespace behind ``up0`` of the host; the leak check allows ``up0``."""
    client = make_ns()
    host_ns.sh("ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", client.name)
    for cmd in (f"ip addr add {UP4_HOST}/24 dev up0", f"ip addr add {UP6_HOST}/64 dev up0 nodad", "ip link set up0 up"):
        host_ns.sh(*cmd.split())
    for cmd in (f"ip addr add {UP4_CLIENT}/24 dev eth0", f"ip addr add {UP6_CLIENT}/64 dev eth0 nodad",
                "ip link set eth0 up"):
        client.sh(*cmd.split())
    host_ns.sh("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding")
    leaks.allow.add("up0")
    return client


@pytest.fixture
def servers():
    s = Servers()
    yield s
    s.stop()


def settle(sandbox, v6=True) -> None:
    """Wait for the container's gateways to answer (IPv6 neighbours, bridge carrier)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if oracle.ping(sandbox.name, GW4, timeout=1) and (not v6 or oracle.ping(sandbox.name, GW6, timeout=1)):
            return
        time.sleep(0.1)
    raise AssertionError(f"{sandbox.name} cannot reach its gateways")


def leak_check(leaks, host_ns, sandboxes, ipam_dirs=()) -> None:
    leaks.assert_clean(sandboxes, ipam_dirs)
    assert_no_portmap_elements(host_ns)
    if BRIDGE in oracle.link_names(host_ns.name):
        assert route_localnet(host_ns, BRIDGE) == "0"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_chain_every_version(version, runtime, host_ns, make_ns, uplink, servers, ipam_dir, leaks):
    conf = conflist(ipam_dir, version, dual=False)
    sb = make_ns()
    result = runtime.add(conf, "ctr-1", sb.path, cap_args=WEB)
    assert result["cniVersion"] == version
    assert result == runtime.cached_result(conf, "ctr-1", "eth0")
    addr = result["ip4"]["ip"] if vt(version) < (0, 3, 0) else result["ips"][0]["address"]
    owners = {v[1] for v in dnat_elements(host_ns).values()}
    assert len(owners) == 1 and owners.pop().endswith(" ctr-1 eth0")
    assert dnat_elements(host_ns)[("dnat4", ("tcp", 8080))][0] == {"concat": [addr.split("/")[0], 80]}
    settle(sb, v6=False)
    servers.start(sb, "A")
    assert call(uplink, "tcp", UP4_HOST, 8080).server == "A"
    if vt(version) >= (0, 4, 0):
        runtime.check(conf, "ctr-1", sb.path, cap_args=WEB)
    if vt(version) >= (1, 1, 0):
        runtime.status(conf)
    runtime.delete(conf, "ctr-1", sb.path, cap_args=WEB)
    servers.stop()
    leak_check(leaks, host_ns, [sb], [ipam_dir])


@pytest.mark.parametrize("go", [False, True], ids=["splice-bridge", "go-bridge"])
def test_reachability(go, request, runtime, host_ns, make_ns, uplink, servers, ipam_dir, leaks):
    if go:
        request.getfixturevalue("reference_plugins")
    conf = conflist(ipam_dir, "1.0.0" if go else "1.1.0", go=go)  # Go plugins 1.1.1 stop at 1.0.0
    a, b = make_ns(), make_ns()
    ra = runtime.add(conf, "ctr-a", a.path, cap_args=WEB)
    runtime.add(conf, "ctr-b", b.path, cap_args={"portMappings": []})  # no mappings: passes through
    a4, a6 = (ip["address"].split("/")[0] for ip in ra["ips"])
    rb = runtime.cached_result(conf, "ctr-b", "eth0")
    b4, b6 = (ip["address"].split("/")[0] for ip in rb["ips"])
    for sb in (a, b):
        settle(sb)
    servers.start(a, "A")
    # a neighbour on the bridge: masqueraded when its packet is routed back out of the
    # bridge, kept when br_netfilter (on by default in a new namespace) bridges it
    nb4, nb6 = (GW4, b4), (GW6, b6)
    cases = {
        "client v4": (uplink, UP4_HOST, UP4_CLIENT),
        "client v6": (uplink, UP6_HOST, UP6_CLIENT),
        "localhost v4": (host_ns, "127.0.0.1", GW4),
        "host address v4": (host_ns, UP4_HOST, UP4_HOST),
        "host address v6": (host_ns, UP6_HOST, UP6_HOST),
        "hairpin v4 (container b -> gateway)": (b, GW4, nb4),
        "hairpin v6 (container b -> gateway)": (b, GW6, nb6),
        "hairpin v4 (container b -> uplink address)": (b, UP4_HOST, nb4),
        "self v4 (container a -> its own port)": (a, UP4_HOST, GW4),
        "self v6 (container a -> its own port)": (a, UP6_HOST, GW6),
    }
    failures = []
    for proto in ("tcp", "udp"):
        for label, (ns, target, peer) in cases.items():
            r = call(ns, proto, target, 8080)
            if not (r.ok and r.server == "A" and r.peer in (peer if isinstance(peer, tuple) else (peer,))):
                failures.append(f"{proto} {label}: {r}")
    assert not failures, "\n".join(failures)
    assert dnat_elements(host_ns)[("dnat6", ("udp", 8080))][0] == {"concat": [a6, 80]}
    assert dnat_elements(host_ns)[("dnat4", ("udp", 8080))][0] == {"concat": [a4, 80]}
    runtime.check(conf, "ctr-a", a.path, cap_args=WEB)
    runtime.delete(conf, "ctr-a", a.path, cap_args=WEB)
    runtime.delete(conf, "ctr-b", b.path, cap_args={"portMappings": []})
    assert not call(uplink, "tcp", UP4_HOST, 8080, timeout=0.5).ok
    servers.stop()
    leak_check(leaks, host_ns, [a, b], [] if go else [ipam_dir])


def test_port_taken_is_refused_and_the_owner_keeps_it(runtime, host_ns, make_ns, uplink, servers, ipam_dir, leaks):
    conf = conflist(ipam_dir, dual=False)
    a, b = make_ns(), make_ns()
    runtime.add(conf, "ctr-a", a.path, cap_args=WEB)
    settle(a, v6=False)
    servers.start(a, "A")
    before = json.dumps(oracle.nft_objects(host_ns.name, "map"), sort_keys=True)
    taken = {"portMappings": [{"hostPort": 9090, "containerPort": 80, "protocol": "tcp"},
                              {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    with pytest.raises(CniCallError) as e:
        runtime.add(conf, "ctr-b", b.path, cap_args=taken)
    assert e.value.plugin == "splice-portmap" and e.value.code == 107
    assert e.value.error["msg"].startswith("host port tcp/8080 on every IPv4 address is already published by "
                                           "container ctr-a (interface eth0, network ")
    # the failed ADD: the runtime runs DEL for it, which must not touch ctr-a's ports
    runtime.delete(conf, "ctr-b", b.path, cap_args=taken)
    assert json.dumps(oracle.nft_objects(host_ns.name, "map"), sort_keys=True) == before
    assert call(uplink, "tcp", UP4_HOST, 8080).server == "A"
    runtime.delete(conf, "ctr-a", a.path, cap_args=WEB)
    servers.stop()
    leak_check(leaks, host_ns, [a, b], [ipam_dir])


@pytest.mark.parametrize("variant", ["twice", "no-prevresult", "netns-gone"])
def test_del_is_idempotent(variant, runtime, host_ns, make_ns, ipam_dir, leaks):
    conf = conflist(ipam_dir)
    sb = make_ns()
    runtime.add(conf, "ctr-d", sb.path, cap_args=WEB)
    assert len(dnat_elements(host_ns)) == 4
    sandboxes = [sb]
    if variant == "twice":
        runtime.delete(conf, "ctr-d", sb.path, cap_args=WEB)
        runtime.delete(conf, "ctr-d", sb.path, cap_args=WEB, use_cache=False)
    elif variant == "no-prevresult":
        runtime.delete(conf, "ctr-d", sb.path, cap_args=WEB, use_cache=False)
    else:
        import subprocess

        subprocess.run(["ip", "netns", "del", sb.name], check=True)
        sandboxes = []
        runtime.delete(conf, "ctr-d", sb.path, cap_args=WEB)
    leak_check(leaks, host_ns, sandboxes, [ipam_dir])


def test_gc_removes_stale_attachments(runtime, host_ns, make_ns, ipam_dir, leaks):
    conf = conflist(ipam_dir, dual=False)
    keep, stale = make_ns(), make_ns()
    runtime.add(conf, "ctr-keep", keep.path, cap_args={"portMappings": [{"hostPort": 8080, "containerPort": 80}]})
    runtime.add(conf, "ctr-stale", stale.path, cap_args={"portMappings": [{"hostPort": 8081, "containerPort": 80}]})
    assert runtime.gc(conf, [("ctr-keep", "eth0")]) == []
    left = dnat_elements(host_ns)
    assert [k for k in left] == [("dnat4", ("tcp", 8080))] and left[("dnat4", ("tcp", 8080))][1].endswith(" ctr-keep eth0")
    assert route_localnet(host_ns, BRIDGE) == "1"
    runtime.check(conf, "ctr-keep", keep.path, cap_args={"portMappings": [{"hostPort": 8080, "containerPort": 80}]})
    assert runtime.gc(conf, []) == []
    leak_check(leaks, host_ns, [keep, stale], [ipam_dir])


def test_check_detects_a_missing_mapping(runtime, host_ns, sandbox_ns, ipam_dir, leaks):
    conf = conflist(ipam_dir, dual=False)
    runtime.add(conf, "ctr-c", sandbox_ns.path, cap_args=WEB)
    runtime.check(conf, "ctr-c", sandbox_ns.path, cap_args=WEB)
    host_ns.sh("nft", "delete", "element", "inet", "splice_portmap", "dnat4", "{ udp . 8080 }")
    with pytest.raises(CniCallError) as e:
        runtime.check(conf, "ctr-c", sandbox_ns.path, cap_args=WEB)
    assert e.value.plugin == "splice-portmap" and e.value.code == 105 and "udp" in e.value.error["msg"]
    runtime.delete(conf, "ctr-c", sandbox_ns.path, cap_args=WEB)
    leak_check(leaks, host_ns, [sandbox_ns], [ipam_dir])


def _plugin_conf(ipam_dir, **extra) -> dict:
    c = {"cniVersion": "1.1.0", "name": NET, "type": "splice-portmap"}
    c.update(extra)
    return c


PREV = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
        "ips": [{"address": "10.77.0.5/24", "interface": 0, "gateway": "10.77.0.1"}]}


def test_plugin_errors_and_passthrough(cni, host_ns, sandbox_ns, ipam_dir):
    r = cni.run("splice-portmap", "ADD", _plugin_conf(ipam_dir, runtimeConfig=WEB), netns=sandbox_ns.path)
    assert r.rc == 1 and r.json["code"] == 7 and r.json["msg"] == "must be called as chained plugin"
    r = cni.run("splice-portmap", "ADD", _plugin_conf(ipam_dir, prevResult=PREV), netns=sandbox_ns.path)
    assert r.rc == 0 and r.json["ips"] == PREV["ips"] and r.json["interfaces"] == PREV["interfaces"]
    r = cni.run("splice-portmap", "ADD", _plugin_conf(ipam_dir, prevResult=PREV, backend="iptables",
                                                      runtimeConfig=WEB), netns=sandbox_ns.path)
    assert r.rc == 1 and r.json["code"] == 2 and "iptables" in r.json["msg"]
    bad = {"portMappings": [{"hostPort": 0, "containerPort": 80}]}
    r = cni.run("splice-portmap", "ADD", _plugin_conf(ipam_dir, prevResult=PREV, runtimeConfig=bad),
                netns=sandbox_ns.path)
    assert r.rc == 1 and r.json["code"] == 7 and "Invalid host port number: 0" in r.json["msg"]
    r = cni.run("splice-portmap", "CHECK", _plugin_conf(ipam_dir, runtimeConfig=WEB), netns=sandbox_ns.path)
    assert r.rc == 1 and r.json["msg"] == "Required prevResult missing"
    r = cni.run("splice-portmap", "DEL", _plugin_conf(ipam_dir), netns=sandbox_ns.path)
    assert r.rc == 0 and r.stdout == ""
    r = cni.run("splice-portmap", "STATUS", _plugin_conf(ipam_dir), container_id=None, ifname=None)
    assert r.rc == 0
    r = cni.run("splice-portmap", "GC", _plugin_conf(ipam_dir), container_id=None, ifname=None)
    assert r.rc == 1 and r.json["code"] == 7  # a GC without the keep-list is refused
    r = cni.run("splice-portmap", "GC", _plugin_conf(ipam_dir, **{"cni.dev/valid-attachments": []}),
                container_id=None, ifname=None)
    assert r.rc == 0
    assert_no_portmap_elements(host_ns)


def test_same_address_on_two_networks_keeps_both(runtime, host_ns, make_ns, tmp_path, leaks):
    """Defect 1 through the executables: two networks with the same subnet on two bridges,
    one address in both; each keeps its masquerade and port-map registrations through the
    other's DEL."""
    confs = []
    for n, br in ((1, BRIDGE), (2, "sptbr1")):
        d = tmp_path / f"ipam{n}"
        d.mkdir()
        conf = conflist(d, dual=False)
        conf["name"] = f"spt-net{n}"
        conf["plugins"][0]["bridge"] = br
        conf["plugins"][0]["ipam"]["allowOverlap"] = True  # else refused: the other bridge's route
        confs.append((conf, d))
    leaks.allow.add("sptbr1")
    a, b = make_ns(), make_ns()
    ra = runtime.add(confs[0][0], "ctr-a", a.path, cap_args=WEB)
    rb = runtime.add(confs[1][0], "ctr-b", b.path, cap_args={"portMappings": [{"hostPort": 9090, "containerPort": 90}]})
    assert ra["ips"][0]["address"] == rb["ips"][0]["address"] == "10.77.0.2/24"

    def registrations():
        e = elements(host_ns)
        return set(e.get("ifrefs4", {})), {k for k in oracle_src4(host_ns)}

    refs, masq = registrations()
    assert refs == {(BRIDGE, "10.77.0.2", "10.77.0.2"), ("sptbr1", "10.77.0.2", "10.77.0.2")}
    assert masq == {(BRIDGE, "10.77.0.2"), ("sptbr1", "10.77.0.2")}
    runtime.delete(confs[1][0], "ctr-b", b.path, cap_args={"portMappings": [{"hostPort": 9090, "containerPort": 90}]})
    refs, masq = registrations()
    assert refs == {(BRIDGE, "10.77.0.2", "10.77.0.2")} and masq == {(BRIDGE, "10.77.0.2")}
    runtime.check(confs[0][0], "ctr-a", a.path, cap_args=WEB)
    runtime.delete(confs[0][0], "ctr-a", a.path, cap_args=WEB)
    leak_check(leaks, host_ns, [a, b], [confs[0][1], confs[1][1]])
    assert oracle_src4(host_ns) == set()


def oracle_src4(ns) -> set:
    return {oracle.element_parts(e)[0] for t, name, e in oracle.nft_map_elements(ns.name)
            if (t, name) == ("splice_nat", "src4")}
