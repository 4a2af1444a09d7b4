"""The CNM section of the conformance kit: protocol checks for any Docker remote network
driver and/or remote IPAM driver, black box, over its unix socket.

    splice-conformance --cnm-socket PATH [--cnm-driver-type bridge|macvlan|ipvlan|null]
                       [--cnm-parent IF] [--netns NAME] [--json] [-k ID]

The kit plays dockerd: it speaks HTTP/1.1 over the socket (stdlib ``http.client``, one
kept-alive connection per check, dockerd's ``Accept`` header, bodies as Go's JSON encoder
writes them) and sends the calls a real dockerd 20.10 was observed making (recorded with their
bodies, in order; tests/cnm/test_protocol.py replays the same record), in that order, with those
bodies (fresh ids, subnets and ports per check). It never changes the machine: the only
kernel access is reading the driver's namespace (``--netns``) with ``ip -n NAME -j``, for the
link and leak checks; without ``--netns`` those are skipped. It does not play libnetwork's
part of moving Join's ``SrcName`` into a sandbox (that would change the driver's namespace):
the interface stays where the driver made it until DeleteEndpoint.

Each check has an id (``CNM-…``), a source (libnetwork ``docs/remote.md``, ``docs/ipam.md``,
the engine's remote driver proxy ``drivers/remote/driver.go``, the plugin client
``pkg/plugins/client.go``, Docker's ``plugin_api`` page, or a dockerd behaviour from the
observed calls), a level (MUST / SHOULD / ``obs`` = what dockerd relies on) and a one-line
reason when it fails. Every check that creates something ends with a leak check of the
driver's namespace (links and addresses back to the check's start) and tears down, best
effort, whatever it created.

"Refused" means refused as dockerd sees it (pkg/plugins/client.go, drivers/remote/driver.go,
ipams/remote): an HTTP status other than 200 whose JSON body carries a non-empty ``Err``, or a
200 whose ``Err`` (network calls) / ``Error`` (IPAM calls) is non-empty.
"""

from __future__ import annotations

import fnmatch
import http.client
import ipaddress
import json
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from splice.conformance.kit import CheckFailed, Outcome, Skip, is_cidr, outcome_of, summary

# Sources (upstream moby/moby paths; the texts the checks paraphrase)
REMOTE_MD = "libnetwork docs/remote.md"
IPAM_MD = "libnetwork docs/ipam.md"
DRIVER_GO = "libnetwork drivers/remote/driver.go"
CLIENT_GO = "pkg/plugins/client.go"
PLUGIN_API = "docs.docker.com plugin_api"
OBSERVED = "observed dockerd 20.10 calls"
CLEANUP = "dockerd clean-up (libnetwork)"
REMOTE_IPAM_GO = "libnetwork ipams/remote/remote.go"

MIME = "application/vnd.docker.plugins.v1.2+json"  # what dockerd sends as Accept
DRIVER_TYPES = ("bridge", "macvlan", "ipvlan", "null")
GW_TYPE = {"RequestAddressType": "com.docker.network.gateway"}
PORTMAP = "com.docker.network.portmap"
EXPOSED = "com.docker.network.endpoint.exposedports"
LINK_GRACE = 2.0


@dataclass
class CnmCheck:
    id: str
    title: str
    source: str
    level: str  # MUST, SHOULD, obs
    quote: str  # what the source says (paraphrased) or what dockerd was observed doing
    fn: Callable[["Ctx"], None]
    needs: tuple[str, ...] = ()  # "network", "ipam", "netns"

    @property
    def spec(self) -> str:
        return self.source


REGISTRY: list[CnmCheck] = []


def check(id: str, title: str, source: str, level: str, quote: str, needs: Iterable[str] = ()):
    def deco(fn):
        REGISTRY.append(CnmCheck(id, title, source, level, quote, fn, tuple(needs)))
        return fn

    return deco


# ------------------------------------------------------------------------------ transport


