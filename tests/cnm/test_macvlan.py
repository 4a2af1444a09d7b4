"""splice-macvlan over the Docker protocol: ``parent``, ``macvlan_mode``, the container end
left in the host for libnetwork, removed at DeleteEndpoint (it is back in the host then) and
collected after a ``docker rm -f`` while the driver was down."""

from __future__ import annotations

import pytest

from splice.conformance import oracle

from ..conftest import make_switch
from .conftest import EID1, EID2, NID, NID2, assert_clean, create_network, delete_network, libnetwork_move_in, \
    libnetwork_move_out

pytestmark = pytest.mark.root


def _err(c, method, body, status, *words):
    got, answer = c.call(method, body)
    assert got == status and all(w in answer["Err"] for w in words), (got, answer)


def test_macvlan_network(driver, make_ns):
    h = driver.host
    sw = make_switch(h, make_ns, "wire0", "10.251.0.1")
    c = driver.client("splice-macvlan")
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [{"Pool": "10.251.0.0/24"}]}, 400, "parent")
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [{"Pool": "10.251.0.0/24"}],
                                            "Options": {"com.docker.network.generic": {"parent": "nosuch0"}}},
         400, "nosuch0")
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [{"Pool": "10.251.0.0/24"}], "Options": {
        "com.docker.network.generic": {"parent": "wire0", "macvlan_mode": "sideways"}}}, 400, "mode", "sideways")
    net = create_network(c, NID, "10.251.0.0/24", gateway="10.251.0.1",
                         generic={"parent": "wire0", "macvlan_mode": "bridge"})
    assert oracle.link_names(h.name) == {"lo", "wire0"}  # nothing shared to make
    sb = make_ns()
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "PoolID": net["pools"][0]})
    ans = c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID1, "NetworkID": NID,
                                                "Interface": {"Address": a["Address"]}})
    join = c.ok("NetworkDriver.Join", {"EndpointID": EID1, "NetworkID": NID, "SandboxKey": sb.path})
    src = join["InterfaceName"]["SrcName"]
    assert join["Gateway"] == "10.251.0.1"
    link = oracle.ip_json(h.name, "-d", "link", "show", src)[0]
    assert link["linkinfo"]["info_kind"] == "macvlan" and link["linkinfo"]["info_data"]["mode"] == "bridge"
    assert link["link"] == "wire0" and link["address"] == ans["Interface"]["MacAddress"]
    libnetwork_move_in(h, src, sb, "eth0", [a["Address"]], "10.251.0.1")
    assert oracle.ping(sb.name, "10.251.0.1")  # out of the parent to the switch
    libnetwork_move_out(h, sb, "eth0", src)
    c.ok("NetworkDriver.Leave", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID1, "NetworkID": NID})
    assert oracle.link_names(h.name) == {"lo", "wire0"}
    c.ok("IpamDriver.ReleaseAddress", {"Address": a["Address"].split("/")[0], "PoolID": net["pools"][0]})

    # docker rm -f while the driver is down: the macvlan comes back to the host; collected
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "PoolID": net["pools"][0]})
    c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID2, "NetworkID": NID, "Interface": {"Address": a["Address"]}})
    join = c.ok("NetworkDriver.Join", {"EndpointID": EID2, "NetworkID": NID, "SandboxKey": sb.path})
    src = join["InterfaceName"]["SrcName"]
    libnetwork_move_in(h, src, sb, "eth0", [a["Address"]])
    driver.kill()
    libnetwork_move_out(h, sb, "eth0", src)
    driver.start()
    assert oracle.link_names(h.name) == {"lo", "wire0"}
    assert "collected at start: 1 endpoint(s)" in driver.log()
    c = driver.client("splice-macvlan")
    delete_network(c, NID, net)
    h.sh("ip", "link", "del", "wire0")
    assert_clean(driver)
    del sw


def test_macvlan_8021q_parent(driver, make_ns):
    """``parent=wire0.10``: the sub-interface is made at the first endpoint and removed with
    the last (needs 8021q; without it the error says so and nothing is left)."""
    h = driver.host
    make_switch(h, make_ns, "wire0", "10.252.0.1")
    c = driver.client("splice-macvlan")
    net = create_network(c, NID2, "10.252.0.0/24", generic={"parent": "wire0.10"})
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "PoolID": net["pools"][0]})
    status, answer = c.call("NetworkDriver.CreateEndpoint", {"EndpointID": EID1, "NetworkID": NID2,
                                                             "Interface": {"Address": a["Address"]}})
    if status == 200:
        assert "wire0.10" in oracle.link_names(h.name)
        c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID1, "NetworkID": NID2})
    else:
        assert "8021q" in answer["Err"], answer
    assert oracle.link_names(h.name) == {"lo", "wire0"}
    c.ok("IpamDriver.ReleaseAddress", {"Address": a["Address"].split("/")[0], "PoolID": net["pools"][0]})
    delete_network(c, NID2, net)
    h.sh("ip", "link", "del", "wire0")
    assert_clean(driver)
