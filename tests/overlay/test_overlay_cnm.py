"""splice-overlay: the vxlan driver served by ``splice driver`` as a Docker remote driver, on
two simulated hosts (tests/overlay/conftest.py: namespaces on the etcd harness's underlay
bridge), each with its own daemon (``--node hostN``, its own plugins/state/IPAM dirs), against
the 3-member etcd. dockerd's observed call sequence is replayed (RequestPool, gateway
RequestAddress, CreateNetwork; RequestAddress, CreateEndpoint, Join, then what libnetwork does
with Join's answer, ProgramExternalConnectivity; and back), containers ping each other over
VXLAN; a daemon restart keeps the subnet; DeleteNetwork leaves nothing (links, routes,
neighbours, FDB, nft, IPAM, etcd keys of the host)."""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess

import pytest

from splice.conformance import oracle

from ..cnm.conftest import (GW_TYPE, DriverProcess, libnetwork_move_in, libnetwork_move_out, owned_elements,
                            wait_until)
from ..conftest import Namespace
from .conftest import CIDR, VNI, _ip
from .test_overlay import ping, vxlan_counter, vxlan_packets, drop_counter

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

PLUGIN = "splice-overlay"
SPACE = "SpliceOverlay"
HOST_SPACE = "SpliceOverlayHost"
ETCD_NAME = "dov"


def nid() -> str:
    return secrets.token_hex(32)  # local scope: every host's dockerd has its own network id


class DockerHost:
    """One simulated host running ``splice driver`` (no agent), driven as dockerd would."""

    def __init__(self, overlay, h) -> None:
        self.o, self.h = overlay, h
        self.d = DriverProcess(h.ns, h.dir / "driver", args=["--node", h.node])
        self.d.root.mkdir(mode=0o700, exist_ok=True)
        self.net: dict | None = None
        self.eps: dict[str, dict] = {}

    def start(self) -> "DockerHost":
        self.d.start(wait_for=f"{PLUGIN}.sock")
        self.c = self.d.client(PLUGIN)
        return self

    def generic(self, **kw) -> dict:
        g = {"splice.vni": str(VNI), "splice.name": ETCD_NAME, "splice.leaseTTL": "3",
             "splice.etcd": json.dumps({"endpoints": self.o.cluster.endpoints, "prefix": self.o.prefix})}
        g.update(kw)
        return g

    def create_network(self, internal: bool = False, **kw) -> dict:
        c = self.c
        assert c.ok("IpamDriver.GetDefaultAddressSpaces", {})["LocalDefaultAddressSpace"] == SPACE
        p = c.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Options": {}, "Pool": CIDR, "SubPool": "",
                                            "V6": False})
        g = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": GW_TYPE, "PoolID": p["PoolID"]})
        net = {"id": nid(), "pool": p["PoolID"], "gateway": g["Address"]}
        c.ok("NetworkDriver.CreateNetwork", {
            "NetworkID": net["id"], "IPv6Data": [],
            "IPv4Data": [{"AddressSpace": SPACE, "Gateway": g["Address"], "Pool": p["Pool"]}],
            "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": self.generic(**kw),
                        "com.docker.network.internal": internal}})
        self.net = net
        return net

    def run_container(self) -> tuple[str, Namespace, str]:
        """RequestAddress, CreateEndpoint, Join, libnetwork's move/rename/address/route, Program."""
        c, net = self.c, self.net
        eid = secrets.token_hex(32)
        a = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": {}, "PoolID": net["pool"]})["Address"]
        c.ok("NetworkDriver.CreateEndpoint", {"NetworkID": net["id"], "EndpointID": eid, "Options": {},
                                              "Interface": {"Address": a, "AddressIPv6": "", "MacAddress": ""}})
        name = f"{self.h.ns.name}-{eid[:6]}"
        _ip("netns", "add", name)
        self.o.namespaces.append(name)
        sb = Namespace(name)
        sb.sh("ip", "link", "set", "lo", "up")
        j = c.ok("NetworkDriver.Join", {"NetworkID": net["id"], "EndpointID": eid, "SandboxKey": sb.path,
                                        "Options": {}})
        libnetwork_move_in(self.h.ns, j["InterfaceName"]["SrcName"], sb, "eth0", [a], j.get("Gateway"))
        for r in j.get("StaticRoutes") or []:  # RouteType 0: via NextHop
            sb.sh("ip", "route", "add", r["Destination"], "via", r["NextHop"])
        c.ok("NetworkDriver.ProgramExternalConnectivity", {"NetworkID": net["id"], "EndpointID": eid, "Options": {}})
        self.eps[eid] = {"address": a, "sandbox": sb, "src": j["InterfaceName"]["SrcName"], "join": j}
        return eid, sb, a.split("/")[0]

    def remove_container(self, eid: str) -> None:
        c, net, ep = self.c, self.net, self.eps.pop(eid)
        c.ok("NetworkDriver.RevokeExternalConnectivity", {"NetworkID": net["id"], "EndpointID": eid})
        c.ok("NetworkDriver.Leave", {"NetworkID": net["id"], "EndpointID": eid})
        libnetwork_move_out(self.h.ns, ep["sandbox"], "eth0", ep["src"])
        c.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": net["id"], "EndpointID": eid})
        c.ok("IpamDriver.ReleaseAddress", {"Address": ep["address"].split("/")[0], "PoolID": net["pool"]})

    def remove_network(self) -> None:
        """docker network rm: DeleteNetwork, then the gateway's ReleaseAddress and ReleasePool."""
        c, net = self.c, self.net
        c.ok("NetworkDriver.DeleteNetwork", {"NetworkID": net["id"]})
        c.ok("IpamDriver.ReleaseAddress", {"Address": net["gateway"].split("/")[0], "PoolID": net["pool"]})
        c.ok("IpamDriver.ReleasePool", {"PoolID": net["pool"]})
        self.net = None

    def subnet(self) -> ipaddress.IPv4Network:
        data = json.loads((self.d.state_dir / "overlay" / f"subnet-{ETCD_NAME}.json").read_text())
        return ipaddress.ip_network(data["subnet"])


