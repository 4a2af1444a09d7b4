"""Helper plugins the conformance kit installs into a temporary CNI_PATH directory.

Standard library only and free of package imports: the kit copies this file under two
names and the file name picks the role.

``spc-fake-ipam``  a small IPAM plugin (JSON state under ``<dataDir>/<network>/``, flock):
                   ADD/DEL/CHECK/STATUS/GC, every call appended to ``calls.log``;
                   ``"failOn": ["GC", "STATUS", ...]`` makes those commands fail, so the kit
                   can see whether a main plugin forwards them and what it does on failure.
``spc-prev``       a chained plugin that runs *before* the plugin under test: it creates a
                   veth ``spcprev0`` (peer ``spcprev1``, both in the sandbox) (198.51.100.1/32, a link route) in the
                   sandbox and returns it as the ``prevResult`` the plugin under test gets.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import subprocess
import sys

ALL = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
CHAINABLE = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
PREV_IF = "spcprev0"
PREV_PEER = "spcprev1"
PREV_ADDR = "198.51.100.1/32"
PREV_ROUTE = "198.51.100.128/25"
PREV_DNS = {"nameservers": ["192.0.2.53"], "search": ["spc.test"]}


def _vt(v: str) -> tuple:
    try:
        return tuple(int(x) for x in v.split("."))
    except (ValueError, AttributeError):
        return (0,)


def _out(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _fail(version: str, code: int, msg: str) -> int:
    _out({"cniVersion": version, "code": code, "msg": msg})
    return 1


# -- spc-fake-ipam ---------------------------------------------------------------------------


class _State:
    def __init__(self, conf: dict):
        ipam = conf.get("ipam") or {}
        self.dir = os.path.join(ipam.get("dataDir") or "/tmp/spc-fake-ipam", conf.get("name") or "net")
        os.makedirs(self.dir, exist_ok=True)
        self.file = os.path.join(self.dir, "state.json")
        self.lockf = open(os.path.join(self.dir, "lock"), "w")

    def __enter__(self):
        fcntl.flock(self.lockf, fcntl.LOCK_EX)
        try:
            with open(self.file) as f:
                self.data = json.load(f)
        except (OSError, ValueError):
            self.data = {}
        return self

    def save(self) -> None:
        tmp = self.file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.file)

    def __exit__(self, *exc):
        fcntl.flock(self.lockf, fcntl.LOCK_UN)
        self.lockf.close()

    def log(self, entry: dict) -> None:
        with open(os.path.join(self.dir, "calls.log"), "a") as f:
            f.write(json.dumps(entry) + "\n")


def _ipam_result(version: str, address: str, gateway: str) -> dict:
    if _vt(version) < (0, 3, 0):
        return {"cniVersion": version, "ip4": {"ip": address, "gateway": gateway}}
    ip = {"address": address, "gateway": gateway}
    if _vt(version) < (1, 0, 0):
        ip["version"] = "4"
    return {"cniVersion": version, "ips": [ip], "routes": []}


def fake_ipam(cmd: str, conf: dict, env: dict) -> int:
    version = conf.get("cniVersion") or "0.1.0"
    ipam = conf.get("ipam") or {}
    key = f"{env.get('CNI_CONTAINERID', '')}\t{env.get('CNI_IFNAME', '')}"
    st = _State(conf)
    with st:
        entry = {"command": cmd, "containerID": env.get("CNI_CONTAINERID"), "ifname": env.get("CNI_IFNAME")}
        if cmd == "GC":
            entry["valid"] = conf.get("cni.dev/valid-attachments")
            entry["legacy"] = conf.get("cni.dev/attachments")
        st.log(entry)
        if cmd in (ipam.get("failOn") or []):
            return _fail(version, 50 if cmd == "STATUS" else 111, f"spc-fake-ipam: injected {cmd} failure")
        net = ipaddress.ip_network(ipam.get("subnet") or "10.247.0.0/24")
        gateway = str(next(net.hosts()))
        if cmd == "ADD":
            if key not in st.data:
                taken = {a.split("/")[0] for a in st.data.values()}
                free = next((h for h in list(net.hosts())[1:] if str(h) not in taken), None)
                if free is None:
                    return _fail(version, 111, f"spc-fake-ipam: no free address in {net}")
                st.data[key] = f"{free}/{net.prefixlen}"
                st.save()
            _out(_ipam_result(version, st.data[key], gateway))
            return 0
        if cmd == "DEL":
            if st.data.pop(key, None) is not None:
                st.save()
            return 0
        if cmd == "CHECK":
            if key not in st.data:
                return _fail(version, 111, f"spc-fake-ipam: nothing reserved for {key!r}")
            return 0
        if cmd == "STATUS":
            return 0
        if cmd == "GC":
            valid = set()
            for k in ("cni.dev/valid-attachments", "cni.dev/attachments"):
                for a in conf.get(k) or []:
                    valid.add(f"{a.get('containerID')}\t{a.get('ifname')}")
            for k in [k for k in st.data if k not in valid]:
                del st.data[k]
            st.save()
            return 0
    return _fail(version, 4, f"unknown CNI_COMMAND {cmd!r}")


# -- spc-prev --------------------------------------------------------------------------------


def _in_ns(netns: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={netns}", *argv], capture_output=True, text=True, timeout=30)


def prev(cmd: str, conf: dict, env: dict) -> int:
    version = conf.get("cniVersion") or "0.1.0"
    netns = env.get("CNI_NETNS", "")
    if cmd in ("STATUS", "GC"):
        return 0
    if cmd == "DEL":
        if netns and os.path.exists(netns):
            _in_ns(netns, "ip", "link", "del", PREV_IF)  # takes its veth peer with it
        return 0
    if cmd == "CHECK":
        p = _in_ns(netns, "ip", "-j", "addr", "show", "dev", PREV_IF)
        if p.returncode != 0 or PREV_ADDR.split("/")[0] not in p.stdout:
            return _fail(version, 111, f"spc-prev: {PREV_IF} or its address is missing")
        return 0
    if cmd != "ADD":
        return _fail(version, 4, f"unknown CNI_COMMAND {cmd!r}")
    if version not in CHAINABLE:
        return _fail(version, 1, f"spc-prev: unsupported version {version}")
    # a veth pair inside the sandbox (needs no module beyond what a bridge plugin uses)
    for argv in (["ip", "link", "add", PREV_IF, "type", "veth", "peer", "name", PREV_PEER],
                 ["ip", "addr", "add", PREV_ADDR, "dev", PREV_IF],
                 ["ip", "link", "set", PREV_PEER, "up"],
                 ["ip", "link", "set", PREV_IF, "up"],
                 ["ip", "route", "add", PREV_ROUTE, "dev", PREV_IF]):
        p = _in_ns(netns, *argv)
        if p.returncode != 0:
            return _fail(version, 111, f"spc-prev: {' '.join(argv)}: {p.stderr.strip()}")
    link = json.loads(_in_ns(netns, "ip", "-j", "link", "show", PREV_IF).stdout)[0]
    iface = {"name": PREV_IF, "mac": link.get("address", ""), "sandbox": netns}
    ip = {"address": PREV_ADDR, "interface": 0}
    route: dict = {"dst": PREV_ROUTE}
    if _vt(version) < (1, 0, 0):
        ip["version"] = "4"
    if _vt(version) >= (1, 1, 0):
        iface["mtu"] = link.get("mtu", 1500)
        route.update({"scope": 253, "table": 254})
    _out({"cniVersion": version, "interfaces": [iface], "ips": [ip], "routes": [route], "dns": PREV_DNS})
    return 0


def main() -> int:
    role = os.path.basename(sys.argv[0])
    env = dict(os.environ)
    cmd = env.get("CNI_COMMAND", "")
    if cmd == "VERSION":
        _out({"cniVersion": "1.1.0", "supportedVersions": ALL if role != "spc-prev" else CHAINABLE})
        return 0
    try:
        conf = json.load(sys.stdin)
    except ValueError as exc:
        return _fail("1.1.0", 6, f"{role}: bad config: {exc}")
    if role == "spc-prev":
        return prev(cmd, conf, env)
    return fake_ipam(cmd, conf, env)


if __name__ == "__main__":
    sys.exit(main())
