"""State across restarts of the driver (and of dockerd, which re-activates the plugin but
never replays RequestPool), and the start-up collection of what containers removed while
the driver was down left behind."""

from __future__ import annotations

import signal
import time

import pytest

from splice.conformance import oracle

from .conftest import (
    EID1,
    EID2,
    EID3,
    NID,
    PORTS,
    _del_ns_name,
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


def _endpoint(c, pool, eid, sandbox, ifname="eth0", ports=None):
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": None, "PoolID": pool})
    c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": eid, "NetworkID": NID, "Interface": {"Address": a["Address"]},
                                          "Options": {}})
    if sandbox is None:
        return a["Address"], None
    join = c.ok("NetworkDriver.Join", {"EndpointID": eid, "NetworkID": NID, "Options": {}, "SandboxKey": sandbox.path})
    src = join["InterfaceName"]["SrcName"]
    libnetwork_move_in(c.host, src, sandbox, ifname, [a["Address"]], join["Gateway"])
    if ports:
        c.ok("NetworkDriver.ProgramExternalConnectivity", {"EndpointID": eid, "NetworkID": NID,
                                                           "Options": {"com.docker.network.portmap": ports}})
    return a["Address"], src


def _remove(c, pool, eid, addr, sandbox=None, src=None):
    c.ok("NetworkDriver.RevokeExternalConnectivity", {"EndpointID": eid, "NetworkID": NID})
    c.ok("NetworkDriver.Leave", {"EndpointID": eid, "NetworkID": NID})
    if sandbox is not None:
        libnetwork_move_out(c.host, sandbox, "eth0", src)
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": eid, "NetworkID": NID})
    c.ok("IpamDriver.ReleaseAddress", {"Address": addr.split("/")[0], "PoolID": pool})


