"""The Docker remote driver over its socket: the calls a real dockerd 20.10 made
(../shared/reference/observed-calls/docker-calls.summary.txt), in order, with their bodies,
against a real ``splice driver`` in a throwaway host namespace; the kernel checked with
``ip -j`` / ``nft -j`` at each step, nothing left at the end."""

from __future__ import annotations

import os
import stat

import pytest

from splice.conformance import oracle

from .conftest import (
    EID1,
    EID2,
    EID3,
    EXPOSED,
    GW_TYPE,
    NID,
    NID2,
    PORTS,
    SPACE,
    assert_clean,
    create_network,
    delete_network,
    leases,
    libnetwork_move_in,
    libnetwork_move_out,
    owned_elements,
    state_files,
)

pytestmark = pytest.mark.root


def test_activation_capabilities_and_sockets(driver):
    for name in ("splice-bridge", "splice-macvlan"):
        st = os.stat(driver.sock(name))
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        c = driver.client(name)
        assert c.ok("Plugin.Activate", None) == {"Implements": ["NetworkDriver", "IpamDriver"]}
        assert c.ok("NetworkDriver.GetCapabilities", None) == {"Scope": "local", "ConnectivityScope": "local"}
        assert c.ok("IpamDriver.GetCapabilities", None) == {"RequiresMACAddress": False, "RequiresRequestReplay": False}
        assert c.ok("IpamDriver.GetDefaultAddressSpaces", None) == {
            "LocalDefaultAddressSpace": SPACE, "GlobalDefaultAddressSpace": "SpliceGlobal"}
        assert c.ok("NetworkDriver.DiscoverNew", {"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.1",
                                                                                        "self": True}}) == {}
        assert c.ok("NetworkDriver.DiscoverDelete", {"DiscoveryType": 1, "DiscoveryData": {}}) == {}
        assert c.ok("NetworkDriver.AllocateNetwork", {"NetworkID": NID, "Options": {}, "IPv4Data": [],
                                                      "IPv6Data": []}) == {"Options": {}}
        assert c.ok("NetworkDriver.FreeNetwork", {"NetworkID": NID}) == {}
        status, answer = c.call("NetworkDriver.NoSuchThing", {})
        assert status == 404 and "NoSuchThing" in answer["Err"]
        status, data, _ = c.raw("Plugin.Activate", None, verb="GET")
        assert status == 405 and b"POST" in data
    ipam_only = driver.client("splice")
    assert ipam_only.ok("Plugin.Activate") == {"Implements": ["IpamDriver"]}
    status, answer = ipam_only.call("NetworkDriver.CreateNetwork", {"NetworkID": NID})
    assert status == 404 and answer["Err"]