class UnixConnection(http.client.HTTPConnection):
    """http.client over a unix socket (also the tests' plugin clients); ``counter[0]`` counts connects."""

    def __init__(self, path: str, timeout: float = 30.0, counter: list[int] | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path
        self.counter = counter if counter is not None else [0]

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s
        self.counter[0] += 1


@dataclass
class Answer:
    method: str
    status: int
    content_type: str
    data: bytes
    will_close: bool
    json: Any = None
    json_ok: bool = False

    @property
    def ipam(self) -> bool:
        return self.method.startswith("IpamDriver.")

    def error_text(self) -> str | None:
        """The error dockerd would see, or None when it sees a success."""
        obj = self.json if isinstance(self.json, dict) else {}
        if self.status != 200:
            msg = obj.get("Err") if isinstance(obj.get("Err"), str) else None
            return msg or f"HTTP {self.status}: {self.data[:120].decode('utf-8', 'replace')}"
        for key in (("Error", "Err") if self.ipam else ("Err",)):
            if isinstance(obj.get(key), str) and obj[key]:
                return obj[key]
        return None

    def describe(self) -> str:
        body = " ".join(self.data[:160].decode("utf-8", "replace").split())
        return f"HTTP {self.status} {body}"


class Client:
    """HTTP/1.1 over the driver's unix socket, one kept-alive connection (as dockerd's plugin
    client); ``connects`` counts the connections it had to open."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.counter = [0]
        self.conn = UnixConnection(path, timeout, self.counter)

    @property
    def connects(self) -> int:
        return self.counter[0]

    def post(self, method: str, body: Any = None, *, raw: bytes | None = None) -> Answer:
        """POST /<method>. ``body`` None sends no body (dockerd's calls without arguments);
        otherwise JSON with a trailing newline, as Go's json.Encoder writes it."""
        data = raw if raw is not None else (b"" if body is None else (json.dumps(body) + "\n").encode())
        headers = {"Accept": MIME, "Content-Type": MIME, "Content-Length": str(len(data))}
        try:
            self.conn.request("POST", "/" + method, body=data, headers=headers)
            r = self.conn.getresponse()
            payload = r.read()
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            raise CheckFailed(f"{method}: no answer ({e.__class__.__name__}: {e})") from None
        a = Answer(method, r.status, r.getheader("Content-Type") or "", payload, r.will_close)
        try:
            a.json = json.loads(payload) if payload.strip() else None
            a.json_ok = bool(payload.strip())
        except ValueError:
            a.json_ok = False
        return a

    def close(self) -> None:
        self.conn.close()


# ------------------------------------------------------------------------------ oracle (read only)


def _ip_json(netns: str, *args: str) -> Any:
    argv = (["nsenter", f"--net={netns}", "ip"] if "/" in netns else ["ip", "-n", netns]) + ["-j", *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {p.stderr.strip()}")
    return json.loads(p.stdout) if p.stdout.strip() else []


def netns_links(netns: str) -> set[str]:
    return {item["ifname"] for item in _ip_json(netns, "link", "show")}


def netns_addresses(netns: str) -> set[str]:
    out = set()
    for item in _ip_json(netns, "addr", "show"):
        for a in item.get("addr_info", []):
            if a.get("family") == "inet6" and a.get("scope") == "link":
                continue
            out.add(f"{item.get('ifname')}:{a['local']}/{a['prefixlen']}")
    return out


@dataclass(frozen=True)
class Snapshot:
    links: frozenset
    addresses: frozenset

    @classmethod
    def take(cls, netns: str) -> "Snapshot":
        return cls(frozenset(netns_links(netns)), frozenset(netns_addresses(netns)))

    def diff(self, later: "Snapshot") -> list[str]:
        p = []
        extra = sorted(later.links - self.links)
        gone = sorted(self.links - later.links)
        if extra:
            p.append(f"links left: {', '.join(extra)}")
        if gone:
            p.append(f"links gone that were there before: {', '.join(gone)}")
        extra_a = sorted(a for a in later.addresses - self.addresses if a.split(":", 1)[0] in self.links)
        if extra_a:
            p.append(f"addresses left: {', '.join(extra_a)}")
        return p


# ------------------------------------------------------------------------------ session / context


@dataclass
class CnmConfig:
    socket: str
    driver_type: str = "bridge"
    netns: str | None = None
    parent: str | None = None
    timeout: float = 30.0


class Session:
    def __init__(self, cfg: CnmConfig) -> None:
        self.cfg = cfg
        self.implements: list[str] = []
        self.activate_error = ""
        self.space = "LocalDefault"  # replaced by the driver's GetDefaultAddressSpaces answer
        self.start: Snapshot | None = None
        self.pools_used: set[tuple[str, bool]] = set()  # (explicit subnet, v6) requested in this run
        self._subnet = 0
        self._port = 0
        self._tag = secrets.randbelow(200)

    def probe(self) -> None:
        c = Client(self.cfg.socket, self.cfg.timeout)
        try:
            a = c.post("Plugin.Activate")
            if a.status == 200 and isinstance(a.json, dict) and isinstance(a.json.get("Implements"), list):
                self.implements = [x for x in a.json["Implements"] if isinstance(x, str)]
            else:
                self.activate_error = f"Plugin.Activate: {a.describe()}"
            if "IpamDriver" in self.implements:
                s = c.post("IpamDriver.GetDefaultAddressSpaces")
                if s.error_text() is None and isinstance(s.json, dict) and \
                        isinstance(s.json.get("LocalDefaultAddressSpace"), str) and s.json["LocalDefaultAddressSpace"]:
                    self.space = s.json["LocalDefaultAddressSpace"]
        except CheckFailed as e:
            self.activate_error = str(e)
        finally:
            c.close()
        if self.cfg.netns:
            self.start = Snapshot.take(self.cfg.netns)

    @property
    def network(self) -> bool:
        return "NetworkDriver" in self.implements

    @property
    def ipam(self) -> bool:
        return "IpamDriver" in self.implements

    def subnet(self) -> tuple[str, str]:
        """A fresh (IPv4 /24, IPv6 /64) for one network of this run."""
        self._subnet += 1
        n = self._subnet
        return f"10.250.{n}.0/24", str(ipaddress.ip_network(f"fd00:250:{self._tag:x}{n:02x}::/64"))

    def host_port(self) -> int:
        self._port += 1
        return 18080 + self._port

    def skip_reason(self, chk: CnmCheck) -> str | None:
        if not self.implements and chk.id != "CNM-ACT-01":
            return f"no usable Plugin.Activate answer ({self.activate_error or 'Implements lists nothing'})"
        for need in chk.needs:
            if need == "network" and not self.network:
                return "the plugin does not implement NetworkDriver"
            if need == "ipam" and not self.ipam:
                return "the plugin does not implement IpamDriver"
            if need == "netns" and not self.cfg.netns:
                return "no --netns given: the driver's namespace cannot be read"
            if need == "ports" and self.cfg.driver_type != "bridge":
                return f"port publishing is a bridge driver feature (driver type {self.cfg.driver_type})"
        return None


@dataclass
class Net:
    nid: str
    pools: list[str] = field(default_factory=list)  # PoolIDs (own IPAM) in request order
    gateways: list[str] = field(default_factory=list)  # "ip/len"
    subnets: list[str] = field(default_factory=list)
    internal: bool = False


@dataclass
class Ep:
    net: Net
    eid: str
    addresses: list[str]  # "ip/len" (what dockerd put in Interface)
    pools: list[str]  # PoolID per address
    answer: dict | None = None
    join: dict | None = None


def new_id() -> str:
    return secrets.token_hex(32)


class Ctx:
    def __init__(self, session: Session, chk: CnmCheck) -> None:
        self.s = session
        self.chk = chk
        self.c = Client(session.cfg.socket, session.cfg.timeout)
        self.before = Snapshot.take(session.cfg.netns) if session.cfg.netns else None
        # what to tear down (best effort) whatever the check did
        self.networks: dict[str, Net] = {}
        self.endpoints: dict[str, Ep] = {}
        self.joined: set[str] = set()
        self.addresses: set[tuple[str, str]] = set()  # (PoolID, ip) held
        self.pools: list[str] = []
        self.created_something = False

    # -- calls ---------------------------------------------------------------------------
    def post(self, method: str, body: Any = None, **kw) -> Answer:
        return self.c.post(method, body, **kw)

    def ok(self, method: str, body: Any = None, what: str | None = None) -> Any:
        """The call must succeed (as dockerd sees it) with a JSON object answer."""
        a = self.post(method, body)
        err = a.error_text()
        if err is not None:
            raise CheckFailed(f"{what or method} refused: HTTP {a.status}: {' '.join(err.split())[:160]}")
        if not a.json_ok or not isinstance(a.json, dict):
            raise CheckFailed(f"{what or method}: the answer is not a JSON object ({a.describe()})")
        return a.json

    def refused(self, method: str, body: Any = None, what: str = "", *, raw: bytes | None = None,
                status_error: bool = False) -> Answer:
        """The call must be refused with an Err message (``status_error``: with a 4xx/5xx)."""
        a = self.post(method, body, raw=raw)
        label = f"{method} {what}".strip()
        if a.error_text() is None:
            if isinstance(a.json, dict) and isinstance(a.json.get("PoolID"), str):
                self.pools.append(a.json["PoolID"])  # accepted: released at teardown
            raise CheckFailed(f"{label}: accepted ({a.describe()}), expected an error")
        if status_error and not 400 <= a.status <= 599:
            raise CheckFailed(f"{label}: HTTP {a.status}, expected an HTTP error status (4xx/5xx)")
        obj = a.json if isinstance(a.json, dict) else {}
        key_ok = any(isinstance(obj.get(k), str) and obj[k] for k in (("Err", "Error") if a.ipam else ("Err",)))
        if a.status != 200 and not (isinstance(obj.get("Err"), str) and obj["Err"]):
            raise CheckFailed(f"{label}: HTTP {a.status} without an {{\"Err\": …}} body ({a.describe()}); "
                              "dockerd then shows the raw body")
        if not key_ok:
            raise CheckFailed(f"{label}: refused without an Err message ({a.describe()})")
        return a

    def alive(self, after: str) -> None:
        """The daemon still serves: Plugin.Activate on a new connection."""
        c = Client(self.s.cfg.socket, self.s.cfg.timeout)
        try:
            a = c.post("Plugin.Activate")
        except CheckFailed as e:
            raise CheckFailed(f"the driver stopped serving after {after}: {e}") from None
        finally:
            c.close()
        if a.status != 200:
            raise CheckFailed(f"the driver stopped serving after {after}: Plugin.Activate {a.describe()}")

    # -- dockerd's sequences -------------------------------------------------------------------
    @property
    def generic(self) -> dict:
        if self.s.cfg.driver_type in ("macvlan", "ipvlan") and self.s.cfg.parent:
            return {"parent": self.s.cfg.parent}
        return {}

    def request_pool(self, subnet: str, v6: bool = False, options: dict | None = None) -> dict:
        ans = self.ok("IpamDriver.RequestPool", {"AddressSpace": self.s.space, "Options": options or {},
                                                "Pool": subnet, "SubPool": "", "V6": v6})
        if subnet:
            self.s.pools_used.add((subnet, v6))
        pid = ans.get("PoolID")
        if not isinstance(pid, str) or not pid:
            raise CheckFailed(f"RequestPool {subnet or '(any)'}: no PoolID in {json.dumps(ans)[:120]}")
        self.pools.append(pid)
        return ans

    def release_pool(self, pid: str) -> None:
        self.ok("IpamDriver.ReleasePool", {"PoolID": pid})
        if pid in self.pools:
            self.pools.remove(pid)

    def request_address(self, pid: str, address: str = "", options: dict | None = None, what: str = "") -> str:
        ans = self.ok("IpamDriver.RequestAddress", {"Address": address, "Options": options, "PoolID": pid},
                      what or "RequestAddress")
        a = ans.get("Address")
        if not isinstance(a, str) or "/" not in a:
            raise CheckFailed(f"{what or 'RequestAddress'}: Address {a!r} is not in CIDR form A.B.C.D/MM")
        try:
            iface = ipaddress.ip_interface(a)
        except ValueError:
            raise CheckFailed(f"{what or 'RequestAddress'}: Address {a!r} is not in CIDR form") from None
        self.addresses.add((pid, str(iface.ip)))
        return a

    def release_address(self, pid: str, address: str) -> None:
        ip = address.split("/")[0]
        self.ok("IpamDriver.ReleaseAddress", {"Address": ip, "PoolID": pid})
        self.addresses.discard((pid, ip))

    def create_network(self, *, v6: bool = False, internal: bool = False, gw_host: int = 0,
                       generic: dict | None = None, ipam_options: dict | None = None) -> Net:
        """dockerd's ``network create``: RequestPool, gateway RequestAddress (IPv4, then IPv6),
        CreateNetwork (the driver's own IPAM when it has one; else the kit plays Docker's)."""
        v4net, v6net = self.s.subnet()
        net = Net(new_id(), internal=internal)
        data = {4: [], 6: []}
        for cidr, is6 in ((v4net, False), *(((v6net, True),) if v6 else ())):
            gw_want = str(ipaddress.ip_network(cidr).network_address + gw_host) if (gw_host and not is6) else ""
            if self.s.ipam:
                p = self.request_pool(cidr, is6, ipam_options)
                pid, pool = p["PoolID"], p.get("Pool")
                if not _same_net(pool, cidr):
                    raise CheckFailed(f"RequestPool {cidr}: answered Pool {pool!r}")
                gw = self.request_address(pid, gw_want.split("/")[0], GW_TYPE, "RequestAddress (gateway)")
                net.pools.append(pid)
            else:
                n = ipaddress.ip_network(cidr)
                gw = f"{gw_want or n.network_address + 1}/{n.prefixlen}"
            net.gateways.append(gw)
            net.subnets.append(cidr)
            data[6 if is6 else 4].append({"AddressSpace": self.s.space, "Gateway": gw, "Pool": cidr})
        opts: dict[str, Any] = {"com.docker.network.enable_ipv6": v6,
                                "com.docker.network.generic": {**self.generic, **(generic or {})}}
        if internal:
            opts["com.docker.network.internal"] = True
        self.networks[net.nid] = net
        self.created_something = True
        self.ok("NetworkDriver.CreateNetwork", {"IPv4Data": data[4], "IPv6Data": data[6], "NetworkID": net.nid,
                                                "Options": opts})
        return net

    def delete_network(self, net: Net) -> None:
        """dockerd's ``network rm``: ReleaseAddress (gateway) + ReleasePool per pool, then
        DeleteNetwork (the observed order)."""
        for pid, gw in zip(net.pools, net.gateways):
            self.release_address(pid, gw)
            self.release_pool(pid)
        self.ok("NetworkDriver.DeleteNetwork", {"NetworkID": net.nid})
        self.networks.pop(net.nid, None)

    def addresses_for(self, net: Net, address: str = "") -> tuple[list[str], list[str]]:
        addrs, pids = [], []
        for i, cidr in enumerate(net.subnets):
            if self.s.ipam:
                a = self.request_address(net.pools[i], address if i == 0 else "")
            else:
                n = ipaddress.ip_network(cidr)
                a = f"{address or (n.network_address + 2 + len(self.endpoints))}/{n.prefixlen}"
            addrs.append(a)
            pids.append(net.pools[i] if self.s.ipam else "")
        return addrs, pids

    def create_endpoint(self, net: Net, *, address: str = "", mac: str = "", options: dict | None = None,
                        ) -> Ep:
        addrs, pids = self.addresses_for(net, address)
        v4 = next((a for a in addrs if ":" not in a), "")
        v6 = next((a for a in addrs if ":" in a), "")
        ep = Ep(net, new_id(), addrs, pids)
        self.endpoints[ep.eid] = ep
        self.created_something = True
        opts = {EXPOSED: [], PORTMAP: []} if options is None else options
        ep.answer = self.ok("NetworkDriver.CreateEndpoint", {
            "EndpointID": ep.eid, "Interface": {"Address": v4, "AddressIPv6": v6, "MacAddress": mac},
            "NetworkID": net.nid, "Options": opts})
        return ep

    def join(self, ep: Ep, options: dict | None = None) -> dict:
        opts = {EXPOSED: [], PORTMAP: []} if options is None else options
        self.joined.add(ep.eid)
        ep.join = self.ok("NetworkDriver.Join", {"EndpointID": ep.eid, "NetworkID": ep.net.nid, "Options": opts,
                                                 "SandboxKey": f"/var/run/docker/netns/{secrets.token_hex(6)}"})
        return ep.join

    def ep_body(self, ep: Ep) -> dict:
        return {"EndpointID": ep.eid, "NetworkID": ep.net.nid}

    def leave(self, ep: Ep) -> None:
        self.ok("NetworkDriver.Leave", self.ep_body(ep))
        self.joined.discard(ep.eid)

    def delete_endpoint(self, ep: Ep, release: bool = True) -> None:
        self.ok("NetworkDriver.DeleteEndpoint", self.ep_body(ep))
        self.endpoints.pop(ep.eid, None)
        self.joined.discard(ep.eid)
        if release and self.s.ipam:
            for pid, a in zip(ep.pools, ep.addresses):
                self.release_address(pid, a)

    def container(self, net: Net, *, address: str = "", mac: str = "", ports: list | None = None) -> Ep:
        """``docker run``: RequestAddress, CreateEndpoint, Join, ProgramExternalConnectivity,
        EndpointOperInfo (as observed)."""
        opts = {EXPOSED: [{"Port": p["Port"], "Proto": p["Proto"]} for p in ports or []], PORTMAP: ports or []}
        if mac:
            opts["com.docker.network.endpoint.macaddress"] = _mac_b64(mac)
        ep = self.create_endpoint(net, address=address, mac=mac, options=opts)
        opts.pop("com.docker.network.endpoint.macaddress", None)
        self.join(ep, opts)
        self.ok("NetworkDriver.ProgramExternalConnectivity", {**self.ep_body(ep), "Options": opts})
        self.ok("NetworkDriver.EndpointOperInfo", self.ep_body(ep))
        return ep

    def remove_container(self, ep: Ep) -> None:
        """``docker rm``: RevokeExternalConnectivity, Leave, DeleteEndpoint, ReleaseAddress."""
        self.ok("NetworkDriver.RevokeExternalConnectivity", self.ep_body(ep))
        self.leave(ep)
        self.delete_endpoint(ep)

    # -- teardown and leaks ----------------------------------------------------------------------
    def teardown(self) -> None:
        """Best effort, errors ignored: what the check left (it may have failed half-way)."""
        def quiet(method: str, body: Any) -> None:
            try:
                self.c.post(method, body)
            except CheckFailed:
                pass

        for eid in list(self.joined):
            ep = self.endpoints.get(eid)
            if ep:
                quiet("NetworkDriver.RevokeExternalConnectivity", self.ep_body(ep))
                quiet("NetworkDriver.Leave", self.ep_body(ep))
        for ep in list(self.endpoints.values()):
            quiet("NetworkDriver.DeleteEndpoint", self.ep_body(ep))
        for pid, ip in list(self.addresses):
            quiet("IpamDriver.ReleaseAddress", {"Address": ip, "PoolID": pid})
        for pid in list(self.pools):
            quiet("IpamDriver.ReleasePool", {"PoolID": pid})
        for nid in list(self.networks):
            quiet("NetworkDriver.DeleteNetwork", {"NetworkID": nid})
        self.joined.clear()
        self.endpoints.clear()
        self.addresses.clear()
        self.pools.clear()
        self.networks.clear()

    def leaks(self) -> list[str]:
        if self.before is None:
            return []
        deadline = time.monotonic() + LINK_GRACE
        while True:
            p = self.before.diff(Snapshot.take(self.s.cfg.netns))
            if not p or time.monotonic() > deadline:
                return p
            time.sleep(0.1)

    def close(self) -> None:
        self.c.close()


def _mac_b64(mac: str) -> str:
    import base64

    return base64.b64encode(bytes(int(x, 16) for x in mac.split(":"))).decode()


# ------------------------------------------------------------------------------ shape helpers


def _is_ip(v: Any, version: int | None = None) -> bool:
    try:
        ip = ipaddress.ip_address(v)
    except (ValueError, TypeError):
        return False
    return isinstance(v, str) and (version is None or ip.version == version)


def _same_net(a: Any, b: str) -> bool:
    try:
        return isinstance(a, str) and ipaddress.ip_network(a) == ipaddress.ip_network(b)
    except ValueError:
        return False


def _is_mac(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    parts = v.replace("-", ":").split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)


def join_problems(ans: Any, driver_type: str) -> list[str]:
    p: list[str] = []
    if not isinstance(ans, dict):
        return ["the answer is not a JSON object"]
    itf = ans.get("InterfaceName")
    if itf is None:
        if driver_type != "null":
            p.append("no InterfaceName")
    elif not isinstance(itf, dict):
        p.append(f"InterfaceName is {type(itf).__name__}, not an object")
    else:
        for k in ("SrcName", "DstPrefix"):
            if not isinstance(itf.get(k), str) or not itf[k]:
                p.append(f"InterfaceName.{k} is {itf.get(k)!r}, not a non-empty string")
    for k, v in (("Gateway", 4), ("GatewayIPv6", 6)):
        g = ans.get(k)
        if g not in (None, "") and not _is_ip(g, v):
            p.append(f"{k} {g!r} is not an IPv{v} address (libnetwork: unable to parse)")
    routes = ans.get("StaticRoutes")
    if routes is not None:
        if not isinstance(routes, list):
            p.append("StaticRoutes is not a list")
        else:
            for i, r in enumerate(routes):
                if not isinstance(r, dict):
                    p.append(f"StaticRoutes[{i}] is not an object")
                    continue
                if r.get("Destination") not in (None, "") and not is_cidr(r.get("Destination")):
                    p.append(f"StaticRoutes[{i}].Destination {r.get('Destination')!r} is not a CIDR")
                rt, nh = r.get("RouteType"), r.get("NextHop")
                if rt == 0 and not _is_ip(nh):
                    p.append(f"StaticRoutes[{i}]: RouteType 0 needs a NextHop address, got {nh!r}")
                elif rt == 1 and nh not in (None, ""):
                    p.append(f"StaticRoutes[{i}]: RouteType 1 (connected) has a NextHop {nh!r}")
                elif rt not in (0, 1):
                    p.append(f"StaticRoutes[{i}].RouteType is {rt!r}, not 0 or 1")
    dgs = ans.get("DisableGatewayService")
    if dgs is not None and not isinstance(dgs, bool):
        p.append(f"DisableGatewayService is {dgs!r}, not a boolean")
    return p


# ------------------------------------------------------------------------------ checks: activation, transport


@check("CNM-ACT-01", "Plugin.Activate answers Implements with NetworkDriver and/or IpamDriver", REMOTE_MD,
       "MUST", "Handshake: a POST to /Plugin.Activate without payload is answered with a manifest "
       "{\"Implements\": [...]}; \"NetworkDriver\" registers a network driver, \"IpamDriver\" an IPAM driver "
       "(ipam.md: same protocol).")
def act_01(x: Ctx) -> None:
    a = x.post("Plugin.Activate")
    if a.status != 200:
        raise CheckFailed(f"Plugin.Activate: {a.describe()}")
    if not isinstance(a.json, dict) or not isinstance(a.json.get("Implements"), list):
        raise CheckFailed(f"Plugin.Activate: no Implements list ({a.describe()})")
    impl = a.json["Implements"]
    if not any(i in ("NetworkDriver", "IpamDriver") for i in impl):
        raise CheckFailed(f"Plugin.Activate: Implements {impl} has neither NetworkDriver nor IpamDriver")
    if not all(isinstance(i, str) for i in impl):
        raise CheckFailed(f"Plugin.Activate: Implements {impl} has non-string entries")


@check("CNM-ACT-02", "answers are JSON with a JSON content type", PLUGIN_API, "SHOULD",
       "The plugin API is JSON over HTTP, versioned by the application/vnd.docker.plugins.v1.x+json media "
       "type dockerd sends in Accept; plugin helper libraries answer with that type.")
def act_02(x: Ctx) -> None:
    methods = ["Plugin.Activate"]
    if x.s.network:
        methods.append("NetworkDriver.GetCapabilities")
    if x.s.ipam:
        methods.append("IpamDriver.GetDefaultAddressSpaces")
    for m in methods:
        a = x.post(m)
        ct = a.content_type.split(";")[0].strip().lower()
        if not (ct == "application/json" or (ct.startswith("application/vnd.docker.plugins.v1") and
                                             ct.endswith("+json"))):
            raise CheckFailed(f"{m}: Content-Type {a.content_type!r}, expected "
                              "application/vnd.docker.plugins.v1.x+json or application/json")
        if not a.json_ok or not isinstance(a.json, dict):
            raise CheckFailed(f"{m}: the answer is not a JSON object ({a.describe()})")


@check("CNM-HTTP-01", "keep-alive: several calls on one connection", OBSERVED, "obs",
       "dockerd's plugin client (Go net/http) keeps its connection to the plugin open and sends call after "
       "call on it; a driver that closes each connection costs a reconnect per call.")
def http_01(x: Ctx) -> None:
    methods = ["Plugin.Activate"] * 2
    if x.s.network:
        methods += ["NetworkDriver.GetCapabilities"] * 2
    if x.s.ipam:
        methods += ["IpamDriver.GetDefaultAddressSpaces"] * 2
    for n, m in enumerate(methods, 1):
        a = x.post(m)
        if a.status != 200:
            raise CheckFailed(f"call {n} ({m}) on the kept-alive connection: {a.describe()}")
        if a.will_close:
            raise CheckFailed(f"call {n} ({m}): the driver closes the connection after its answer "
                              "(Connection: close or HTTP/1.0)")
    if x.c.connects != 1:
        raise CheckFailed(f"{len(methods)} calls needed {x.c.connects} connections, expected 1")


@check("CNM-HTTP-02", "an unknown path is answered 404 with an Err", REMOTE_MD, "SHOULD",
       "Errors: a request for an unknown URI should get 404 Not Found, so that libnetwork can tell a method the "
       "driver does not implement yet (it tolerates 404 for ProgramExternalConnectivity/"
       "RevokeExternalConnectivity); pkg/plugins/client.go reads the message from Err.")
def http_02(x: Ctx) -> None:
    for m in ("NetworkDriver.NoSuchMethod", "Splice.ConformanceUnknown"):
        a = x.post(m, {})
        if a.status != 404:
            raise CheckFailed(f"POST /{m}: {a.describe()}, expected 404")
        if not (isinstance(a.json, dict) and isinstance(a.json.get("Err"), str) and a.json["Err"]):
            raise CheckFailed(f"POST /{m}: 404 without an {{\"Err\": …}} body ({a.describe()})")
    x.alive("unknown paths")


# ------------------------------------------------------------------------------ checks: capabilities


@check("CNM-CAP-01", "NetworkDriver.GetCapabilities: Scope and ConnectivityScope are local or global", DRIVER_GO,
       "MUST", "remote.md 'Set capability': Scope must be \"local\" or \"global\", other values fail the "
       "driver's registration; driver.go: ConnectivityScope empty (= Scope), \"local\" or \"global\".",
       needs=("network",))
def cap_01(x: Ctx) -> None:
    ans = x.ok("NetworkDriver.GetCapabilities")
    if ans.get("Scope") not in ("local", "global"):
        raise CheckFailed(f"Scope is {ans.get('Scope')!r}: dockerd refuses to register the driver")
    if ans.get("ConnectivityScope", "") not in ("", "local", "global"):
        raise CheckFailed(f"ConnectivityScope is {ans.get('ConnectivityScope')!r}: dockerd refuses to register "
                          "the driver")


@check("CNM-CAP-02", "Scope is local (global needs swarm)", OBSERVED + "; moby/swarmkit#1153", "obs",
       "Outside swarm mode a remote driver claiming Scope \"global\" fails network creation (no datastore for "
       "scope global, moby/swarmkit#1153); dockerd 20.10 was observed with Scope/ConnectivityScope local.",
       needs=("network",))
def cap_02(x: Ctx) -> None:
    ans = x.ok("NetworkDriver.GetCapabilities")
    if ans.get("Scope") != "local":
        raise CheckFailed(f"Scope is {ans.get('Scope')!r}: outside swarm only \"local\" networks can be created")


@check("CNM-CAP-03", "IpamDriver.GetCapabilities: RequiresMACAddress (and RequiresRequestReplay) are booleans",
       IPAM_MD, "SHOULD", "GetCapabilities is optional (unsupported = empty capabilities); its answer has the "
       "form {\"RequiresMACAddress\": bool}; RequiresRequestReplay (bool) asks dockerd to replay RequestPool "
       "at start.", needs=("ipam",))
def cap_03(x: Ctx) -> None:
    a = x.post("IpamDriver.GetCapabilities")
    if a.status == 404:
        return  # optional
    if a.error_text() is not None or not isinstance(a.json, dict):
        raise CheckFailed(f"IpamDriver.GetCapabilities: {a.describe()}")
    for k in ("RequiresMACAddress", "RequiresRequestReplay"):
        if k in a.json and not isinstance(a.json[k], bool):
            raise CheckFailed(f"{k} is {a.json[k]!r}, not a boolean")


@check("CNM-CAP-04", "IpamDriver.GetDefaultAddressSpaces names both default address spaces", IPAM_MD, "MUST",
       "GetDefaultAddressSpaces answers {\"LocalDefaultAddressSpace\": string, \"GlobalDefaultAddressSpace\": "
       "string}; dockerd calls it before every RequestPool.", needs=("ipam",))
def cap_04(x: Ctx) -> None:
    ans = x.ok("IpamDriver.GetDefaultAddressSpaces")
    for k in ("LocalDefaultAddressSpace", "GlobalDefaultAddressSpace"):
        if not isinstance(ans.get(k), str) or not ans[k]:
            raise CheckFailed(f"{k} is {ans.get(k)!r}, not a non-empty string")


# ------------------------------------------------------------------------------ checks: life cycle


@check("CNM-LC-01", "docker network create / run --rm / network rm: dockerd's calls in order succeed", OBSERVED,
       "obs", "RequestPool, RequestAddress (gateway), CreateNetwork; RequestAddress, CreateEndpoint, Join, "
       "ProgramExternalConnectivity, EndpointOperInfo, RevokeExternalConnectivity, Leave, DeleteEndpoint, "
       "ReleaseAddress; ReleaseAddress (gateway), ReleasePool, DeleteNetwork — the bodies dockerd 20.10 sent.",
       needs=("network",))
def lc_01(x: Ctx) -> None:
    net = x.create_network()
    ep = x.container(net)
    x.remove_container(ep)
    x.delete_network(net)


@check("CNM-LC-02", "docker run --ip --mac-address -p, then rm -f: succeeds", OBSERVED, "obs",
       "A preferred address (RequestAddress Address=…), Interface.MacAddress and the endpoint's macaddress "
       "option, a port binding 127.0.0.1:HOSTPORT->80/tcp in com.docker.network.portmap/exposedports "
       "(CreateEndpoint, Join, ProgramExternalConnectivity), then Revoke, Leave, DeleteEndpoint, ReleaseAddress.",
       needs=("network",))
def lc_02(x: Ctx) -> None:
    net = x.create_network()
    host = ipaddress.ip_network(net.subnets[0]).network_address + 50
    ports = []
    if x.s.cfg.driver_type == "bridge":
        ports = [{"HostIP": "127.0.0.1", "HostPort": (hp := x.s.host_port()), "HostPortEnd": hp, "IP": "",
                  "Port": 80, "Proto": 6}]
    mac = "02:42:" + ":".join(f"{b:02x}" for b in host.packed) if x.s.cfg.driver_type in ("bridge", "macvlan") \
        else ""
    ep = x.container(net, address=str(host), mac=mac, ports=ports)
    if ep.addresses[0].split("/")[0] != str(host):
        raise CheckFailed(f"RequestAddress of {host} answered {ep.addresses[0]}")
    x.remove_container(ep)
    x.delete_network(net)


@check("CNM-LC-03", "dual-stack internal network, network connect/disconnect: succeeds", OBSERVED, "obs",
       "network create with --ipv6 --internal, a generic -o option, IPAM options and a preferred gateway "
       "(.254); network connect (CreateEndpoint with empty Options, Join carrying the container's port map); "
       "network disconnect (Leave, DeleteEndpoint, ReleaseAddress v4 and v6); network rm.",
       needs=("network",))
def lc_03(x: Ctx) -> None:
    net = x.create_network(v6=True, internal=True, generic={"clopt": "1"}, ipam_options={"clipamopt": "2"},
                           gw_host=254)
    ep = x.create_endpoint(net, options={})
    opts = {EXPOSED: [{"Port": 80, "Proto": 6}],
            PORTMAP: [{"HostIP": "127.0.0.1", "HostPort": (hp := x.s.host_port()), "HostPortEnd": hp, "IP": "",
                       "Port": 80, "Proto": 6}]}
    x.join(ep, opts)
    x.ok("NetworkDriver.EndpointOperInfo", x.ep_body(ep))
    x.leave(ep)
    x.delete_endpoint(ep)
    x.delete_network(net)


@check("CNM-LC-04", "an endpoint deleted without Join (dockerd's roll-back of a failed Join) leaves nothing",
       OBSERVED, "obs", "When Join fails, dockerd calls DeleteEndpoint (no Leave) and ReleaseAddress, then "
       "network rm as usual.", needs=("network",))
def lc_04(x: Ctx) -> None:
    net = x.create_network()
    ep = x.create_endpoint(net)
    x.delete_endpoint(ep)
    x.delete_network(net)


@check("CNM-LC-05", "the preferred gateway of a network is honoured", IPAM_MD, "MUST",
       "RequestAddress with a preferred Address returns that address; dockerd asks for the gateway it was "
       "given (--gateway) with RequestAddressType com.docker.network.gateway.", needs=("ipam",))
def lc_05(x: Ctx) -> None:
    sub, _ = x.s.subnet()
    gw = str(ipaddress.ip_network(sub).network_address + 254)
    p = x.request_pool(sub)
    got = x.request_address(p["PoolID"], gw, GW_TYPE, "RequestAddress (gateway)")
    if got.split("/")[0] != gw:
        raise CheckFailed(f"gateway {gw} requested, {got} answered")
    if got != f"{gw}/24":
        raise CheckFailed(f"gateway answer {got!r} does not carry the pool's prefix length /24")
    x.release_address(p["PoolID"], got)
    x.release_pool(p["PoolID"])


# ------------------------------------------------------------------------------ checks: answers


@check("CNM-EP-01", "CreateEndpoint answers only what was not supplied", DRIVER_GO, "MUST",
       "remote.md: a driver given a non-empty Interface must not answer a non-empty one, else libnetwork "
       "treats it as an error and rolls back; driver.go: a MAC or address the driver sets where dockerd "
       "supplied one fails with 'driver modified interface …' and DeleteEndpoint; values must parse "
       "(CIDR, MAC).", needs=("network",))
def ep_01(x: Ctx) -> None:
    net = x.create_network(v6=True)
    cases = [("Address and AddressIPv6, no MAC", "")]
    if x.s.cfg.driver_type in ("bridge", "macvlan"):
        cases.append(("Address, AddressIPv6 and MacAddress", "02:42:ac:11:00:63"))
    for what, mac in cases:
        ep = x.create_endpoint(net, mac=mac)
        itf = ep.answer.get("Interface")
        if itf is None:
            pass
        elif not isinstance(itf, dict):
            raise CheckFailed(f"CreateEndpoint ({what}): Interface is {type(itf).__name__}, not an object")
        else:
            supplied = {"Address": ep.addresses[0], "AddressIPv6": ep.addresses[1], "MacAddress": mac}
            for k, v in supplied.items():
                got = itf.get(k)
                if got in (None, ""):
                    continue
                if v:
                    raise CheckFailed(f"CreateEndpoint ({what}): answered Interface.{k} {got!r} although dockerd "
                                      f"supplied {v!r} (libnetwork: driver modified interface …, rolled back)")
                ok = _is_mac(got) if k == "MacAddress" else is_cidr(got)
                if not ok:
                    raise CheckFailed(f"CreateEndpoint ({what}): Interface.{k} {got!r} does not parse")
        x.delete_endpoint(ep)
    x.delete_network(net)


@check("CNM-EP-02", "EndpointOperInfo answers {\"Value\": {…}}", REMOTE_MD, "MUST",
       "Endpoint operational info: the response must have the form {\"Value\": {…}}, an arbitrary (possibly "
       "empty) map; dockerd calls it for docker inspect/network inspect.", needs=("network",))
def ep_02(x: Ctx) -> None:
    net = x.create_network()
    ep = x.container(net)
    ans = x.ok("NetworkDriver.EndpointOperInfo", x.ep_body(ep))
    if not isinstance(ans.get("Value"), dict):
        raise CheckFailed(f"EndpointOperInfo: Value is {type(ans.get('Value')).__name__}, not an object")
    x.remove_container(ep)
    x.delete_network(net)


@check("CNM-JOIN-01", "Join's answer is well formed", REMOTE_MD, "MUST",
       "Join: the response must carry InterfaceName {SrcName, DstPrefix}; Gateway/GatewayIPv6, if given, are "
       "IP addresses; StaticRoutes have RouteType 0 with a NextHop or 1 (connected) without; libnetwork "
       "fails the Join (and calls Leave) on what it cannot parse.", needs=("network",))
def join_01(x: Ctx) -> None:
    for internal in (False, True):
        net = x.create_network(v6=True, internal=internal)
        ep = x.container(net)
        p = join_problems(ep.join, x.s.cfg.driver_type)
        if p:
            raise CheckFailed(f"Join ({'internal' if internal else 'external'} network): " + "; ".join(p))
        for k, fam in (("Gateway", 4), ("GatewayIPv6", 6)):
            g = ep.join.get(k)
            if g:
                subnet = next((s for s in net.subnets if ipaddress.ip_network(s).version == fam), None)
                if subnet and ipaddress.ip_address(g) not in ipaddress.ip_network(subnet):
                    raise CheckFailed(f"Join: {k} {g} is outside the endpoint's subnet {subnet}")
        x.remove_container(ep)
        x.delete_network(net)


@check("CNM-JOIN-02", "Join's SrcName is a link in the driver's namespace, one per endpoint", REMOTE_MD, "MUST",
       "Join: SrcName names the OS level interface the driver created, which libnetwork moves into the sandbox "
       "and renames to DstPrefix+index; two endpoints cannot share it.", needs=("network", "netns"))
def join_02(x: Ctx) -> None:
    if x.s.cfg.driver_type == "null":
        raise Skip("driver type null: no interface to move")
    net = x.create_network()
    eps = [x.container(net), x.container(net)]
    names = []
    links = netns_links(x.s.cfg.netns)
    for n, ep in enumerate(eps, 1):
        src = (ep.join.get("InterfaceName") or {}).get("SrcName") if isinstance(ep.join, dict) else None
        if not isinstance(src, str) or not src:
            raise CheckFailed(f"Join of endpoint {n}: no InterfaceName.SrcName")
        if src not in links:
            raise CheckFailed(f"Join of endpoint {n}: SrcName {src!r} is not a link in namespace "
                              f"{x.s.cfg.netns} ({', '.join(sorted(links))})")
        names.append(src)
    if names[0] == names[1]:
        raise CheckFailed(f"two endpoints were both given SrcName {names[0]!r}")
    for ep in eps:
        x.remove_container(ep)
    x.delete_network(net)


# ------------------------------------------------------------------------------ checks: bad bodies


def _bad_targets(x: Ctx) -> list[str]:
    out = []
    if x.s.network:
        out += ["NetworkDriver.CreateNetwork", "NetworkDriver.DeleteNetwork", "NetworkDriver.CreateEndpoint",
                "NetworkDriver.Join", "NetworkDriver.Leave", "NetworkDriver.ProgramExternalConnectivity",
                "NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.EndpointOperInfo",
                "NetworkDriver.DeleteEndpoint"]
    if x.s.ipam:
        out += ["IpamDriver.RequestPool", "IpamDriver.ReleasePool", "IpamDriver.RequestAddress",
                "IpamDriver.ReleaseAddress"]
    return out


@check("CNM-BAD-01", "a body that is not JSON is refused with an HTTP error and an Err; the driver goes on",
       REMOTE_MD, "MUST", "Errors: a request the driver cannot decode must get an HTTP error status (4xx or "
       "5xx); pkg/plugins/client.go shows the user the Err of such an answer.")
def bad_01(x: Ctx) -> None:
    targets = _bad_targets(x)
    for m in targets:
        for raw in (b'{"NetworkID": ', b"not json\n"):
            x.refused(m, raw=raw, what=f"with body {raw.decode().strip()!r}", status_error=True)
    x.alive(f"{len(targets) * 2} undecodable bodies")


@check("CNM-BAD-02", "a body without a required field is refused with an Err", REMOTE_MD, "MUST",
       "Errors: a request the driver decodes but cannot complete must be answered {\"Err\": string}; ipam.md: "
       "AddressSpace is RequestPool's mandatory field.")
def bad_02(x: Ctx) -> None:
    if x.s.network:
        net = x.create_network()
        sub, _ = x.s.subnet()
        nid_probe = new_id()
        x.networks[nid_probe] = Net(nid_probe)  # torn down should the driver accept it
        x.refused("NetworkDriver.CreateNetwork", {"IPv4Data": [{"AddressSpace": x.s.space, "Pool": sub,
                                                                "Gateway": sub.replace(".0/24", ".1/24")}],
                                                  "IPv6Data": [], "Options": {}}, "without NetworkID")
        x.refused("NetworkDriver.DeleteNetwork", {}, "without NetworkID")
        eid = new_id()
        x.endpoints[eid] = Ep(net, eid, [], [])
        x.refused("NetworkDriver.CreateEndpoint", {"NetworkID": net.nid, "Options": {},
                                                   "Interface": {"Address": "", "AddressIPv6": "",
                                                                 "MacAddress": ""}},
                  "without EndpointID")
        x.refused("NetworkDriver.CreateEndpoint", {"EndpointID": eid, "Options": {}, "Interface": {}},
                  "without NetworkID")
        x.refused("NetworkDriver.Join", {"EndpointID": eid, "SandboxKey": "/var/run/docker/netns/0", "Options": {}},
                  "without NetworkID")
        x.refused("NetworkDriver.EndpointOperInfo", {"NetworkID": net.nid}, "without EndpointID")
        x.refused("NetworkDriver.DeleteEndpoint", {"NetworkID": net.nid}, "without EndpointID")
    if x.s.ipam:
        probe, _ = x.s.subnet()
        x.refused("IpamDriver.RequestPool", {"Pool": probe, "SubPool": "", "Options": {}, "V6": False},
                  "without AddressSpace")
        sub, _ = x.s.subnet()
        p = x.request_pool(sub)
        x.refused("IpamDriver.RequestAddress", {"Address": "", "Options": None}, "without PoolID")
        x.refused("IpamDriver.ReleaseAddress", {"PoolID": p["PoolID"]}, "without Address")
        x.refused("IpamDriver.ReleasePool", {}, "without PoolID")
        x.release_pool(p["PoolID"])
    if x.s.network:
        x.delete_network(net)
    x.alive("bodies without required fields")


@check("CNM-BAD-03", "a field of the wrong type is refused with an Err", REMOTE_MD, "MUST",
       "Errors: a request the driver cannot complete must be answered {\"Err\": string} (dockerd shows it to "
       "the user); nothing may be made of it.")
def bad_03(x: Ctx) -> None:
    if x.s.network:
        net = x.create_network()
        sub, _ = x.s.subnet()
        nid = new_id()
        x.networks[nid] = Net(nid)
        x.refused("NetworkDriver.CreateNetwork", {"NetworkID": 5, "IPv4Data": [], "IPv6Data": [], "Options": {}},
                  "with NetworkID 5")
        x.refused("NetworkDriver.CreateNetwork", {"NetworkID": nid, "IPv4Data": sub, "IPv6Data": [],
                                                  "Options": {}}, "with IPv4Data a string")
        x.refused("NetworkDriver.CreateNetwork", {"NetworkID": nid, "IPv4Data": [{"AddressSpace": x.s.space,
                                                                                 "Pool": 10, "Gateway": []}],
                                                  "IPv6Data": [], "Options": {}}, "with Pool 10")
        for what, itf in (("Interface a string", "10.250.0.2/24"), ("Interface.Address 10", {"Address": 10}),
                          ("Interface.Address not an address", {"Address": "10.250.0.300/24"})):
            eid = new_id()
            x.endpoints[eid] = Ep(net, eid, [], [])
            x.refused("NetworkDriver.CreateEndpoint", {"NetworkID": net.nid, "EndpointID": eid, "Options": {},
                                                       "Interface": itf}, f"with {what}")
        x.refused("NetworkDriver.Join", {"NetworkID": net.nid, "EndpointID": 7, "SandboxKey": "/var/run/x",
                                         "Options": {}}, "with EndpointID 7")
        x.refused("NetworkDriver.DeleteNetwork", {"NetworkID": ["x"]}, "with NetworkID a list")
    if x.s.ipam:
        sub, _ = x.s.subnet()
        x.refused("IpamDriver.RequestPool", {"AddressSpace": x.s.space, "Pool": 17, "SubPool": "", "Options": {},
                                             "V6": False}, "with Pool 17")
        x.refused("IpamDriver.RequestPool", {"AddressSpace": x.s.space, "Pool": "10.250.0.0/33", "SubPool": "",
                                             "Options": {}, "V6": False}, "with Pool 10.250.0.0/33")
        p = x.request_pool(sub)
        x.refused("IpamDriver.RequestAddress", {"PoolID": ["x"], "Address": "", "Options": None},
                  "with PoolID a list")
        x.refused("IpamDriver.RequestAddress", {"PoolID": p["PoolID"], "Address": "10.1.2.3.4", "Options": None},
                  "with Address 10.1.2.3.4")
        x.refused("IpamDriver.ReleaseAddress", {"PoolID": p["PoolID"], "Address": 5}, "with Address 5")
        x.release_pool(p["PoolID"])
    if x.s.network:
        x.delete_network(net)
    x.alive("bodies with fields of the wrong type")


@check("CNM-BAD-04", "RequestPool with a SubPool but no Pool is refused", IPAM_MD, "SHOULD",
       "RequestPool: a request with an empty Pool and a non-empty SubPool should be rejected as invalid.",
       needs=("ipam",))
def bad_04(x: Ctx) -> None:
    sub, _ = x.s.subnet()
    a = x.post("IpamDriver.RequestPool", {"AddressSpace": x.s.space, "Pool": "", "SubPool": sub, "Options": {},
                                          "V6": False})
    if a.error_text() is None:
        if isinstance(a.json, dict) and isinstance(a.json.get("PoolID"), str):
            x.pools.append(a.json["PoolID"])
        raise CheckFailed(f"RequestPool with SubPool {sub} and no Pool: accepted ({a.describe()})")


# ------------------------------------------------------------------------------ checks: unknown ids


@check("CNM-UNK-01", "calls on an unknown network are refused with an Err", REMOTE_MD, "MUST",
       "Errors: a request the driver cannot complete (here: a NetworkID it never created) must be answered "
       "{\"Err\": string}.", needs=("network",))
def unk_01(x: Ctx) -> None:
    nid, eid = new_id(), new_id()
    x.endpoints[eid] = Ep(Net(nid), eid, [], [])
    body = {"NetworkID": nid, "EndpointID": eid}
    x.refused("NetworkDriver.CreateEndpoint", {**body, "Options": {}, "Interface": {"Address": "10.250.0.2/24",
                                                                                     "AddressIPv6": "",
                                                                                     "MacAddress": ""}},
              "on an unknown network")
    x.refused("NetworkDriver.Join", {**body, "SandboxKey": "/var/run/docker/netns/0", "Options": {}},
              "on an unknown network")
    x.refused("NetworkDriver.EndpointOperInfo", body, "on an unknown network")
    x.refused("NetworkDriver.ProgramExternalConnectivity", {**body, "Options": {}}, "on an unknown network")


@check("CNM-UNK-02", "calls on an unknown endpoint of a known network are refused with an Err", REMOTE_MD, "MUST",
       "Errors: a request the driver cannot complete (an EndpointID it never created) must be answered "
       "{\"Err\": string}.", needs=("network",))
def unk_02(x: Ctx) -> None:
    net = x.create_network()
    body = {"NetworkID": net.nid, "EndpointID": new_id()}
    x.refused("NetworkDriver.Join", {**body, "SandboxKey": "/var/run/docker/netns/0", "Options": {}},
              "of an unknown endpoint")
    x.refused("NetworkDriver.EndpointOperInfo", body, "of an unknown endpoint")
    x.refused("NetworkDriver.ProgramExternalConnectivity", {**body, "Options": {}}, "of an unknown endpoint")
    x.delete_network(net)


@check("CNM-UNK-03", "RequestAddress on an unknown PoolID is refused with an Err", IPAM_MD, "MUST",
       "RequestAddress reserves an address of the pool identified by PoolID; an id the driver never gave "
       "cannot be served (an error, which dockerd shows).", needs=("ipam",))
def unk_03(x: Ctx) -> None:
    x.refused("IpamDriver.RequestAddress", {"PoolID": f"no-such-pool-{secrets.token_hex(4)}", "Address": "",
                                            "Options": None}, "on an unknown pool")


# ------------------------------------------------------------------------------ checks: idempotent deletes

IDEM_QUOTE = ("dockerd repeats clean-up calls (a retried docker rm / network rm, the clean-up after a failed "
              "call or after a dockerd restart); an error on an already-deleted object makes that clean-up fail.")


@check("CNM-IDEM-01", "DeleteEndpoint twice: the second succeeds", CLEANUP, "obs", IDEM_QUOTE, needs=("network",))
def idem_01(x: Ctx) -> None:
    net = x.create_network()
    ep = x.container(net)
    x.remove_container(ep)
    x.ok("NetworkDriver.DeleteEndpoint", x.ep_body(ep), "second DeleteEndpoint")
    x.delete_network(net)


@check("CNM-IDEM-02", "Leave and RevokeExternalConnectivity twice: the second succeeds", CLEANUP, "obs",
       IDEM_QUOTE, needs=("network",))
def idem_02(x: Ctx) -> None:
    net = x.create_network()
    ep = x.container(net)
    x.ok("NetworkDriver.RevokeExternalConnectivity", x.ep_body(ep))
    x.ok("NetworkDriver.RevokeExternalConnectivity", x.ep_body(ep), "second RevokeExternalConnectivity")
    x.leave(ep)
    x.ok("NetworkDriver.Leave", x.ep_body(ep), "second Leave")
    x.delete_endpoint(ep)
    x.delete_network(net)


@check("CNM-IDEM-03", "DeleteNetwork twice: the second succeeds", CLEANUP, "obs", IDEM_QUOTE, needs=("network",))
def idem_03(x: Ctx) -> None:
    net = x.create_network()
    x.delete_network(net)
    x.ok("NetworkDriver.DeleteNetwork", {"NetworkID": net.nid}, "second DeleteNetwork")


@check("CNM-IDEM-04", "ReleaseAddress twice: the second succeeds", CLEANUP, "obs", IDEM_QUOTE, needs=("ipam",))
def idem_04(x: Ctx) -> None:
    sub, _ = x.s.subnet()
    p = x.request_pool(sub)
    a = x.request_address(p["PoolID"])
    x.release_address(p["PoolID"], a)
    x.ok("IpamDriver.ReleaseAddress", {"Address": a.split("/")[0], "PoolID": p["PoolID"]}, "second ReleaseAddress")
    x.release_pool(p["PoolID"])


# ------------------------------------------------------------------------------ checks: IPAM semantics


@check("CNM-IPAM-01", "RequestPool of an explicit pool answers PoolID and that Pool", IPAM_MD, "MUST",
       "RequestPool answers {\"PoolID\": string, \"Pool\": CIDR, \"Data\": map}; the pool is the one asked for.",
       needs=("ipam",))
def ipam_01(x: Ctx) -> None:
    v4, v6 = x.s.subnet()
    for cidr, is6 in ((v4, False), (v6, True)):
        p = x.request_pool(cidr, is6)
        if not _same_net(p.get("Pool"), cidr):
            raise CheckFailed(f"RequestPool {cidr}: answered Pool {p.get('Pool')!r}")
        if p.get("Data") is not None and not isinstance(p["Data"], dict):
            raise CheckFailed(f"RequestPool {cidr}: Data is {type(p['Data']).__name__}, not a map")
        x.release_pool(p["PoolID"])


@check("CNM-IPAM-02", "identical RequestPool calls answer the same PoolID (the driver counts references)", IPAM_MD,
       "MUST", "RequestPool: multiple identical calls must return the same result; keeping a reference count "
       "for the pool is the IPAM driver's responsibility. Same pools must have the same pool id.",
       needs=("ipam",))
def ipam_02(x: Ctx) -> None:
    sub, _ = x.s.subnet()
    p1 = x.request_pool(sub)
    a = x.post("IpamDriver.RequestPool", {"AddressSpace": x.s.space, "Options": {}, "Pool": sub, "SubPool": "",
                                          "V6": False})
    err = a.error_text()
    if err is not None:
        raise CheckFailed(f"second identical RequestPool {sub}: refused: {' '.join(err.split())[:160]}")
    pid2 = a.json.get("PoolID") if isinstance(a.json, dict) else None
    if isinstance(pid2, str) and pid2:
        x.pools.append(pid2)
    if pid2 != p1["PoolID"] or a.json.get("Pool") != p1.get("Pool"):
        raise CheckFailed(f"second identical RequestPool {sub}: PoolID {pid2!r}/Pool {a.json.get('Pool')!r}, "
                          f"first was {p1['PoolID']!r}/{p1.get('Pool')!r}")
    x.release_pool(p1["PoolID"])
    got = x.request_address(p1["PoolID"])  # one reference left: the pool still serves
    x.release_address(p1["PoolID"], got)
    x.release_pool(pid2)


@check("CNM-IPAM-03", "RequestPool without a Pool answers a pool of the family asked for", IPAM_MD, "MUST",
       "RequestPool: with no Pool the driver may choose one; the V6 flag says whether the caller wants an "
       "IPv6 pool.", needs=("ipam",))
def ipam_03(x: Ctx) -> None:
    for v6 in (False, True):
        p = x.request_pool("", v6)
        try:
            n = ipaddress.ip_network(p.get("Pool"))
        except (ValueError, TypeError):
            raise CheckFailed(f"RequestPool (V6={v6}, no Pool): Pool {p.get('Pool')!r} is not a CIDR") from None
        if n.version != (6 if v6 else 4):
            raise CheckFailed(f"RequestPool (V6={v6}, no Pool): answered the IPv{n.version} pool {n}")
        x.release_pool(p["PoolID"])


@check("CNM-IPAM-04", "a repeated RequestPool without a Pool answers another pool", REMOTE_IPAM_GO, "obs",
       "For a local network without an explicit subnet dockerd asks again while the answered pool overlaps one "
       "in use, holding the overlapping ones until it has a free pool: the driver must answer a different pool "
       "each time.", needs=("ipam",))
def ipam_04(x: Ctx) -> None:
    p1 = x.request_pool("")
    p2 = x.request_pool("")
    n1, n2 = ipaddress.ip_network(p1["Pool"]), ipaddress.ip_network(p2["Pool"])
    if p1["PoolID"] == p2["PoolID"] or n1.overlaps(n2):
        raise CheckFailed(f"two RequestPool calls without Pool (the first held) answered {n1} and {n2}")
    x.release_pool(p2["PoolID"])
    x.release_pool(p1["PoolID"])


@check("CNM-IPAM-05", "RequestAddress answers A.B.C.D/MM: the preferred one, else a free one", IPAM_MD, "MUST",
       "RequestAddress: Address is the preferred address (empty: the driver chooses any available one); the "
       "answer is the allocated address in CIDR form A.B.C.D/MM.", needs=("ipam",))
def ipam_05(x: Ctx) -> None:
    sub, _ = x.s.subnet()
    net = ipaddress.ip_network(sub)
    p = x.request_pool(sub)
    pid = p["PoolID"]
    held = []
    gw = x.request_address(pid, "", GW_TYPE, "RequestAddress (gateway)")
    held.append(gw)
    want = str(net.network_address + 77)
    got = x.request_address(pid, want)
    if got != f"{want}/{net.prefixlen}":
        raise CheckFailed(f"RequestAddress of {want}: answered {got!r}, expected {want}/{net.prefixlen}")
    held.append(got)
    for _ in range(2):
        a = x.request_address(pid)
        iface = ipaddress.ip_interface(a)
        if iface.ip not in net or iface.network.prefixlen != net.prefixlen:
            raise CheckFailed(f"RequestAddress (any) in {net}: answered {a}")
        if a in held:
            raise CheckFailed(f"RequestAddress (any) answered {a}, which is already held")
        held.append(a)
    for a in held:
        x.release_address(pid, a)
    x.release_pool(pid)


@check("CNM-IPAM-06", "RequestAddress of an address already held is refused", IPAM_MD, "SHOULD",
       "RequestAddress reserves an address; an address reserved already cannot be reserved again (Docker's own "
       "IPAM answers 'address already in use').", needs=("ipam",))
def ipam_06(x: Ctx) -> None:
    sub, _ = x.s.subnet()
    p = x.request_pool(sub)
    a = x.request_address(p["PoolID"], str(ipaddress.ip_network(sub).network_address + 9))
    x.refused("IpamDriver.RequestAddress", {"Address": a.split("/")[0], "Options": None, "PoolID": p["PoolID"]},
              f"of {a}, already held")
    x.release_address(p["PoolID"], a)
    x.release_pool(p["PoolID"])


@check("CNM-IPAM-07", "a released address can be requested again", IPAM_MD, "MUST",
       "ReleaseAddress releases the address: a later RequestAddress of it succeeds.", needs=("ipam",))
def ipam_07(x: Ctx) -> None:
    sub, _ = x.s.subnet()
    p = x.request_pool(sub)
    want = str(ipaddress.ip_network(sub).network_address + 11)
    a = x.request_address(p["PoolID"], want)
    x.release_address(p["PoolID"], a)
    x.request_address(p["PoolID"], want, what=f"RequestAddress of the released {want}")
    x.release_address(p["PoolID"], want)
    x.release_pool(p["PoolID"])


# ------------------------------------------------------------------------------ checks: leaks (run last)


@check("CNM-LEAK-01", "after the run the driver's namespace has the links and addresses it had at the start",
       REMOTE_MD, "MUST", "DeleteEndpoint/DeleteNetwork undo CreateEndpoint/CreateNetwork: once dockerd has "
       "removed every container and network, nothing the driver made for them may remain.",
       needs=("netns",))
def leak_01(x: Ctx) -> None:
    p = x.s.start.diff(Snapshot.take(x.s.cfg.netns)) if x.s.start else []
    if p:
        raise CheckFailed("since the start of the run: " + "; ".join(p))


@check("CNM-LEAK-02", "after the run every pool the run requested is released", IPAM_MD, "MUST",
       "ReleasePool releases the pool: each explicit pool the run requested and released can be requested "
       "again (and is released again).", needs=("ipam",))
def leak_02(x: Ctx) -> None:
    for cidr, v6 in sorted(x.s.pools_used):
        a = x.post("IpamDriver.RequestPool", {"AddressSpace": x.s.space, "Options": {}, "Pool": cidr,
                                              "SubPool": "", "V6": v6})
        err = a.error_text()
        if err is not None:
            raise CheckFailed(f"pool {cidr} is still held: RequestPool refused: {' '.join(err.split())[:140]}")
        pid = a.json.get("PoolID") if isinstance(a.json, dict) else None
        if pid:
            x.pools.append(pid)
            x.release_pool(pid)


# ------------------------------------------------------------------------------ runner


def select(patterns: list[str] | None) -> list[CnmCheck]:
    if not patterns:
        return list(REGISTRY)
    return [c for c in REGISTRY if any(fnmatch.fnmatchcase(c.id, p.upper()) or
                                       fnmatch.fnmatchcase(c.id, "CNM-" + p.upper()) for p in patterns)]


def run_check(session: Session, chk: CnmCheck) -> Outcome:
    t0 = time.perf_counter()
    reason = session.skip_reason(chk)
    if reason:
        return Outcome(chk.id, chk.title, chk.spec, "skip", reason, level=chk.level)
    ctx = None
    try:
        ctx = Ctx(session, chk)
        try:
            chk.fn(ctx)
        finally:
            ctx.teardown()
        leaks = ctx.leaks() if chk.id != "CNM-LEAK-01" else []
        if leaks:
            raise CheckFailed("leak after teardown in the driver's namespace: " + "; ".join(leaks))
        out = Outcome(chk.id, chk.title, chk.spec, "pass")
    except Exception as e:  # noqa: BLE001 - a kit error is reported, never hidden
        out = outcome_of(chk, e)
    finally:
        if ctx is not None:
            ctx.close()
    out.seconds = time.perf_counter() - t0
    out.level = chk.level
    return out


def run(cfg: CnmConfig, patterns: list[str] | None = None,
        progress: Callable[[Outcome], None] | None = None) -> tuple[Session, list[Outcome]]:
    if cfg.driver_type not in DRIVER_TYPES:
        raise ValueError(f"unknown driver type {cfg.driver_type!r} (known: {', '.join(DRIVER_TYPES)})")
    if not os.path.exists(cfg.socket):
        raise SystemExit(f"splice-conformance: no socket at {cfg.socket}")
    if cfg.netns and "/" not in cfg.netns and not os.path.exists(f"/run/netns/{cfg.netns}"):
        raise SystemExit(f"splice-conformance: no network namespace {cfg.netns!r} (/run/netns/{cfg.netns})")
    session = Session(cfg)
    session.probe()
    outcomes = []
    for chk in select(patterns):
        o = run_check(session, chk)
        outcomes.append(o)
        if progress:
            progress(o)
    return session, outcomes


def json_report(session: Session, outcomes: list[Outcome], seconds: float) -> dict:
    s = summary(outcomes)
    return {"cnmSocket": session.cfg.socket, "plugin": os.path.basename(session.cfg.socket).removesuffix(".sock"),
            "driverType": session.cfg.driver_type, "netns": session.cfg.netns, "parent": session.cfg.parent,
            "implements": session.implements, "addressSpace": session.space,
            "results": [o.to_json() for o in outcomes],
            "summary": {"passed": s["pass"], "failed": s["fail"], "skipped": s["skip"]},
            "seconds": round(seconds, 2)}
