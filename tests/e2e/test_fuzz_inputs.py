"""Fuzz corpus of bad input (issue 9 item 8/1): every config field of splice-bridge,
splice-ipam and splice-portmap with wrong types and bad values, every CNI_* variable with
bad values. Each case must answer exit 1, a CNI error JSON on stdout with its code (1-7
for bad input; 3 for a missing namespace, 102 for an address no range holds) and a
message, no traceback, and leave nothing in the kernel (links, sandbox interfaces, nft
elements) nor in the IPAM store.

Cases run in-process through ``run_plugin`` with the host namespace as ``host`` (what the
agent does: the kernel work lands in a throwaway namespace), a representative subset
through the installed executables. Namespaces are per module (one host, one sandbox); a
case that unexpectedly succeeds is deleted again before the next one runs.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re

import pytest

from splice.conformance import oracle

from ..conftest import CniRunner, _del_ns, _new_ns, require_root, require_tool
from .conftest import ALL_VERSIONS, count_leases

pytestmark = pytest.mark.root

NET = "spt-fuzz"
BRIDGE = "sptbr9"
DATADIR = "@DATADIR@"
SANDBOX = "@SANDBOX@"
MISSING = object()  # delete the field
SUBNET = "10.78.0.0/24"

IPAM = {"type": "splice-ipam", "ranges": [[{"subnet": SUBNET}]], "dataDir": DATADIR}
BASE = {
    "splice-bridge": {"cniVersion": "1.1.0", "name": NET, "type": "splice-bridge", "bridge": BRIDGE,
                      "isGateway": True, "ipMasq": True, "ipam": IPAM},
    "splice-ipam": {"cniVersion": "1.1.0", "name": NET, "type": "splice-ipam", "ipam": IPAM},
    "splice-portmap": {"cniVersion": "1.1.0", "name": NET, "type": "splice-portmap", "snat": True,
                       "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
                       "prevResult": {"cniVersion": "1.1.0",
                                      "interfaces": [{"name": BRIDGE}, {"name": "eth0", "sandbox": SANDBOX}],
                                      "ips": [{"address": "10.78.0.5/24", "gateway": "10.78.0.1", "interface": 1}]}},
}
PLUGINS = {"splice-bridge": "bridge", "splice-ipam": "ipam", "splice-portmap": "portmap"}

# Wrong JSON types, per expected type.
NOT_BOOL = ["true", 1, 0, [], {}]
NOT_INT = ["1", 1.5, True, [], {}]
NOT_STR = [1, True, [], {}]
NOT_LIST = ["x", 1, {}, True]
NOT_OBJ = ["x", 1, [1], True]


class Case:
    def __init__(self, plugin: str, field: str, value, code, command: str = "ADD", env: dict | None = None,
                 conf=None):
        self.plugin, self.field, self.value, self.command = plugin, field, value, command
        self.codes = code if isinstance(code, (set, frozenset)) else {code}
        if not field.startswith("env:") and value is not MISSING and re.search(r"\\ud[89a-f]", json.dumps(value)):
            self.codes = {6}  # an unpaired surrogate is no Unicode: the request does not decode
        self.env = env or {}
        self.conf = conf

    @property
    def id(self) -> str:
        v = "MISSING" if self.value is MISSING else json.dumps(self.value)
        v = v if len(v) <= 40 else v[:37] + "..."
        return f"{self.plugin[7:]}-{self.command}-{self.field}={v}"

    def config(self) -> dict | bytes:
        if self.conf is not None:
            return self.conf
        c = copy.deepcopy(BASE[self.plugin])
        if self.field.startswith("env:"):
            return c
        *parents, last = self.field.split(".")
        node = c
        for p in parents:
            node = node.setdefault(p, {}) if not p.isdigit() else node[int(p)]
        if self.value is MISSING:
            node.pop(last, None)
        elif last.isdigit():
            node[int(last)] = self.value
        else:
            node[last] = self.value
        return c


def cases() -> list[Case]:
    out: list[Case] = []

    def add(plugin, field, values, code, **kw):
        for v in values:
            out.append(Case(plugin, field, v, code, **kw))

    # -- fields every plugin reads (skel) --------------------------------------------------
    for plugin in BASE:
        add(plugin, "cniVersion", NOT_STR, 6)
        add(plugin, "cniVersion", ["9.9.9", "1.1", "v1.0.0"], 1)
        add(plugin, "name", [*NOT_STR, "", "bad name", "-x", "a/b", MISSING], 7)
        add(plugin, "type", [1, [], "", MISSING], 7)
        add(plugin, "runtimeConfig", NOT_OBJ, 7)
        add(plugin, "args", NOT_OBJ, 7)
        add(plugin, "args.cni", NOT_OBJ, 7)
        add(plugin, "prevResult", ["x", 1, [1]], 6)
        add(plugin, "prevResult", [{"ips": "x"}, {"cniVersion": 5}, {"interfaces": [{"name": 5}]},
                                   {"ips": [{"address": "x"}]}, {"routes": [{"dst": "0.0.0.0/0", "gw": 5}]},
                                   {"dns": "x"}, {"cniVersion": "0.3.1", "ips": [{"address": "10.0.0.2/24"}], "interfaces": 1}], 6)
        add(plugin, "prevResult", [{"cniVersion": "7.0.0"}], 1)
        add(plugin, "prevResult", [{"interfaces": [], "ips": [{"address": "10.0.0.2/24", "interface": 3}]}], 7)
        for cmd in ("DEL", "CHECK", "STATUS", "GC"):
            add(plugin, "runtimeConfig", ["x"], 7, command=cmd)
            add(plugin, "args.cni", [[1]], 7, command=cmd)
        add(plugin, "cni.dev/valid-attachments", ["x", [1], [{"containerID": 1, "ifname": "eth0"}]], 7, command="GC")
        add(plugin, "cniVersion", ["0.3.1"], 1, command="CHECK")
        add(plugin, "cniVersion", ["1.0.0"], 1, command="STATUS")
        add(plugin, "cniVersion", ["1.0.0"], 1, command="GC")

    # -- splice-bridge -----------------------------------------------------------------------
    b = "splice-bridge"
    add(b, "bridge", [*NOT_STR, "", "a" * 16, "a/b", "a b", ".", "..", "a:b"], 7)
    for key in ("isGateway", "isDefaultGateway", "forceAddress", "ipMasq", "hairpinMode", "promiscMode",
                "preserveDefaultVlan", "enabledad", "macspoofchk", "disableContainerInterface", "portIsolation"):
        add(b, key, NOT_BOOL, 7)
    add(b, "ipMasqBackend", [*NOT_STR, "x", "NFTABLES"], 7)
    add(b, "ipMasqBackend", ["iptables"], 2)
    add(b, "mtu", [*NOT_INT, -1, 1, 67, 65536, 2 ** 64], 7)
    add(b, "vlan", [*NOT_INT, -1, 4095, 2 ** 64], 7)
    add(b, "vlanTrunk", ["x", 1, {}, [1], ["x"], [{}], [{"id": 0}], [{"id": 4095}], [{"id": "5"}], [{"minID": 5}],
                         [{"maxID": 5}], [{"minID": 5, "maxID": 1}], [{"minID": 0, "maxID": 5}],
                         [{"minID": True, "maxID": 5}]], 7)
    add(b, "hairpinMode", [True], 7, conf={**BASE[b], "hairpinMode": True, "promiscMode": True})
    add(b, "vlan", [5], 7, conf={**BASE[b], "vlan": 5, "vlanTrunk": [{"id": 5}]})
    add(b, "disableContainerInterface", [True], 7, conf={**BASE[b], "disableContainerInterface": True})
    add(b, "bridge", ["sptbr9xxxxxx"], 7, conf={**BASE[b], "bridge": "sptbr9xxxxxx", "vlan": 100})
    add(b, "dns", ["x", 1, [1], True, {"nameservers": "x"}, {"nameservers": [1]}, {"domain": 5}, {"search": {}},
                   {"options": "x"}], 6)
    add(b, "ipam", ["x", [1], 1, True], 7)
    add(b, "ipam.type", [1, [], "", "a/b", "..", MISSING], 7)
    add(b, "runtimeConfig.mac", [5, [], "zz:00:00:00:00:01", "01:00:00:00:00:01", "00:00:00:00:00:00", "02:00:00:00:00"], 7)
    add(b, "args.cni.mac", [5, {}, "zz", "ff:ff:ff:ff:ff:ff"], 7)
    add(b, "runtimeConfig.ips", [5, {"a": 1}, [5], ["x"], ["10.78.0.5/99"]], 7)
    add(b, "runtimeConfig.ips", [["10.99.0.5"], ["10.78.0.1"]], 102)
    add(b, "args.cni.ips", [5, [5], ["x"]], 7)
    add(b, "runtimeConfig.ipRanges", ["x", 1, [1], [[]], [["x"]], [[{"subnet": "x"}]], [[{"subnet": "10.0.0.1/24"}]]], 7)

    # -- IPAM fields: through splice-ipam and under splice-bridge ------------------------------
    for plugin in ("splice-ipam", "splice-bridge"):
        add(plugin, "ipam.ranges", ["x", 1, {}, [], [[]], ["x"], [["x"]], [[{}]], [[{"subnet": 5}]],
                                    [[{"subnet": "x"}]], [[{"subnet": "10.78.0.0"}]], [[{"subnet": "10.78.0.1/24"}]],
                                    [[{"subnet": "10.78.0.0/31"}]], [[{"subnet": "10.78.0.0/33"}]],
                                    [[{"subnet": SUBNET, "rangeStart": "10.1.0.1"}]],
                                    [[{"subnet": SUBNET, "rangeStart": "10.78.0.50", "rangeEnd": "10.78.0.10"}]],
                                    [[{"subnet": SUBNET, "rangeEnd": 5}]],
                                    [[{"subnet": SUBNET, "gateway": "x"}]],
                                    [[{"subnet": SUBNET, "gateway": "10.78.0.0"}]],
                                    [[{"subnet": SUBNET, "gateway": "10.78.0.255"}]],
                                    [[{"subnet": SUBNET}, {"subnet": "fd00::/64"}]],
                                    [[{"subnet": SUBNET}], [{"subnet": "10.78.0.0/25"}]]], 7)
        add(plugin, "ipam.ranges", [MISSING, [[{"subnet": f"10.{i}.0.0/24"}] for i in range(257)]], 7)
        add(plugin, "runtimeConfig.ipRanges", [[[{"subnet": f"10.{i}.0.0/24"}] for i in range(257)]], 7)
        add(plugin, "ipam.subnet", [5, "x", "10.78.0.0/31"], 7)
        add(plugin, "ipam.rangeStart", ["10.78.0.5"], 7, conf=None)
        add(plugin, "ipam.routes", ["x", 1, {}, [1], [{}], [{"dst": 5}], [{"dst": "x"}], [{"dst": "10.0.0.1/8"}],
                                    [{"dst": "0.0.0.0/0", "gw": "::1"}], [{"dst": "0.0.0.0/0", "gw": 5}],
                                    [{"dst": "0.0.0.0/0", "mtu": -1}], [{"dst": "0.0.0.0/0", "table": "x"}],
                                    [{"dst": "0.0.0.0/0", "priority": True}]], 7)
        add(plugin, "ipam.dataDir", [5, [], "a\u0000b"], 7)
        add(plugin, "ipam.dns", ["x", [1], 1, {"nameservers": "x"}, {"nameservers": [1]}, {"domain": 5},
                                 {"search": {}}, {"options": "x"}], 7)
        add(plugin, "ipam.resolvConf", [5, []], 7)
    add("splice-ipam", "ipam", [MISSING, "x", [1], 1, {}], 7)
    add("splice-ipam", "runtimeConfig.ips", [5, ["x"]], 7)
    add("splice-ipam", "runtimeConfig.ips", [["10.99.0.5"]], 102)

    # -- splice-portmap ----------------------------------------------------------------------
    p = "splice-portmap"
    for key in ("snat", "masqAll"):
        add(p, key, ["true", 1, [], {}], 7)
    add(p, "backend", ["x", 5, [], "NFTABLES"], 7)
    add(p, "backend", ["iptables"], 2)
    add(p, "markMasqBit", ["1", -1, 32, 1.5, True], 7)
    add(p, "externalSetMarkChain", ["x"], 2)
    add(p, "externalSetMarkChain", ["x"], 7, conf={**BASE[p], "externalSetMarkChain": "x", "markMasqBit": 1})
    for key in ("conditionsV4", "conditionsV6"):
        add(p, key, ["x", 1, {}, [1], ["ip saddr 10.0.0.0/8; flush ruleset"], ["ip saddr 10.0.0.0/8\ndrop"]], 7)
    add(p, "runtimeConfig.portMappings", ["x", 1, {}, [1], ["x"], [{}], [{"hostPort": 80}], [{"containerPort": 80}]], 7)
    mapping = {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}
    for key, values in (("hostPort", ["80", 0, 65536, -1, True, 1.5, None]),
                        ("containerPort", ["80", 0, 65536, True]),
                        ("protocol", [5, [], "icmp", "tcp "]),
                        ("hostIP", [5, [], "x", "10.0.0.1/24", "1.2.3"])):
        for v in values:
            out.append(Case(p, f"runtimeConfig.portMappings.0.{key}", v, 7))
    add(p, "runtimeConfig.portMappings", [[mapping, {**mapping, "containerPort": 81}]], 7)
    add(p, "prevResult", [MISSING], 7)
    add(p, "prevResult", [MISSING], 7, command="CHECK")

    # -- the environment ---------------------------------------------------------------------
    for plugin in BASE:
        envs = [
            ("CNI_COMMAND", ["", "add", "BOGUS", "ADD "], 4),
            ("CNI_CONTAINERID", [None, "", "-x", "a b", "a/b", ".x", "x\u00e9"], 4),
            ("CNI_IFNAME", [None, "", "a" * 16, "a/b", "a:b", "a b", ".", "..", "eth0\n"], 4),
            ("CNI_ARGS", ["garbage", "FOO=bar", "IgnoreUnknown=maybe", "=x", "a=b=c", "IgnoreUnknown"], 4),
        ]
        if plugin != "splice-portmap":
            envs.append(("CNI_ARGS", ["IP=x", "IP=10.78.0.5/99"], 4))
        if plugin == "splice-bridge":
            envs.append(("CNI_ARGS", ["MAC=zz", "MAC=01:00:00:00:00:01"], 4))
        if plugin != "splice-ipam":  # splice-portmap, as the reference, never enters the sandbox
            envs.append(("CNI_NETNS", [None, ""], 4))
        if plugin == "splice-bridge":
            envs.append(("CNI_NETNS", ["/run/netns/spt-does-not-exist", "relative/path"], 3))
            envs.append(("CNI_NETNS", ["/etc/hostname", "/proc/self/ns/mnt"], {3, 4}))
            envs.append(("CNI_NETNS", ["@HOSTNS@"], 8))  # libcni's own code: the plugin's netns
            envs.append(("CNI_NETNS", ["/run/netns/\udcff"], 3))
            envs.append(("CNI_IFNAME", ["eth\udcff", "\ud800"], 4))
            envs.append(("CNI_CONTAINERID", ["\udcff"], 4))
        for var, values, code in envs:
            for v in values:
                out.append(Case(plugin, f"env:{var}", v, code, env={var: v}))
        out.append(Case(plugin, "env:CNI_PATH", None, 4, command="GC", env={"CNI_PATH": None}))
        out.append(Case(plugin, "env:CNI_CONTAINERID", None, 4, command="DEL", env={"CNI_CONTAINERID": None}))
        out.append(Case(plugin, "env:CNI_IFNAME", "a" * 16, 4, command="DEL", env={"CNI_IFNAME": "a" * 16}))

    # -- strings no kernel, file system or nft can take: lone surrogates, NUL, control chars --
    bad_strs = ["\ud800", "a\u0000b", "\udcff"]  # surrogates: code 6 (see Case)
    add(b, "bridge", bad_strs, 7)
    add(b, "runtimeConfig.mac", bad_strs, 7)
    add(b, "ipMasqBackend", bad_strs, 7)
    add(b, "ipam.type", ["\ud800"], {7, 106})
    for plugin in ("splice-ipam", "splice-bridge"):
        add(plugin, "ipam.dataDir", ["/tmp/\ud800", "\udcff"], 7)
        add(plugin, "ipam.ranges", [[[{"subnet": "10.78.0.0/2\ud8004"}]], [[{"subnet": SUBNET, "gateway": "\u0000"}]]], 7)
        add(plugin, "ipam.dns", [{"nameservers": ["\ud800"]}], 7)
        add(plugin, "runtimeConfig.ips", [["\ud800"]], 7)
        add(plugin, "name", ["\ud800", "n\u00e9t", "n" * 256], 7)
    add(b, "dns", [{"nameservers": ["\ud800"]}, {"domain": "a\u0000b"}], 6)
    add(p, "conditionsV4", [["ip saddr \ud800"], ["ip saddr 10.0.0.0/8\u0000"]], 7)
    add(p, "runtimeConfig.portMappings.0.hostIP", ["\ud800", "1.2.3.4\u0000"], 7)
    add(p, "runtimeConfig.portMappings.0.protocol", ["\ud800"], 7)
    add(p, "prevResult", [{"ips": [{"address": "10.0.0.2/24\ud800"}]}, {"interfaces": [{"name": "\ud800"}]}], 6)

    # -- every version: the error answers in the config's version -----------------------------
    for plugin in BASE:
        for v in ALL_VERSIONS:
            out.append(Case(plugin, "runtimeConfig", "x", 7, conf={**BASE[plugin], "cniVersion": v, "runtimeConfig": "x"}))
            out.append(Case(plugin, "env:CNI_IFNAME", "a/b", 4, env={"CNI_IFNAME": "a/b"},
                            conf={**BASE[plugin], "cniVersion": v}))
    for v in ALL_VERSIONS:
        out.append(Case(b, "ipam.dns", {"nameservers": "x"}, 7,
                        conf={**BASE[b], "cniVersion": v, "ipam": {**IPAM, "dns": {"nameservers": "x"}}}))
        out.append(Case(b, "dns", "x", 6, conf={**BASE[b], "cniVersion": v, "dns": "x"}))

    # -- the request itself ------------------------------------------------------------------
    for plugin in BASE:
        for name, text in (("nan", '"mtu": NaN'), ("infinity", '"mtu": Infinity'), ("neg-infinity", '"x": -Infinity')):
            body = json.dumps(BASE[plugin])[:-1] + ", " + text + "}"
            out.append(Case(plugin, f"request:{name}", MISSING, 6, conf=body.encode()))
        for name, body in (("not-json", b"{not json"), ("array", b"[1]"), ("empty", b""), ("latin1", b"\xff\xfe\x00"),
                           ("deep", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
                           ("huge", b'{"pad": "' + b"x" * (2 << 20) + b'"}')):
            out.append(Case(plugin, f"request:{name}", MISSING, 6, conf=body))
    return out


CASES = cases()
# The subset run through the installed executables (process start, env handling, stdout).
EXEC_FIELDS = ("cniVersion", "runtimeConfig", "args.cni", "bridge", "mtu", "dns", "ipam.ranges", "ipam.dns",
               "runtimeConfig.portMappings", "env:CNI_COMMAND", "env:CNI_IFNAME", "env:CNI_CONTAINERID",
               "env:CNI_NETNS", "env:CNI_ARGS", "request:deep", "request:huge", "request:not-json", "prevResult")


def exec_subset() -> list[Case]:
    seen: dict = {}
    for c in CASES:
        key = (c.plugin, c.field, c.command)
        if c.field in EXEC_FIELDS and key not in seen:
            seen[key] = c
    return list(seen.values())


# -- fixtures (module scope: one host, one sandbox for the whole corpus) ----------------------


class World:
    def __init__(self, host, sandbox, datadir):
        self.host, self.sandbox, self.datadir = host, sandbox, datadir
        from splice.libnet.netns import Netns

        self.host_netns = Netns.open(host.path)

    def render(self, case: Case) -> bytes:
        c = case.config()
        text = c.decode(errors="surrogateescape") if isinstance(c, bytes) else json.dumps(c)
        text = text.replace(DATADIR, str(self.datadir)).replace(SANDBOX, self.sandbox.path)
        return text.encode(errors="surrogateescape")

    def env(self, case: Case) -> dict:
        env = {"CNI_COMMAND": case.command, "CNI_CONTAINERID": "fuzz", "CNI_NETNS": self.sandbox.path,
               "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent", "SPLICE_AGENT_SOCKET": "off"}
        for k, v in case.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v.replace("@HOSTNS@", self.host.path)
        return env

    def leftovers(self) -> list[str]:
        out = []
        host = oracle.link_names(self.host.name) - {"lo", BRIDGE}
        if host:
            out.append(f"host links {sorted(host)}")
        sb = oracle.link_names(self.sandbox.name) - {"lo"}
        if sb:
            out.append(f"sandbox links {sorted(sb)}")
        elements = oracle.nft_map_elements(self.host.name)
        if elements:
            out.append(f"nft elements {elements}")
        n = count_leases(self.datadir, NET)
        if n:
            out.append(f"{n} IPAM leases")
        return out

    def clean(self, plugin: str, conf: bytes) -> None:
        """After an unexpected success: DEL with the base config, then GC (nothing valid)."""
        from splice.plugins.cni import main as cnimain
        from splice.plugins.cni.skel import run_plugin

        base = self.render(Case(plugin, "env:", None, 0))
        for cmd in ("DEL", "GC"):
            body = base if cmd == "DEL" else json.dumps({**json.loads(base), "cni.dev/valid-attachments": []}).encode()
            run_plugin(cnimain.load(PLUGINS[plugin]), self.env(Case(plugin, "env:", None, 0, command=cmd)),
                       io.BytesIO(body), io.StringIO(), host=self.host_netns)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_root()
    require_tool("ip", "nsenter", "nft")
    host, sandbox = _new_ns(), _new_ns()
    w = World(host, sandbox, tmp_path_factory.mktemp("fuzz-ipam"))
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("fuzz-cwd"))  # a relative dataDir must not land in the tree
    try:
        yield w
    finally:
        os.chdir(cwd)
        w.host_netns.close()
        _del_ns(sandbox)
        _del_ns(host)


def check_answer(case: Case, rc: int, stdout: str, stderr: str, world: World, body: bytes) -> None:
    problems = []
    if "Traceback" in stdout + stderr:
        problems.append("traceback")
    err = None
    try:
        err = json.loads(stdout)
    except ValueError:
        problems.append(f"stdout is not JSON: {stdout[:200]!r}")
    if rc != 1:
        problems.append(f"exit status {rc}")
    if isinstance(err, dict):
        if err.get("code") not in case.codes:
            problems.append(f"code {err.get('code')} (expected {sorted(case.codes)}): {err.get('msg')!r}")
        if not isinstance(err.get("msg"), str) or not err["msg"]:
            problems.append("no message")
        if not isinstance(err.get("cniVersion"), str):
            problems.append("no cniVersion")
        try:
            asked = json.loads(body).get("cniVersion")
        except (ValueError, AttributeError, RecursionError):
            asked = None
        if isinstance(asked, str) and asked in ALL_VERSIONS and err.get("cniVersion") != asked:
            problems.append(f"answered in {err.get('cniVersion')!r}, the config is {asked!r}")
    left = world.leftovers()
    if rc == 0 or left:
        world.clean(case.plugin, body)
        still = world.leftovers()
        assert not still, f"{case.id}: the clean-up DEL/GC left {still}: later cases would be polluted"
    problems += [f"left: {x}" for x in left]
    assert not problems, f"{case.id}: {'; '.join(problems)}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_in_process(case: Case, world: World, capsys):
    from splice.plugins.cni import main as cnimain
    from splice.plugins.cni.skel import run_plugin

    body = world.render(case)
    out = io.StringIO()
    rc = run_plugin(cnimain.load(PLUGINS[case.plugin]), world.env(case), io.BytesIO(body), out, host=world.host_netns)
    check_answer(case, rc, out.getvalue(), capsys.readouterr().err, world, body)


EXEC = exec_subset()


@pytest.mark.parametrize("case", EXEC, ids=[c.id for c in EXEC])
def test_executable(case: Case, world: World):
    runner = CniRunner(world.host)
    body = world.render(case)
    env = world.env(case)
    from splice.conformance.runtime import Runtime

    rt = Runtime(cni_path=runner.cni_path, prefix=["nsenter", f"--net={world.host.path}"], timeout=60)
    extra = {k: v for k, v in env.items() if not k.startswith("CNI_") or k == "CNI_PATH"}
    p = rt.run_raw(case.plugin, env.get("CNI_COMMAND"), body, container_id=env.get("CNI_CONTAINERID"),
                   netns=env.get("CNI_NETNS"), ifname=env.get("CNI_IFNAME"), cni_args=env.get("CNI_ARGS"),
                   extra_env=extra)
    check_answer(case, p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"), world, body)


def test_corpus_covers_every_field():
    """The corpus names every documented option of the three plugins and every CNI_ variable."""
    fields = {c.field.split(".")[-1] if not c.field.startswith("env:") else c.field for c in CASES}
    fields |= {c.field for c in CASES}
    for key in ("bridge", "isGateway", "isDefaultGateway", "forceAddress", "ipMasq", "ipMasqBackend", "mtu",
                "hairpinMode", "promiscMode", "vlan", "vlanTrunk", "preserveDefaultVlan", "enabledad",
                "macspoofchk", "disableContainerInterface", "portIsolation", "dns", "ipam", "ranges", "subnet",
                "rangeStart", "routes", "dataDir", "resolvConf", "snat", "masqAll", "backend", "markMasqBit",
                "externalSetMarkChain", "conditionsV4", "conditionsV6", "portMappings", "hostPort",
                "containerPort", "protocol", "hostIP", "runtimeConfig", "args", "prevResult", "mac", "ips",
                "ipRanges", "cniVersion", "name", "type", "env:CNI_COMMAND", "env:CNI_CONTAINERID",
                "env:CNI_NETNS", "env:CNI_IFNAME", "env:CNI_ARGS", "env:CNI_PATH"):
        assert key in fields, key
    assert len(CASES) > 300 and os.environ.get("CNI_COMMAND") is None