def test_observed_sequence(driver, make_ns):
    """network create clnet; run --rm; run -d clc1 --ip --mac-address -p; a ping container;
    network create clnet2 (IPv6, internal, options); connect/disconnect; rm -f; network rm."""
    h = driver.host.name
    c = driver.client()
    net1 = create_network(c, NID, "10.250.0.0/24")
    assert net1["gateways"] == ["10.250.0.1/24"]
    br1 = "br-" + NID[:12]
    assert oracle.link(h, br1)["link_type"] == "ether" and oracle.addresses(h, br1) == ["10.250.0.1/24"]
    pool1 = net1["pools"][0]

    # run --rm: the first endpoint, joined, released, deleted
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": None, "PoolID": pool1})
    assert a["Address"] == "10.250.0.2/24"
    ans = c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID1, "NetworkID": NID, "Interface": {
        "Address": a["Address"], "AddressIPv6": "", "MacAddress": ""}, "Options": {
        "com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []}})
    mac1 = ans["Interface"]["MacAddress"]  # Docker gave none: the driver says which it chose,
    assert mac1 == "02:42:0a:fa:00:02"  # Docker's own: 02:42 + the IPv4 address
    join = c.ok("NetworkDriver.Join", {"EndpointID": EID1, "NetworkID": NID, "Options": {
        "com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []},
        "SandboxKey": "/var/run/docker/netns/3362f2c85c62"})
    src1 = join["InterfaceName"]["SrcName"]
    assert join["InterfaceName"]["DstPrefix"] == "eth" and join["Gateway"] == "10.250.0.1"
    assert join["StaticRoutes"] == [] and join["DisableGatewayService"] is False
    peer = oracle.link(h, src1)
    assert peer["address"] == mac1 and peer["link_type"] == "ether"
    assert oracle.addresses(h, src1) == []  # libnetwork configures it
    host_end = [n for n in oracle.link_names(h) if n.startswith("veth")]
    assert len(host_end) == 1 and oracle.link(h, host_end[0])["master"] == br1
    c.ok("NetworkDriver.ProgramExternalConnectivity", {"EndpointID": EID1, "NetworkID": NID, "Options": {
        "com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []}})
    info = c.ok("NetworkDriver.EndpointOperInfo", {"EndpointID": EID1, "NetworkID": NID})["Value"]
    assert info["src_name"] == src1 and info["addresses"] == ["10.250.0.2/24"]
    srcnat = [e for t, m, e in owned_elements(h) if t == "splice_nat" and m == "src4"]
    assert len(srcnat) == 1 and "10.250.0.2" in str(srcnat[0])  # masqueraded (Docker's default)
    c.ok("NetworkDriver.RevokeExternalConnectivity", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("NetworkDriver.Leave", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("IpamDriver.ReleaseAddress", {"Address": "10.250.0.2", "PoolID": pool1})
    assert oracle.link_names(h) == {"lo", br1} and owned_elements(h) == []

    # run -d clc1 --ip 10.250.0.50 --mac-address 02:42:0a:fa:00:32 -p 127.0.0.1:18080:80
    sb1 = make_ns()
    a = c.ok("IpamDriver.RequestAddress", {"Address": "10.250.0.50", "Options": None, "PoolID": pool1})
    assert a["Address"] == "10.250.0.50/24"
    opts = {"com.docker.network.endpoint.exposedports": EXPOSED, "com.docker.network.endpoint.macaddress": "AkIK+gAy",
            "com.docker.network.portmap": PORTS}
    ans = c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID2, "NetworkID": NID, "Interface": {
        "Address": "10.250.0.50/24", "AddressIPv6": "", "MacAddress": "02:42:0a:fa:00:32"}, "Options": opts})
    assert ans == {"Interface": {}}  # everything was supplied: nothing to return
    join = c.ok("NetworkDriver.Join", {"EndpointID": EID2, "NetworkID": NID, "Options": {
        "com.docker.network.endpoint.exposedports": EXPOSED, "com.docker.network.portmap": PORTS},
        "SandboxKey": sb1.path})
    src2 = join["InterfaceName"]["SrcName"]
    assert oracle.link(h, src2)["address"] == "02:42:0a:fa:00:32"
    libnetwork_move_in(driver.host, src2, sb1, "eth0", ["10.250.0.50/24"], "10.250.0.1")
    c.ok("NetworkDriver.ProgramExternalConnectivity", {"EndpointID": EID2, "NetworkID": NID, "Options": {
        "com.docker.network.endpoint.exposedports": EXPOSED, "com.docker.network.portmap": PORTS}})
    dnat = [oracle.element_parts(e) for t, m, e in owned_elements(h) if m == "dnat4_ip"]
    assert len(dnat) == 1 and dnat[0][0][0] == "127.0.0.1" and dnat[0][0][2] == 18080
    assert dnat[0][1]["concat"] == ["10.250.0.50", 80]
    assert oracle.ping(sb1.name, "10.250.0.1")  # the bridge port carries traffic
    info = c.ok("NetworkDriver.EndpointOperInfo", {"EndpointID": EID2, "NetworkID": NID})["Value"]
    assert info["com.docker.network.portmap"][0]["HostPort"] == 18080

    # a second container pings clc1 across the bridge
    sb2 = make_ns()
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": None, "PoolID": pool1})
    assert a["Address"] == "10.250.0.2/24"  # released before: the lowest free again
    c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID1, "NetworkID": NID, "Interface": {
        "Address": a["Address"], "AddressIPv6": "", "MacAddress": ""}, "Options": {}})
    join = c.ok("NetworkDriver.Join", {"EndpointID": EID1, "NetworkID": NID, "Options": {}, "SandboxKey": sb2.path})
    libnetwork_move_in(driver.host, join["InterfaceName"]["SrcName"], sb2, "eth0", ["10.250.0.2/24"], "10.250.0.1")
    assert oracle.ping(sb2.name, "10.250.0.50")
    libnetwork_move_out(driver.host, sb2, "eth0", join["InterfaceName"]["SrcName"])
    c.ok("NetworkDriver.Leave", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("IpamDriver.ReleaseAddress", {"Address": "10.250.0.2", "PoolID": pool1})

    # network create clnet2: IPv6, internal, an option splice ignores, ipam options
    net2 = create_network(c, NID2, "10.250.1.0/24", gateway="10.250.1.254", v6="fd00:250:1::/64", internal=True,
                          generic={"clopt": "1"})
    assert net2["gateways"] == ["10.250.1.254/24", "fd00:250:1::1/64"]
    br2 = "br-" + NID2[:12]
    assert set(oracle.addresses(h, br2)) >= {"10.250.1.254/24", "fd00:250:1::1/64"}

    # network connect clnet2 clc1: v4 + v6 endpoint on an internal network
    a4 = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": None, "PoolID": net2["pools"][0]})
    a6 = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": None, "PoolID": net2["pools"][1]})
    assert (a4["Address"], a6["Address"]) == ("10.250.1.1/24", "fd00:250:1::2/64")
    c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID3, "NetworkID": NID2, "Interface": {
        "Address": a4["Address"], "AddressIPv6": a6["Address"], "MacAddress": ""}, "Options": {}})
    join = c.ok("NetworkDriver.Join", {"EndpointID": EID3, "NetworkID": NID2, "Options": {
        "com.docker.network.endpoint.exposedports": EXPOSED, "com.docker.network.portmap": PORTS},
        "SandboxKey": sb1.path})
    assert "Gateway" not in join and "GatewayIPv6" not in join and join["DisableGatewayService"] is True
    libnetwork_move_in(driver.host, join["InterfaceName"]["SrcName"], sb1, "eth1",
                       [a4["Address"], a6["Address"]])
    assert oracle.ping(sb1.name, "10.250.1.254")
    # internal: no masquerade entry for its addresses
    assert not [e for t, m, e in owned_elements(h) if t == "splice_nat" and "10.250.1.1" in str(e)]

    # network disconnect clnet2 clc1
    libnetwork_move_out(driver.host, sb1, "eth1", join["InterfaceName"]["SrcName"])
    c.ok("NetworkDriver.Leave", {"EndpointID": EID3, "NetworkID": NID2})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID3, "NetworkID": NID2})
    c.ok("IpamDriver.ReleaseAddress", {"Address": "10.250.1.1", "PoolID": net2["pools"][0]})
    c.ok("IpamDriver.ReleaseAddress", {"Address": "fd00:250:1::2", "PoolID": net2["pools"][1]})

    # rm -f clc1
    c.ok("NetworkDriver.RevokeExternalConnectivity", {"EndpointID": EID2, "NetworkID": NID})
    assert not [e for t, m, e in owned_elements(h) if t == "splice_portmap"]
    c.ok("NetworkDriver.Leave", {"EndpointID": EID2, "NetworkID": NID})
    libnetwork_move_out(driver.host, sb1, "eth0", src2)
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID2, "NetworkID": NID})
    c.ok("IpamDriver.ReleaseAddress", {"Address": "10.250.0.50", "PoolID": pool1})
    assert leases(driver.ipam_dir) == [(pool1, "10.250.0.1/24"), (net2["pools"][0], "10.250.1.254/24"),
                                       (net2["pools"][1], "fd00:250:1::1/64")]

    # network rm clnet2 clnet
    delete_network(c, NID2, net2)
    delete_network(c, NID, net1)
    assert_clean(driver)
    # deletes are idempotent
    c.ok("NetworkDriver.DeleteNetwork", {"NetworkID": NID})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID2, "NetworkID": NID})
    c.ok("NetworkDriver.Leave", {"EndpointID": EID2, "NetworkID": NID})
    c.ok("NetworkDriver.RevokeExternalConnectivity", {"EndpointID": EID2, "NetworkID": NID})
    c.ok("IpamDriver.ReleasePool", {"PoolID": pool1})
    c.ok("IpamDriver.ReleaseAddress", {"Address": "10.250.0.1", "PoolID": pool1})
    assert state_files(driver) == []