def test_restart_in_the_middle_of_a_sequence(driver, make_ns):
    """SIGKILL with a joined, published endpoint; after the restart (and a 'dockerd restart':
    Activate again, no RequestPool) the container keeps working, a new one joins, the ports
    are still published, and everything is removed by the usual calls."""
    c = driver.client()
    c.host = driver.host
    h = driver.host.name
    net = create_network(c, NID, "10.250.0.0/24")
    pool = net["pools"][0]
    sb1, sb2 = make_ns(), make_ns()
    a1, src1 = _endpoint(c, pool, EID1, sb1, ports=PORTS)
    before = sorted(map(str, owned_elements(h)))
    driver.kill()
    assert oracle.ping(sb1.name, "10.250.0.1")  # the kernel objects do not depend on the daemon
    driver.start()
    c = driver.client()
    c.host = driver.host
    assert c.ok("Plugin.Activate")["Implements"] == ["NetworkDriver", "IpamDriver"]
    c.ok("NetworkDriver.GetCapabilities")
    c.ok("IpamDriver.GetDefaultAddressSpaces")
    info = c.ok("NetworkDriver.EndpointOperInfo", {"EndpointID": EID1, "NetworkID": NID})["Value"]
    assert info["joined"] and info["com.docker.network.portmap"][0]["HostPort"] == 18080
    assert sorted(map(str, owned_elements(h))) == before  # nothing collected: the container lives
    a2, src2 = _endpoint(c, pool, EID2, sb2)
    assert a2 == "10.250.0.3/24"  # the pool and its leases survived (no RequestPool replay)
    assert oracle.ping(sb2.name, a1.split("/")[0])
    # a restart between Leave and DeleteEndpoint
    c.ok("NetworkDriver.RevokeExternalConnectivity", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("NetworkDriver.Leave", {"EndpointID": EID1, "NetworkID": NID})
    libnetwork_move_out(driver.host, sb1, "eth0", src1)
    driver.stop()
    driver.start()
    c = driver.client()
    c.host = driver.host
    assert oracle.link(h, src1) is not None  # left, not joined: not garbage
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("IpamDriver.ReleaseAddress", {"Address": a1.split("/")[0], "PoolID": pool})
    _remove(c, pool, EID2, a2, sb2, src2)
    delete_network(c, NID, net)
    assert_clean(driver)


def test_collect_what_removed_containers_left(driver, make_ns):
    """While the driver is down: one container is removed with `docker rm -f` (libnetwork
    moves its interface back to the host, dockerd's Leave/DeleteEndpoint/ReleaseAddress
    fail), another one's sandbox vanishes (its veth dies with it). At the next start the
    driver collects both within 10 s (before it serves); a joined container whose sandbox
    lives and an endpoint not yet joined are kept."""
    c = driver.client()
    c.host = driver.host
    h = driver.host.name
    net = create_network(c, NID, "10.250.0.0/24")
    pool = net["pools"][0]
    sb1, sb2, sb3 = make_ns(), make_ns(), make_ns()
    a1, src1 = _endpoint(c, pool, EID1, sb1, ports=PORTS)
    a2, src2 = _endpoint(c, pool, EID2, sb2)
    a3, _ = _endpoint(c, pool, EID3, None)  # created, not joined
    keep = "4" * 64
    a4, src4 = _endpoint(c, pool, keep, sb3)
    driver.stop(signal.SIGKILL)
    # docker rm -f sb1 while the socket is dead
    libnetwork_move_out(driver.host, sb1, "eth0", src1)
    _del_ns_name(sb1.name)
    # sb2's sandbox disappears without libnetwork (e.g. dockerd died with it)
    _del_ns_name(sb2.name)
    t0 = time.monotonic()
    driver.start()
    took = time.monotonic() - t0
    assert took < 10, f"start-up with the collection took {took:.1f} s"
    assert "collected at start: 2 endpoint(s)" in driver.log(), driver.log()
    names = oracle.link_names(h)
    assert src1 not in names and src2 not in names and len([n for n in names if n.startswith("veth")]) == 2
    assert not [e for t, m, e in owned_elements(h) if t == "splice_portmap"]  # sb1's -p is gone
    srcnat = str([e for t, m, e in owned_elements(h) if t == "splice_nat"])
    assert a1.split("/")[0] not in srcnat and a2.split("/")[0] not in srcnat and a4.split("/")[0] in srcnat
    # rm -f: dockerd's ReleaseAddress failed, so the driver released it; a vanished sandbox:
    # dockerd's own clean-up releases it (below), never twice
    held = [addr for _pid, addr in leases(driver.ipam_dir)]
    assert a1 not in held and a2 in held and a3 in held and a4 in held
    assert state_files(driver) == sorted(["networks/" + NID + ".json", "endpoints/" + EID3 + ".json",
                                          "endpoints/" + keep + ".json"])
    c = driver.client()
    c.host = driver.host
    assert oracle.ping(sb3.name, "10.250.0.1")
    # dockerd's late clean-up calls are harmless
    c.ok("NetworkDriver.Leave", {"EndpointID": EID2, "NetworkID": NID})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID2, "NetworkID": NID})
    c.ok("IpamDriver.ReleaseAddress", {"Address": a2.split("/")[0], "PoolID": pool})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID3, "NetworkID": NID})
    c.ok("IpamDriver.ReleaseAddress", {"Address": a3.split("/")[0], "PoolID": pool})
    _remove(c, pool, keep, a4, sb3, src4)
    delete_network(c, NID, net)
    assert_clean(driver)


def test_crash_leftovers_without_a_record_are_collected(driver):
    """Owner-tagged objects of an endpoint the state does not know (a call that crashed
    between the kernel and the state file) go at the next start: the drivers' GC."""
    c = driver.client()
    h = driver.host.name
    net = create_network(c, NID, "10.250.0.0/24")
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "PoolID": net["pools"][0]})
    c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID1, "NetworkID": NID, "Interface": {"Address": a["Address"]}})
    driver.kill()
    (driver.state_dir / "endpoints" / f"{EID1}.json").unlink()  # as if the daemon died before writing it
    driver.start()
    assert [n for n in oracle.link_names(h) if n.startswith(("veth", "sp"))] == []
    assert owned_elements(h) == []
    c = driver.client()
    c.ok("IpamDriver.ReleaseAddress", {"Address": a["Address"].split("/")[0], "PoolID": net["pools"][0]})
    delete_network(c, NID, net)
    assert_clean(driver)


