"""The bridge driver's IN_HOST path end to end, as libnetwork uses it: the container end
moved into a sandbox reaches the outside through the masquerade, a spoofed MAC is dropped by
the spoof check, IPv6 gets its gateway."""

from __future__ import annotations

import pytest

from splice.conformance import oracle

from ..conftest import has_ipv6
from .conftest import EID1, NID, assert_clean, create_network, delete_network, libnetwork_move_in, \
    libnetwork_move_out

pytestmark = pytest.mark.root


def test_masquerade_spoof_check_and_ipv6(driver, make_ns):
    h = driver.host
    world = make_ns()  # "the internet": reachable from the host over a wire, no route back to containers
    h.sh("ip", "link", "add", "up0", "type", "veth", "peer", "name", "wan0", "netns", world.name)
    h.sh("ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
    h.sh("ip", "link", "set", "up0", "up")
    world.sh("ip", "addr", "add", "192.0.2.2/24", "dev", "wan0")
    world.sh("ip", "link", "set", "wan0", "up")
    c = driver.client()
    v6 = "fd00:250:7::/64" if has_ipv6() else None
    net = create_network(c, NID, "10.250.7.0/24", v6=v6, generic={"splice.macspoofchk": "true"})
    sb = make_ns()
    a4 = c.ok("IpamDriver.RequestAddress", {"Address": "", "PoolID": net["pools"][0]})["Address"]
    iface = {"Address": a4}
    addrs = [a4]
    if v6:
        a6 = c.ok("IpamDriver.RequestAddress", {"Address": "", "PoolID": net["pools"][1]})["Address"]
        iface["AddressIPv6"] = a6
        addrs.append(a6)
    c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID1, "NetworkID": NID, "Interface": iface})
    join = c.ok("NetworkDriver.Join", {"EndpointID": EID1, "NetworkID": NID, "SandboxKey": sb.path})
    assert join["Gateway"] == "10.250.7.1"
    if v6:
        assert join["GatewayIPv6"] == "fd00:250:7::1"
    src = join["InterfaceName"]["SrcName"]
    libnetwork_move_in(h, src, sb, "eth0", addrs, join["Gateway"])
    # masquerade: the world answers the host's address, it has no route to 10.250.7.0/24
    assert oracle.ping(sb.name, "192.0.2.2")
    if v6:
        assert oracle.ping(sb.name, "fd00:250:7::1")
    # spoof check: another source MAC from the container is dropped at the bridge port
    sb.sh("ip", "link", "set", "eth0", "address", "02:00:00:00:0b:ad")
    sb.sh("ip", "neigh", "flush", "dev", "eth0")
    assert not oracle.ping(sb.name, "10.250.7.1", timeout=1)
    libnetwork_move_out(h, sb, "eth0", src)
    c.ok("NetworkDriver.Leave", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID1, "NetworkID": NID})
    for pid, a in zip(net["pools"], addrs):
        c.ok("IpamDriver.ReleaseAddress", {"Address": a.split("/")[0], "PoolID": pid})
    delete_network(c, NID, net)
    h.sh("ip", "link", "del", "up0")
    assert_clean(driver)