def test_join_failure_rollback_sequence(driver):
    """The observed clnetf step: Join fails (here: the endpoint was never created, 404) and
    dockerd calls DeleteEndpoint + ReleaseAddress: both succeed, nothing is left."""
    c = driver.client()
    net = create_network(c, NID, "10.250.2.0/24")
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": None, "PoolID": net["pools"][0]})
    status, answer = c.call("NetworkDriver.Join", {"EndpointID": EID1, "NetworkID": NID, "Options": {},
                                                   "SandboxKey": "/var/run/docker/netns/40b603d21fb4"})
    assert status == 404 and EID1 in answer["Err"]
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("IpamDriver.ReleaseAddress", {"Address": a["Address"].split("/")[0], "PoolID": net["pools"][0]})
    delete_network(c, NID, net)
    assert_clean(driver)


def test_dynamic_and_ranged_host_ports(driver):
    """HostPort 0 (-p 80, -P) gets a free port of the dynamic range; a HostPort-HostPortEnd
    range the first free one; a port another endpoint holds is skipped; the chosen ports are
    in EndpointOperInfo."""
    c = driver.client()
    h = driver.host.name
    net = create_network(c, NID, "10.250.3.0/24", generic={"com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"})
    eps = []
    for n, (eid, ports) in enumerate(((EID1, [{"Proto": 6, "Port": 80, "HostPort": 8000, "HostPortEnd": 8000}]),
                                      (EID2, [{"Proto": 6, "Port": 80, "HostPort": 8000, "HostPortEnd": 8002},
                                              {"Proto": 17, "Port": 53, "HostPort": 0}]))):
        a = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": None, "PoolID": net["pools"][0]})
        c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": eid, "NetworkID": NID,
                                              "Interface": {"Address": a["Address"]}, "Options": {}})
        c.ok("NetworkDriver.Join", {"EndpointID": eid, "NetworkID": NID, "Options": {}, "SandboxKey": ""})
        c.ok("NetworkDriver.ProgramExternalConnectivity", {"EndpointID": eid, "NetworkID": NID,
                                                           "Options": {"com.docker.network.portmap": ports}})
        eps.append((eid, a["Address"]))
    info = c.ok("NetworkDriver.EndpointOperInfo", {"EndpointID": EID2, "NetworkID": NID})["Value"]
    got = info["com.docker.network.portmap"]
    assert got[0]["HostPort"] == 8001 and got[0]["HostIP"] == "127.0.0.1"  # 8000 is EID1's
    lo, hi = (int(x) for x in driver.host.sh("cat", "/proc/sys/net/ipv4/ip_local_port_range").stdout.split())
    assert lo <= got[1]["HostPort"] <= hi and got[1]["Proto"] == 17
    keys = sorted(oracle.element_parts(e)[0] for t, m, e in owned_elements(h) if m == "dnat4_ip")
    assert keys == sorted([("127.0.0.1", "tcp", 8000), ("127.0.0.1", "tcp", 8001),
                           ("127.0.0.1", "udp", got[1]["HostPort"])])
    # programmed again with fewer ports, then none: converges, nothing stale stays
    c.ok("NetworkDriver.ProgramExternalConnectivity", {"EndpointID": EID2, "NetworkID": NID, "Options": {
        "com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 8001, "HostPortEnd": 8001}]}})
    keys = sorted(oracle.element_parts(e)[0] for t, m, e in owned_elements(h) if m == "dnat4_ip")
    assert keys == [("127.0.0.1", "tcp", 8000), ("127.0.0.1", "tcp", 8001)]
    c.ok("NetworkDriver.ProgramExternalConnectivity", {"EndpointID": EID2, "NetworkID": NID, "Options": {
        "com.docker.network.portmap": []}})
    keys = sorted(oracle.element_parts(e)[0] for t, m, e in owned_elements(h) if m == "dnat4_ip")
    assert keys == [("127.0.0.1", "tcp", 8000)]
    c.ok("NetworkDriver.ProgramExternalConnectivity", {"EndpointID": EID2, "NetworkID": NID, "Options": {
        "com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 8001, "HostPortEnd": 8001}]}})
    # a fixed port another endpoint holds: refused (409), nothing of this call stays
    status, answer = c.call("NetworkDriver.ProgramExternalConnectivity", {"EndpointID": EID1, "NetworkID": NID, "Options": {
        "com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 8001, "HostPortEnd": 8001}]}})
    assert status == 409 and "8001" in answer["Err"]
    keys = sorted(oracle.element_parts(e)[0] for t, m, e in owned_elements(h) if m == "dnat4_ip")
    assert keys == [("127.0.0.1", "tcp", 8000), ("127.0.0.1", "tcp", 8001)]  # EID1 keeps its 8000
    info = c.ok("NetworkDriver.EndpointOperInfo", {"EndpointID": EID1, "NetworkID": NID})["Value"]
    assert [p["HostPort"] for p in info["com.docker.network.portmap"]] == [8000]
    for eid, addr in eps:
        c.ok("NetworkDriver.RevokeExternalConnectivity", {"EndpointID": eid, "NetworkID": NID})
        c.ok("NetworkDriver.Leave", {"EndpointID": eid, "NetworkID": NID})
        c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": eid, "NetworkID": NID})
        c.ok("IpamDriver.ReleaseAddress", {"Address": addr.split("/")[0], "PoolID": net["pools"][0]})
    delete_network(c, NID, net)
    assert_clean(driver)


def test_bridge_options(driver):
    """bridge.name, enable_icc=false (isolated ports), enable_ip_masquerade=false, driver.mtu,
    container_iface_prefix, splice.macspoofchk."""
    c = driver.client()
    h = driver.host.name
    net = create_network(c, NID, "10.250.4.0/24", generic={
        "com.docker.network.bridge.name": "spbr0", "com.docker.network.bridge.enable_icc": "false",
        "com.docker.network.bridge.enable_ip_masquerade": "false", "com.docker.network.driver.mtu": "1400",
        "com.docker.network.container_iface_prefix": "ens", "splice.macspoofchk": "true"})
    assert oracle.link(h, "spbr0")["mtu"] == 1400
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": None, "PoolID": net["pools"][0]})
    c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID1, "NetworkID": NID, "Interface": {
        "Address": a["Address"], "MacAddress": "02:42:0a:fa:04:02"}, "Options": {}})
    join = c.ok("NetworkDriver.Join", {"EndpointID": EID1, "NetworkID": NID, "Options": {}, "SandboxKey": ""})
    assert join["InterfaceName"]["DstPrefix"] == "ens"
    src = join["InterfaceName"]["SrcName"]
    veth = [n for n in oracle.link_names(h) if n.startswith("veth")][0]
    detail = oracle.ip_json(h, "-d", "link", "show", veth)[0]
    assert detail["linkinfo"]["info_slave_data"]["isolated"] is True
    assert oracle.link(h, src)["mtu"] == 1400 and detail["mtu"] == 1400
    elems = owned_elements(h)
    assert not [e for t, m, e in elems if t == "splice_nat"]  # no masquerade
    assert [e for t, m, e in elems if t == "splice_filter"]  # the MAC spoof check is on
    c.ok("NetworkDriver.Leave", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("IpamDriver.ReleaseAddress", {"Address": a["Address"].split("/")[0], "PoolID": net["pools"][0]})
    delete_network(c, NID, net)
    assert_clean(driver)


def test_ipam(driver):
    """Default pools never overlap and differ on each repeated request (dockerd asks again
    while a pool overlaps), IPv6 defaults, explicit pools, sub-pools, addresses."""
    c = driver.client("splice")
    got = [c.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Pool": "", "SubPool": "", "Options": {},
                                           "V6": False}) for _ in range(3)]
    subnets = [g["Pool"] for g in got]
    assert subnets == ["10.200.0.0/24", "10.200.1.0/24", "10.200.2.0/24"]
    v6 = c.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Pool": "", "SubPool": "", "V6": True})
    assert v6["Pool"].startswith("fd") and v6["Pool"].endswith("/64")
    status, answer = c.call("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Pool": "10.200.1.0/25", "V6": False})
    assert status == 409 and "overlaps" in answer["Err"] and answer["Error"] == answer["Err"]
    status, answer = c.call("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Pool": "", "SubPool": "10.1.0.0/24"})
    assert status == 400 and "sub-pool" in answer["Err"]
    sub = c.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Pool": "10.77.0.0/16", "SubPool": "10.77.5.0/24"})
    assert sub["PoolID"] == f"{SPACE}/10.77.0.0/16/10.77.5.0/24"
    assert c.ok("IpamDriver.RequestAddress", {"PoolID": sub["PoolID"], "Address": ""})["Address"] == "10.77.5.0/16"
    gw = c.ok("IpamDriver.RequestAddress", {"PoolID": got[0]["PoolID"], "Address": "", "Options": GW_TYPE})
    assert gw["Address"] == "10.200.0.1/24"
    assert c.ok("IpamDriver.RequestAddress", {"PoolID": got[0]["PoolID"], "Address": "10.200.0.9"})["Address"] \
        == "10.200.0.9/24"
    status, answer = c.call("IpamDriver.RequestAddress", {"PoolID": got[0]["PoolID"], "Address": "10.200.0.9"})
    assert status == 409 and "already allocated" in answer["Err"]
    status, answer = c.call("IpamDriver.RequestAddress", {"PoolID": got[0]["PoolID"], "Address": "10.9.9.9"})
    assert status == 409 and "not in pool" in answer["Err"]
    assert c.ok("IpamDriver.RequestAddress", {"PoolID": got[0]["PoolID"]})["Address"] == "10.200.0.2/24"
    status, answer = c.call("IpamDriver.RequestAddress", {"PoolID": f"{SPACE}/10.9.0.0/24", "Address": ""})
    assert status == 404 and "unknown pool" in answer["Err"]
    status, answer = c.call("IpamDriver.RequestPool", {"Pool": "10.9.0.0/24"})
    assert status == 400 and "AddressSpace" in answer["Err"]
    status, answer = c.call("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Pool": "10.9.0.0/24", "V6": "no"})
    assert status == 400 and "V6" in answer["Err"]
    c.ok("IpamDriver.ReleaseAddress", {"PoolID": got[0]["PoolID"], "Address": "10.200.0.9"})
    c.ok("IpamDriver.ReleaseAddress", {"PoolID": got[0]["PoolID"], "Address": "10.200.0.9"})  # idempotent
    for p in got + [v6, sub]:
        c.ok("IpamDriver.ReleasePool", {"PoolID": p["PoolID"]})
    c.ok("IpamDriver.ReleasePool", {"PoolID": got[0]["PoolID"]})  # idempotent
    assert leases(driver.ipam_dir) == [] and [p for p in os.listdir(driver.ipam_dir)] == [SPACE]
    # the released defaults are handed out again
    again = c.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Pool": "", "SubPool": "", "V6": False})
    assert again["Pool"] == "10.200.0.0/24"
    c.ok("IpamDriver.ReleasePool", {"PoolID": again["PoolID"]})


def test_published_port_reached_from_the_host(driver, make_ns):
    """-p 127.0.0.1:18080:80 and -p 18081:80: a TCP server in the container answers through
    both, from the host namespace (localhost DNAT) and from the bridge's gateway address."""
    import subprocess
    import sys
    import time

    c = driver.client()
    net = create_network(c, NID, "10.250.5.0/24")
    sb = make_ns()
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": None, "PoolID": net["pools"][0]})
    ports = PORTS + [{"HostIP": "", "HostPort": 18081, "HostPortEnd": 18081, "IP": "", "Port": 80, "Proto": 6}]
    c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID1, "NetworkID": NID, "Interface": {"Address": a["Address"]},
                                          "Options": {"com.docker.network.portmap": ports}})
    join = c.ok("NetworkDriver.Join", {"EndpointID": EID1, "NetworkID": NID, "SandboxKey": sb.path, "Options": {}})
    libnetwork_move_in(driver.host, join["InterfaceName"]["SrcName"], sb, "eth0", [a["Address"]], join["Gateway"])
    c.ok("NetworkDriver.ProgramExternalConnectivity", {"EndpointID": EID1, "NetworkID": NID,
                                                       "Options": {"com.docker.network.portmap": ports}})
    server = subprocess.Popen(["nsenter", f"--net={sb.path}", sys.executable, "-I", "-c",
                               "import socket\ns=socket.create_server(('0.0.0.0', 80))\n"
                               "while True:\n c,_=s.accept(); c.sendall(b'splice-ok'); c.close()"])
    probe = ("import socket,sys\ns=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
             "print(s.recv(100).decode())")
    try:
        for host, port in (("127.0.0.1", 18080), ("10.250.5.1", 18081)):
            deadline = time.monotonic() + 5
            while True:
                p = driver.host.sh(sys.executable, "-I", "-c", probe, host, str(port), check=False)
                if p.stdout.strip() == "splice-ok":
                    break
                assert time.monotonic() < deadline, (host, port, p.stderr)
                time.sleep(0.1)
    finally:
        server.kill()
        server.wait()
    c.ok("NetworkDriver.RevokeExternalConnectivity", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("NetworkDriver.Leave", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("IpamDriver.ReleaseAddress", {"Address": a["Address"].split("/")[0], "PoolID": net["pools"][0]})
    delete_network(c, NID, net)
    assert_clean(driver)


def test_parallel_endpoints_and_overlapping_networks(driver):
    """dockerd starts containers in parallel: 8 connections create, join, publish, leave and
    delete endpoints on one network at once; two networks created at once with one subnet:
    exactly one wins."""
    import threading

    h = driver.host.name
    c = driver.client()
    net = create_network(c, NID, "10.250.8.0/24")
    errors: list = []

    def worker(n: int) -> None:
        try:
            w = driver.client()
            for i in range(4):
                eid = f"{n:02x}{i:02x}" + "e" * 60
                a = w.ok("IpamDriver.RequestAddress", {"Address": "", "PoolID": net["pools"][0]})
                w.ok("NetworkDriver.CreateEndpoint", {"EndpointID": eid, "NetworkID": NID,
                                                      "Interface": {"Address": a["Address"]}})
                w.ok("NetworkDriver.Join", {"EndpointID": eid, "NetworkID": NID, "SandboxKey": ""})
                w.ok("NetworkDriver.ProgramExternalConnectivity", {"EndpointID": eid, "NetworkID": NID, "Options": {
                    "com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 0}]}})
                w.ok("NetworkDriver.RevokeExternalConnectivity", {"EndpointID": eid, "NetworkID": NID})
                w.ok("NetworkDriver.Leave", {"EndpointID": eid, "NetworkID": NID})
                w.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": eid, "NetworkID": NID})
                w.ok("IpamDriver.ReleaseAddress", {"Address": a["Address"].split("/")[0], "PoolID": net["pools"][0]})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert oracle.link_names(h) == {"lo", "br-" + NID[:12]} and owned_elements(h) == []

    results: list = []

    def create(nid: str) -> None:
        w = driver.client()
        results.append(w.call("NetworkDriver.CreateNetwork", {"NetworkID": nid, "IPv4Data": [
            {"AddressSpace": SPACE, "Pool": "10.250.9.0/24", "Gateway": "10.250.9.1/24"}]}))

    ids = [f"{n:x}" * 64 for n in range(10, 14)]
    threads = [threading.Thread(target=create, args=(nid,)) for nid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(status for status, _ in results) == [200, 409, 409, 409]
    winner = next(nid for nid in ids if (driver.state_dir / "networks" / f"{nid}.json").exists())
    c.ok("NetworkDriver.DeleteNetwork", {"NetworkID": winner})
    delete_network(c, NID, net)
    assert_clean(driver)
