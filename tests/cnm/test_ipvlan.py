"""splice-ipvlan over the Docker protocol (needs the ipvlan module: the UML guest): l2 gets
the gateway, l3 connected default routes and no gateway service; no MAC is answered (an
ipvlan has its master's)."""

from __future__ import annotations

import pytest

from splice.conformance import oracle

from ..conftest import make_switch, missing_kernel_feature
from .conftest import EID1, NID, NID2, assert_clean, create_network, delete_network, libnetwork_move_in, \
    libnetwork_move_out

pytestmark = [pytest.mark.root, pytest.mark.needs_vm]


def _ipvlan_supported(ns) -> bool:
    ok = ns.sh("ip", "link", "add", "link", "wire0", "name", "ipvprobe", "type", "ipvlan", check=False).returncode == 0
    if ok:
        ns.sh("ip", "link", "del", "ipvprobe")
    return ok


@pytest.mark.parametrize("mode", ["l2", "l3"])
def test_ipvlan_network(driver, make_ns, mode):
    h = driver.host
    make_switch(h, make_ns, "wire0", "10.253.0.1")
    if not _ipvlan_supported(h):
        missing_kernel_feature("ipvlan (CONFIG_IPVLAN)")
    c = driver.client("splice-ipvlan")
    nid = NID if mode == "l2" else NID2
    net = create_network(c, nid, "10.253.0.0/24", gateway="10.253.0.1",
                         generic={"parent": "wire0", "ipvlan_mode": mode})
    sb = make_ns()
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "PoolID": net["pools"][0]})
    ans = c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID1, "NetworkID": nid,
                                                "Interface": {"Address": a["Address"]}})
    assert ans == {"Interface": {}}
    join = c.ok("NetworkDriver.Join", {"EndpointID": EID1, "NetworkID": nid, "SandboxKey": sb.path})
    src = join["InterfaceName"]["SrcName"]
    assert oracle.ip_json(h.name, "-d", "link", "show", src)[0]["linkinfo"]["info_kind"] == "ipvlan"
    if mode == "l2":
        assert join["Gateway"] == "10.253.0.1" and join["StaticRoutes"] == []
        libnetwork_move_in(h, src, sb, "eth0", [a["Address"]], "10.253.0.1")
        assert oracle.ping(sb.name, "10.253.0.1")
    else:
        assert "Gateway" not in join and join["DisableGatewayService"] is True
        assert join["StaticRoutes"] == [{"Destination": "0.0.0.0/0", "RouteType": 1}]
        libnetwork_move_in(h, src, sb, "eth0", [a["Address"]])
    libnetwork_move_out(h, sb, "eth0", src)
    c.ok("NetworkDriver.Leave", {"EndpointID": EID1, "NetworkID": nid})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID1, "NetworkID": nid})
    assert oracle.link_names(h.name) == {"lo", "wire0"}
    c.ok("IpamDriver.ReleaseAddress", {"Address": a["Address"].split("/")[0], "PoolID": net["pools"][0]})
    delete_network(c, nid, net)
    h.sh("ip", "link", "del", "wire0")
    assert_clean(driver)
