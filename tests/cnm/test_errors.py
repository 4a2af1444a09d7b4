"""Bad requests: a clear {"Err"} with a 4xx status, no traceback, nothing made, and the
daemon keeps serving on the same connection."""

from __future__ import annotations

import json
import socket

import pytest

from splice.conformance import oracle

from .conftest import EID1, NID, NID2, SPACE, assert_clean, create_network, delete_network, owned_elements

pytestmark = pytest.mark.root


def _err(c, method, body, status, *words):
    got_status, answer = c.call(method, body)
    assert got_status == status, (method, body, got_status, answer)
    assert isinstance(answer, dict) and answer.get("Err"), answer
    assert "Traceback" not in answer["Err"]
    for w in words:
        assert w in answer["Err"], (w, answer["Err"])
    return answer["Err"]


def test_bad_bodies(driver):
    c = driver.client()
    h = driver.host.name
    # not JSON, not an object, too deep
    for raw, word in ((b"{", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"\"x\"", "JSON object"),
                      (b"NaN", "not valid JSON"), (b"[" * 100 + b"]" * 100, "nested"), (b"\xff\xfe", "not valid JSON")):
        status, data, _ = c.raw("NetworkDriver.CreateNetwork", raw)
        answer = json.loads(data)
        assert status == 400 and word in answer["Err"], (raw, answer)
    # missing / wrong fields
    _err(c, "NetworkDriver.CreateNetwork", {}, 400, "NetworkID")
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": 5}, 400, "NetworkID")
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": "../../etc"}, 400, "not a valid id")
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [{"Pool": "10.1.0.0/33"}]}, 400, "CIDR")
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [{"Pool": "fd00::/64"}]}, 400, "IPv4")
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [{"Pool": "10.1.0.0/24",
                                                                            "Gateway": "10.2.0.1/24"}]}, 400, "not in")
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "Options": "x"}, 400, "Options")
    # option values of the wrong type, unsupported options
    for generic, words in (({"com.docker.network.driver.mtu": "big"}, ("mtu", "integer")),
                           ({"com.docker.network.driver.mtu": "20"}, ("mtu", "68")),
                           ({"com.docker.network.bridge.enable_icc": "maybe"}, ("enable_icc", "boolean")),
                           ({"com.docker.network.bridge.enable_ip_masquerade": 3}, ("masquerade", "boolean")),
                           ({"com.docker.network.bridge.name": "a-name-far-too-long"}, ("bridge",)),
                           ({"com.docker.network.bridge.host_binding_ipv4": "nowhere"}, ("host_binding_ipv4",)),
                           ({"com.docker.network.bridge.gateway_mode_ipv4": "routed"}, ("not supported",)),
                           ({"splice.nosuch": "1"}, ("splice.nosuch", "splice.macspoofchk")),
                           ({"splice.vlan": "abc"}, ("vlan", "integer"))):
        _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [
            {"AddressSpace": SPACE, "Pool": "10.250.0.0/24", "Gateway": "10.250.0.1/24"}],
            "Options": {"com.docker.network.generic": generic}}, 400, *words)
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "Options": {"com.docker.network.internal": "perhaps"}},
         400, "internal")
    assert oracle.link_names(h) == {"lo"}  # nothing was made by any of them
    # unknown network / endpoint
    _err(c, "NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID1, "Interface": {}}, 404, NID)
    _err(c, "NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID1}, 404, NID)
    _err(c, "NetworkDriver.EndpointOperInfo", {"NetworkID": NID, "EndpointID": EID1}, 404)
    _err(c, "NetworkDriver.ProgramExternalConnectivity", {"NetworkID": NID, "EndpointID": EID1}, 404)
    net = create_network(c, NID, "10.250.0.0/24")
    _err(c, "NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID1}, 404, EID1)
    _err(c, "NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID1, "Interface": {
        "Address": "10.250.0.2"}}, 400, "Address")
    _err(c, "NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID1, "Interface": {
        "Address": "fd00::2/64"}}, 400, "IPv4")
    _err(c, "NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID1, "Interface": {
        "Address": "10.250.0.2/24", "MacAddress": "01:00:5e:00:00:01"}}, 400, "MAC")
    _err(c, "NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID1, "Interface": []}, 400, "Interface")
    # a subnet overlapping another network of the same driver; a bridge name in use
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID2, "IPv4Data": [
        {"AddressSpace": SPACE, "Pool": "10.250.0.128/25", "Gateway": "10.250.0.129/25"}]}, 409, "overlaps",
        "10.250.0.0/24")
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID2, "IPv4Data": [
        {"AddressSpace": SPACE, "Pool": "10.251.0.0/24"}], "Options": {"com.docker.network.generic": {
            "com.docker.network.bridge.name": "br-" + NID[:12]}}}, 409, "already used")
    # the same NetworkID with other settings
    _err(c, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [
        {"AddressSpace": SPACE, "Pool": "10.252.0.0/24"}]}, 409, "already exists")
    # endpoint requests that cannot be honoured
    a = c.ok("IpamDriver.RequestAddress", {"Address": "", "PoolID": net["pools"][0]})
    c.ok("NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID1, "Interface": {"Address": a["Address"]}})
    again = c.ok("NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID1,
                                                  "Interface": {"Address": a["Address"]}})
    assert again["Interface"]["MacAddress"]  # a repeated call answers the same
    _err(c, "NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID1, "Interface": {
        "Address": "10.250.0.99/24"}}, 409, "already exists")
    c.ok("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID1, "SandboxKey": ""})
    for ports, words in (([{"Proto": 1, "Port": 80}], ("Proto",)), ([{"Proto": 6, "Port": 0}], ("Port",)),
                         ([{"Proto": 6, "Port": 80, "HostPort": 70000}], ("HostPort",)),
                         ([{"Proto": 6, "Port": 80, "HostIP": "x", "HostPort": 1}], ("HostIP",)),
                         ("all", ("list",))):
        _err(c, "NetworkDriver.ProgramExternalConnectivity", {"NetworkID": NID, "EndpointID": EID1, "Options": {
            "com.docker.network.portmap": ports}}, 400, *words)
    assert not [e for t, m, e in owned_elements(h) if t == "splice_portmap"]
    # the endpoint of another network
    _err(c, "NetworkDriver.Join", {"NetworkID": NID2, "EndpointID": EID1}, 404, NID2)
    c.ok("NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": EID1})
    c.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID1})
    c.ok("IpamDriver.ReleaseAddress", {"Address": a["Address"].split("/")[0], "PoolID": net["pools"][0]})
    delete_network(c, NID, net)
    assert_clean(driver)
    assert "Traceback" not in driver.log()


def test_transport_limits(driver):
    c = driver.client()
    # too big: 413 and the connection is closed (the body was not read)
    status, data, r = c.raw("IpamDriver.RequestPool", b"{}", headers={"Content-Length": str(64 << 20)})
    assert status == 413 and b"larger" in data
    c.close()
    # chunked: refused
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(driver.sock())
    s.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 411") and b"Content-Length" in reply
    s.close()
    # garbage that is not HTTP: a 400 from http.server, then closed
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(driver.sock())
    s.sendall(b"\x00\x01 hello\r\n\r\n")
    reply = b""
    while chunk := s.recv(4096):  # the daemon closes after its answer
        reply += chunk
    assert reply.split(b" ")[1] == b"400" and b'"Err": "bad request' in reply, reply
    s.close()
    assert driver.client().ok("Plugin.Activate")  # still serving