def etcd_keys(overlay) -> dict[str, dict]:
    def read():
        from splice.ipam.cluster.etcd import Etcd

        e = Etcd(overlay.cluster.endpoints)
        try:
            kvs, _ = e.range(f"{overlay.prefix}/{ETCD_NAME}/", prefix=True)
            return {kv.key.decode(): json.loads(kv.value) for kv in kvs}
        finally:
            e.close()

    return overlay.cluster.run(read)


def host_entries(h) -> tuple[list, list, list]:
    """Routes via the VXLAN device, its permanent neighbours and FDB entries with a remote."""
    dev = f"spvx{VNI}"
    routes = json.loads(h.sh("ip", "-j", "route", "show", "dev", dev, check=False).stdout or "[]")
    neigh = json.loads(h.sh("ip", "-j", "neigh", "show", "dev", dev, "nud", "permanent", check=False).stdout or "[]")
    fdb = [e for e in json.loads(h.sh("bridge", "-j", "fdb", "show", "dev", dev, check=False).stdout or "[]")
           if e.get("dst")]
    return [r for r in routes if r.get("gateway")], neigh, fdb


@pytest.fixture
def hosts(overlay):
    out = [DockerHost(overlay, overlay.host(start=False)).start() for _ in range(2)]
    yield out
    for dh in out:
        dh.d.stop()


def test_bad_options_and_foreign_ipam(hosts):
    h1 = hosts[0]
    c = h1.c
    # no --subnet: the clusterCIDR is required; IPv6 and sub-ranges are refused
    for body, text in (({"Pool": ""}, "--subnet"), ({"Pool": CIDR, "V6": True}, "dual-stack"),
                       ({"Pool": CIDR, "SubPool": "10.244.1.0/24"}, "--ip-range")):
        st, ans = c.call("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Options": {}, "SubPool": "", **body})
        assert st == 400 and text in ans["Err"], ans
    gen = h1.generic()
    def create(generic, space=SPACE, pool=CIDR, gateway="10.244.0.1/16"):
        return c.call("NetworkDriver.CreateNetwork", {
            "NetworkID": nid(), "IPv6Data": [],
            "IPv4Data": [{"AddressSpace": space, "Gateway": gateway, "Pool": pool}],
            "Options": {"com.docker.network.generic": generic}})

    for generic, text in (({**gen, "splice.vni": "0"}, "vni"),
                          ({k: v for k, v in gen.items() if k != "splice.vni"}, "vni is required"),
                          ({**gen, "splice.etcd": "{}"}, "endpoints"),
                          ({**gen, "splice.subnetLen": "33"}, "subnetLen"),
                          ({**gen, "splice.clusterCIDR": "10.99.0.0/16"}, "differs"),
                          ({**gen, "splice.ipMasq": "maybe"}, "boolean"),
                          ({**gen, "splice.vlan": "5"}, "not known"),
                          ({**gen, "splice.vtepInterface": "x" * 20}, "vtepInterface")):
        st, ans = create(generic)
        assert st == 400 and text in ans["Err"], (generic, ans)
    # a new host whose etcd does not answer: CreateNetwork fails naming it, nothing is left
    dead = {**gen, "splice.etcd": json.dumps({"endpoints": ["http://10.231.0.99:2379"], "timeout": 0.5})}
    st, ans = create(dead)
    assert st == 400 and "not requested from splice-overlay's IPAM" in ans["Err"], ans  # no RequestPool
    p = c.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Options": {}, "Pool": CIDR, "SubPool": "", "V6": False})
    st, ans = create(dead)
    assert st >= 500 and "10.231.0.99" in ans["Err"], ans
    c.ok("IpamDriver.ReleasePool", {"PoolID": p["PoolID"]})
    assert oracle.link_names(h1.h.ns.name) == {"lo", "eth0"}
    assert not list((h1.d.state_dir / "overlay").glob("subnet-*.json"))
    st, ans = create(gen, space="LocalDefault", pool="172.30.0.0/16", gateway="172.30.0.1/16")  # Docker's own IPAM
    assert st == 400 and "--ipam-driver splice-overlay" in ans["Err"], ans
    # a pool of splice-overlay's IPAM that belongs to no network yet: no address
    p = c.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Options": {}, "Pool": "10.250.0.0/16", "SubPool": "",
                                        "V6": False})
    st, ans = c.call("IpamDriver.RequestAddress", {"Address": "", "Options": {}, "PoolID": p["PoolID"]})
    assert st == 400 and "no splice-overlay network" in ans["Err"], ans
    st, ans = c.call("IpamDriver.RequestAddress", {"Address": "10.250.0.9", "Options": GW_TYPE,
                                                   "PoolID": p["PoolID"]})
    assert st == 400 and "--gateway" in ans["Err"], ans
    c.ok("IpamDriver.ReleasePool", {"PoolID": p["PoolID"]})
    assert list((h1.d.state_dir / "networks").glob("*.json")) == []
    assert oracle.link_names(h1.h.ns.name) == {"lo", "eth0"}