def test_a_network_killed_while_being_created_is_removed_at_start(driver):
    """CreateNetwork writes its record (pending) before it makes the bridge: a daemon killed
    in between leaves a record the next start removes with the bridge; dockerd never got an
    answer, so the network does not exist for it."""
    import json

    c = driver.client()
    h = driver.host.name
    net = create_network(c, NID, "10.250.0.0/24")
    assert "br-" + NID[:12] in oracle.link_names(h)
    driver.kill()
    path = driver.state_dir / "networks" / f"{NID}.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), pending=True)))
    driver.start()
    assert oracle.link_names(h) == {"lo"}
    assert state_files(driver) == []
    c = driver.client()
    for pid, gw in zip(net["pools"], net["gateways"]):
        c.ok("IpamDriver.ReleaseAddress", {"Address": gw.split("/")[0], "PoolID": pid})
        c.ok("IpamDriver.ReleasePool", {"PoolID": pid})
    c.ok("NetworkDriver.DeleteNetwork", {"NetworkID": NID})  # dockerd's view: idempotent
    assert_clean(driver)


def test_repeated_join(driver, make_ns):
    """A second Join of a joined endpoint answers the same (same sandbox) or 409 (another
    one), and never re-wires the container end that is in the sandbox."""
    c = driver.client()
    c.host = driver.host
    net = create_network(c, NID, "10.250.0.0/24")
    sb = make_ns()
    a, src = _endpoint(c, net["pools"][0], EID1, sb)
    again = c.ok("NetworkDriver.Join", {"EndpointID": EID1, "NetworkID": NID, "Options": {}, "SandboxKey": sb.path})
    assert again["InterfaceName"]["SrcName"] == src
    status, answer = c.call("NetworkDriver.Join", {"EndpointID": EID1, "NetworkID": NID, "SandboxKey": "/x/y"})
    assert status == 409 and "already joined" in answer["Err"]
    assert oracle.ping(sb.name, "10.250.0.1")
    _remove(c, net["pools"][0], EID1, a, sb, src)
    delete_network(c, NID, net)
    assert_clean(driver)


def test_after_a_reboot(driver, make_ns):
    """A reboot takes the kernel objects and the sandboxes, not the state: the joined
    endpoint is collected (dockerd's own clean-up releases its address), a new container on
    the network gets the bridge and its gateway made again."""
    c = driver.client()
    c.host = driver.host
    h = driver.host
    net = create_network(c, NID, "10.250.0.0/24")
    pool = net["pools"][0]
    sb = make_ns()
    a1, src1 = _endpoint(c, pool, EID1, sb, ports=PORTS)
    driver.kill()
    _del_ns_name(sb.name)  # the reboot: sandboxes, links, nftables gone
    for name in oracle.link_names(h.name) - {"lo"}:
        h.sh("ip", "link", "del", name, check=False)
    h.sh("nft", "flush", "ruleset")
    driver.start()
    assert "collected at start: 1 endpoint(s)" in driver.log()
    c = driver.client()
    c.host = h
    # dockerd's sandbox clean-up after the reboot
    c.ok("NetworkDriver.Leave", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("NetworkDriver.DeleteEndpoint", {"EndpointID": EID1, "NetworkID": NID})
    c.ok("IpamDriver.ReleaseAddress", {"Address": a1.split("/")[0], "PoolID": pool})
    sb2 = make_ns()
    a2, src2 = _endpoint(c, pool, EID2, sb2, ports=PORTS)
    assert oracle.addresses(h.name, "br-" + NID[:12]) == ["10.250.0.1/24"]
    assert oracle.ping(sb2.name, "10.250.0.1")
    _remove(c, pool, EID2, a2, sb2, src2)
    delete_network(c, NID, net)
    assert_clean(driver)
