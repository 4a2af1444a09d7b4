"""A tiny Docker remote network + IPAM driver (stdlib only) for the CNM kit's own tests.

    python cnm_stub.py SOCKET [--break MODE]

Run inside a throwaway network namespace: CreateEndpoint makes a veth pair (``st<8 hex>`` /
``sp<8 hex>``) there, Join answers ``st…`` as SrcName, DeleteEndpoint deletes it. Without
``--break`` it follows the protocol (the kit passes it); each MODE breaks one rule:

  lax-json        answers 200 {} to a body that is not JSON
  leaky           DeleteEndpoint forgets the endpoint but leaves its veth pair
  strict-delete   DeleteEndpoint of an unknown endpoint, Leave of one not joined: 404 with an Err
  echo-interface  CreateEndpoint answers the Interface it was given
  no-404          an unknown path gets 200 {}
  close           every answer closes the connection (Connection: close)
  ghost-srcname   Join answers a SrcName no link has
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socketserver
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler

MODES = ("lax-json", "leaky", "strict-delete", "echo-interface", "no-404", "close", "ghost-srcname")
MIME = "application/vnd.docker.plugins.v1.2+json"
BREAK = ""


class Refused(Exception):
    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.status = status


LOCK = threading.Lock()
POOLS: dict[str, dict] = {}  # PoolID -> {"net": ip_network, "refs": int, "held": set[str]}
NETWORKS: dict[str, dict] = {}
ENDPOINTS: dict[str, dict] = {}
DEFAULT_N = [0]


def s(b: dict, key: str, required: bool = True) -> str:
    v = b.get(key)
    if v is None or v == "":
        if required:
            raise Refused(f"{key} is missing")
        return ""
    if not isinstance(v, str):
        raise Refused(f"{key} must be a string")
    return v


def ip_link(*args: str) -> None:
    p = subprocess.run(["ip", "link", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise Refused(f"ip link {' '.join(args)}: {p.stderr.strip()}", 500)


# -- IPAM ----------------------------------------------------------------------------------------
def request_pool(b: dict) -> dict:
    s(b, "AddressSpace")
    pool, sub = s(b, "Pool", False), s(b, "SubPool", False)
    v6 = b.get("V6", False)
    if not isinstance(v6, bool):
        raise Refused("V6 must be a boolean")
    if not pool:
        if sub:
            raise Refused("SubPool without Pool")
        DEFAULT_N[0] += 1
        n = ipaddress.ip_network(f"fd99:{DEFAULT_N[0]:x}::/64" if v6 else f"10.199.{DEFAULT_N[0]}.0/24")
        pid = f"stub/{n}"
        POOLS[pid] = {"net": n, "refs": 1, "held": set()}
        return {"PoolID": pid, "Pool": str(n), "Data": {}}
    try:
        n = ipaddress.ip_network(pool)
    except ValueError:
        raise Refused(f"Pool {pool!r} is not a CIDR") from None
    if n.version != (6 if v6 else 4):
        raise Refused("Pool and V6 disagree")
    pid = f"stub/{n}"
    if pid in POOLS:
        POOLS[pid]["refs"] += 1
    else:
        for other in POOLS.values():
            if other["net"].version == n.version and other["net"].overlaps(n):
                raise Refused(f"{n} overlaps {other['net']}", 409)
        POOLS[pid] = {"net": n, "refs": 1, "held": set()}
    return {"PoolID": pid, "Pool": str(n), "Data": {}}


def release_pool(b: dict) -> dict:
    pid = s(b, "PoolID")
    p = POOLS.get(pid)
    if p is not None:
        p["refs"] -= 1
        if p["refs"] <= 0:
            del POOLS[pid]
    return {}


def _known(table: dict, b: dict, key: str, what: str) -> dict:
    ident = s(b, key)
    if ident not in table:
        raise Refused(f"{what} {ident} not found", 404)
    return table[ident]


def pool_of(b: dict) -> dict:
    return _known(POOLS, b, "PoolID", "pool")


def request_address(b: dict) -> dict:
    p = pool_of(b)
    want = s(b, "Address", False)
    opts = b.get("Options") or {}
    if not isinstance(opts, dict):
        raise Refused("Options must be an object")
    n = p["net"]
    if want:
        try:
            ip = ipaddress.ip_address(want)
        except ValueError:
            raise Refused(f"Address {want!r} is not an address") from None
        if ip not in n:
            raise Refused(f"{ip} is not in {n}")
        if str(ip) in p["held"]:
            raise Refused(f"{ip} is already in use", 409)
    else:
        ip = next((h for h in n.hosts() if str(h) not in p["held"]), None)
        if ip is None:
            raise Refused("pool exhausted", 409)
    p["held"].add(str(ip))
    return {"Address": f"{ip}/{n.prefixlen}", "Data": {}}


def release_address(b: dict) -> dict:
    pid = s(b, "PoolID")
    a = s(b, "Address")
    try:
        ipaddress.ip_address(a)
    except ValueError:
        raise Refused(f"Address {a!r} is not an address") from None
    if pid in POOLS:
        POOLS[pid]["held"].discard(a)
    return {}


# -- network -------------------------------------------------------------------------------------
def create_network(b: dict) -> dict:
    nid = s(b, "NetworkID")
    data = []
    for key in ("IPv4Data", "IPv6Data"):
        v = b.get(key) or []
        if not isinstance(v, list):
            raise Refused(f"{key} must be a list")
        for d in v:
            if not isinstance(d, dict) or not isinstance(d.get("Pool"), str):
                raise Refused(f"{key}: Pool must be a string")
            try:
                ipaddress.ip_network(d["Pool"])
            except ValueError:
                raise Refused(f"{key}: bad Pool") from None
            data.append(d)
    opts = b.get("Options") or {}
    if not isinstance(opts, dict):
        raise Refused("Options must be an object")
    NETWORKS[nid] = {"data": data, "internal": bool(opts.get("com.docker.network.internal"))}
    return {}


def delete_network(b: dict) -> dict:
    NETWORKS.pop(s(b, "NetworkID"), None)
    return {}


def network_of(b: dict) -> dict:
    return _known(NETWORKS, b, "NetworkID", "network")


def endpoint_of(b: dict) -> dict:
    network_of(b)
    return _known(ENDPOINTS, b, "EndpointID", "endpoint")


def create_endpoint(b: dict) -> dict:
    network_of(b)
    eid = s(b, "EndpointID")
    itf = b.get("Interface") or {}
    if not isinstance(itf, dict):
        raise Refused("Interface must be an object")
    for k in ("Address", "AddressIPv6"):
        v = itf.get(k)
        if v not in (None, ""):
            if not isinstance(v, str):
                raise Refused(f"Interface.{k} must be a string")
            try:
                ipaddress.ip_interface(v)
            except ValueError:
                raise Refused(f"Interface.{k} is not an address") from None
    if eid not in ENDPOINTS:
        name = "st" + eid[:8]
        ip_link("add", name, "type", "veth", "peer", "name", "sp" + eid[:8])
        ENDPOINTS[eid] = {"src": name, "network": b["NetworkID"]}
    if BREAK == "echo-interface":
        return {"Interface": {k: v for k, v in itf.items() if v}}
    return {"Interface": {}}


def delete_endpoint(b: dict) -> dict:
    eid = s(b, "EndpointID")
    ep = ENDPOINTS.pop(eid, None)
    if ep is None:
        if BREAK == "strict-delete":
            raise Refused(f"endpoint {eid} not found", 404)
        return {}
    if BREAK != "leaky":
        ip_link("del", ep["src"])
    return {}


def join(b: dict) -> dict:
    ep = endpoint_of(b)
    ep["joined"] = True
    net = NETWORKS[ep["network"]]
    ans = {"InterfaceName": {"SrcName": "ghost0" if BREAK == "ghost-srcname" else ep["src"], "DstPrefix": "eth"},
           "StaticRoutes": [], "DisableGatewayService": net["internal"]}
    for d in net["data"]:
        gw = d.get("Gateway")
        if gw and not net["internal"]:
            ip = ipaddress.ip_interface(gw).ip
            ans["Gateway" if ip.version == 4 else "GatewayIPv6"] = str(ip)
    return ans


def leave(b: dict) -> dict:
    eid = s(b, "EndpointID")
    ep = ENDPOINTS.get(eid)
    if BREAK == "strict-delete" and (ep is None or not ep.get("joined")):
        raise Refused(f"endpoint {eid} is not joined", 404)
    if ep is not None:
        ep["joined"] = False
    return {}


def program(b: dict) -> dict:
    endpoint_of(b)
    if not isinstance(b.get("Options") or {}, dict):
        raise Refused("Options must be an object")
    return {}


def revoke(b: dict) -> dict:
    s(b, "NetworkID")
    s(b, "EndpointID")
    return {}


ROUTES = {
    "/Plugin.Activate": lambda b: {"Implements": ["NetworkDriver", "IpamDriver"]},
    "/NetworkDriver.GetCapabilities": lambda b: {"Scope": "local", "ConnectivityScope": "local"},
    "/NetworkDriver.CreateNetwork": create_network,
    "/NetworkDriver.DeleteNetwork": delete_network,
    "/NetworkDriver.CreateEndpoint": create_endpoint,
    "/NetworkDriver.DeleteEndpoint": delete_endpoint,
    "/NetworkDriver.EndpointOperInfo": lambda b: (endpoint_of(b), {"Value": {}})[1],
    "/NetworkDriver.Join": join,
    "/NetworkDriver.Leave": leave,
    "/NetworkDriver.ProgramExternalConnectivity": program,
    "/NetworkDriver.RevokeExternalConnectivity": revoke,
    "/IpamDriver.GetCapabilities": lambda b: {"RequiresMACAddress": False},
    "/IpamDriver.GetDefaultAddressSpaces": lambda b: {"LocalDefaultAddressSpace": "stublocal",
                                                      "GlobalDefaultAddressSpace": "stubglobal"},
    "/IpamDriver.RequestPool": request_pool,
    "/IpamDriver.ReleasePool": release_pool,
    "/IpamDriver.RequestAddress": request_address,
    "/IpamDriver.ReleaseAddress": release_address,
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def address_string(self) -> str:
        return "stub"

    def reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", MIME)
        self.send_header("Content-Length", str(len(data)))
        if BREAK == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fn = ROUTES.get(self.path)
        if fn is None:
            if BREAK == "no-404":
                return self.reply(200, {})
            return self.reply(404, {"Err": f"unknown path {self.path}"})
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            if BREAK == "lax-json":
                return self.reply(200, {})
            return self.reply(400, {"Err": "body is not JSON", "Error": "body is not JSON"})
        if not isinstance(body, dict):
            return self.reply(400, {"Err": "body must be an object", "Error": "body must be an object"})
        try:
            with LOCK:
                ans = fn(body)
        except Refused as e:
            return self.reply(e.status, {"Err": str(e), "Error": str(e)})
        self.reply(200, ans)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main() -> int:
    global BREAK
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("--break", dest="mode", choices=MODES, default="")
    args = ap.parse_args()
    BREAK = args.mode
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    srv = Server(args.socket, Handler)
    try:
        srv.serve_forever()
    finally:
        os.unlink(args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