def test_two_docker_hosts(overlay, hosts):
    h1, h2 = hosts
    n1, n2 = h1.create_network(), h2.create_network()
    s1, s2 = h1.subnet(), h2.subnet()
    # a second overlay network on host 1 with the same name or vni (another clusterCIDR): 409, nothing
    # of the first touched (its traffic below)
    p = h1.c.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Options": {}, "Pool": "10.245.0.0/16",
                                           "SubPool": "", "V6": False})
    for gen, text in ((h1.generic(**{"splice.vni": "43"}), "overlay name"),
                      (h1.generic(**{"splice.name": "other"}), "vni")):
        st, ans = h1.c.call("NetworkDriver.CreateNetwork", {
            "NetworkID": nid(), "IPv6Data": [],
            "IPv4Data": [{"AddressSpace": SPACE, "Gateway": "10.245.0.1/16", "Pool": "10.245.0.0/16"}],
            "Options": {"com.docker.network.generic": gen}})
        assert st == 409 and text in ans["Err"], ans
    h1.c.ok("IpamDriver.ReleasePool", {"PoolID": p["PoolID"]})
    assert h1.subnet() == s1
    assert s1 != s2 and s1.subnet_of(ipaddress.ip_network(CIDR)) and s2.subnet_of(ipaddress.ip_network(CIDR))
    # the device and the bridge, the other host programmed
    dev = oracle.links(h1.h.ns.name)
    names = {link["ifname"] for link in dev}
    assert {f"spvx{VNI}", f"spvxbr{VNI}"} <= names, names
    wait_until(lambda: host_entries(h1.h)[0] and host_entries(h2.h)[0], 5, "each host routes to the other")
    routes, neigh, fdb = host_entries(h1.h)
    assert [r["dst"] for r in routes] == [str(s2)], routes
    assert len(neigh) == 1 and len(fdb) == 1, (neigh, fdb)

    e1, sb1, a1 = h1.run_container()
    e2, sb2, a2 = h2.run_container()
    # addresses of each host's leased subnet with its prefix length; Join's gateway is the host's
    assert ipaddress.ip_address(a1) in s1 and ipaddress.ip_address(a2) in s2
    assert h1.eps[e1]["address"].endswith(f"/{s1.prefixlen}")
    assert h1.eps[e1]["join"]["Gateway"] == str(s1.network_address + 1)
    assert h2.eps[e2]["join"]["Gateway"] == str(s2.network_address + 1)
    assert owned_elements(h1.h.ns.name), "ipMasq (default true) masquerades what leaves the clusterCIDR"
    mtu = json.loads(sb1.sh("ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"]
    assert mtu == 1450
    vxlan_counter(overlay)
    try:
        assert ping(sb1, a2, count=2) and ping(sb2, a1, count=2)
        assert vxlan_packets(overlay) >= 4  # over VXLAN (UDP 4789, VNI 42)
        assert ping(sb1, a2, size=1422, df=True) and not ping(sb1, a2, size=1423, df=True)
    finally:
        drop_counter(overlay)

    # a daemon restart keeps the subnet, the record and the traffic
    keys = etcd_keys(overlay)
    h1.d.stop()
    assert not (h1.d.plugins_dir / f"{PLUGIN}.sock").exists()
    h1.start()
    assert h1.subnet() == s1
    e3, sb3, a3 = h1.run_container()  # the first call after the start waits for the overlay
    assert ipaddress.ip_address(a3) in s1 and a3 != a1
    assert ping(sb3, a2) and ping(sb2, a3) and ping(sb1, a2)
    assert {k: v["subnet"] for k, v in etcd_keys(overlay).items() if "/nodes/" in k} == \
        {k: v["subnet"] for k, v in keys.items() if "/nodes/" in k}

    # docker rm, docker network rm on host 1: nothing of it left, host 2 drops its route
    for eid in list(h1.eps):
        h1.remove_container(eid)
    h1.remove_network()
    ns = h1.h.ns.name
    assert oracle.link_names(ns) == {"lo", "eth0"}, oracle.link_names(ns)
    assert owned_elements(ns) == []
    nft = h1.h.sh("nft", "-j", "list", "ruleset").stdout
    assert e1 not in nft and n1["id"] not in nft
    routes_left = json.loads(h1.h.sh("ip", "-j", "route").stdout)
    assert not [r for r in routes_left if ipaddress.ip_network(r["dst"] if r["dst"] != "default" else "0.0.0.0/0")
                .subnet_of(ipaddress.ip_network(CIDR))], routes_left
    assert [k for k in etcd_keys(overlay) if k.endswith("/host1") or "host1" in json.dumps(etcd_keys(overlay)[k])] == []
    from splice.ipam.pools import PoolIpam

    with PoolIpam(str(h1.d.ipam_dir)) as p:
        assert p.pools(SPACE) == [] and p.pools(HOST_SPACE) == []
    assert list((h1.d.state_dir / "networks").glob("*.json")) == []
    assert list((h1.d.state_dir / "endpoints").glob("*.json")) == []
    assert not (h1.d.state_dir / "overlay" / f"subnet-{ETCD_NAME}.json").exists()
    wait_until(lambda: not host_entries(h2.h)[0] and not host_entries(h2.h)[1] and not host_entries(h2.h)[2], 5,
               "host 2 drops host 1's route, neighbour and FDB entry")

    # host 2 as well
    h2.remove_container(e2)
    h2.remove_network()
    assert oracle.link_names(h2.h.ns.name) == {"lo", "eth0"}
    assert etcd_keys(overlay) == {f"{overlay.prefix}/{ETCD_NAME}/config": {"clusterCIDR": CIDR, "subnetLen": 24}}
    assert n2["id"]


def host_leases(dh) -> list[str]:
    from splice.ipam.pools import PoolIpam

    with PoolIpam(str(dh.d.ipam_dir)) as p:
        return [str(lease.address) for pool in p.pools(HOST_SPACE) for lease in p.leases(pool.id)]


def test_internal_and_rm_while_the_driver_is_down(overlay, hosts):
    h1, h2 = hosts
    h1.create_network(internal=True)
    h2.create_network()
    s1 = h1.subnet()
    e1, sb1, a1 = h1.run_container()
    e2, sb2, a2 = h2.run_container()
    j = h1.eps[e1]["join"]
    # internal: no default route, no masquerade, but the clusterCIDR through the host's bridge
    assert "Gateway" not in j and j["DisableGatewayService"] is True
    assert j["StaticRoutes"] == [{"Destination": CIDR, "RouteType": 0, "NextHop": str(s1.network_address + 1)}]
    assert owned_elements(h1.h.ns.name) == []
    assert ping(sb1, a2, count=2) and ping(sb2, a1)
    assert sorted(host_leases(h1)) == sorted([f"{s1.network_address + 1}/{s1.prefixlen}", h1.eps[e1]["address"]])

    # docker rm -f while the driver is down: libnetwork moves the interface back, the sandbox goes
    h1.d.kill()
    ep = h1.eps.pop(e1)
    libnetwork_move_out(h1.h.ns, ep["sandbox"], "eth0", ep["src"])
    subprocess.run(["ip", "netns", "del", ep["sandbox"].name], check=True)
    h1.start()
    wait_until(lambda: "collected at start: 1 endpoint" in h1.d.log(), 10, "the start-up collection")
    assert host_leases(h1) == [f"{s1.network_address + 1}/{s1.prefixlen}"]  # the address released
    assert list((h1.d.state_dir / "endpoints").glob("*.json")) == []
    e3, sb3, a3 = h1.run_container()
    assert ping(sb3, a2)
    h1.remove_container(e3)
    h1.remove_network()
    assert oracle.link_names(h1.h.ns.name) == {"lo", "eth0"}
    assert host_leases(h1) == []
