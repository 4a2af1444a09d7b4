"""The CNI protocol engine (skel): env, stdin, CNI_ARGS, versions, output, errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from splice.plugins.cni import errors as E
from splice.plugins.cni.errors import CniError
from splice.plugins.cni.skel import CmdArgs, parse_cni_args, run_plugin, valid_attachments
from splice.plugins.cni.version import ALL_VERSIONS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RESULT = {
    "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/sb", "mtu": 1400}],
    "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0},
            {"address": "fd00::2/64", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "table": 10}],
    "dns": {"nameservers": ["10.0.0.53"]},
}


class FakePlugin:
    name = "fake"
    supported_versions = tuple(ALL_VERSIONS)
    cni_args = frozenset({"IP", "MAC"})

    def __init__(self, result=None, raises: BaseException | None = None):
        self.calls: list[tuple[str, CmdArgs]] = []
        self.result = RESULT if result is None else result
        self.raises = raises

    def _call(self, verb, a):
        self.calls.append((verb, a))
        if self.raises is not None:
            raise self.raises

    def add(self, a):
        self._call("add", a)
        return self.result

    def delete(self, a):
        self._call("delete", a)

    def check(self, a):
        self._call("check", a)

    def status(self, a):
        self._call("status", a)

    def gc(self, a):
        self._call("gc", a)


def env_for(cmd: str, **over) -> dict:
    env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/run/netns/spt-nope",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin:/usr/lib/cni"}
    for k, v in over.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def conf(version: str | None = "1.1.0", **over) -> dict:
    c = {"name": "net1", "type": "fake"}
    if version is not None:
        c["cniVersion"] = version
    c.update(over)
    return c


def run(plugin, env: dict, stdin) -> tuple[int, str]:
    if isinstance(stdin, dict):
        stdin = json.dumps(stdin)
    if isinstance(stdin, str):
        stdin = stdin.encode()
    out = io.StringIO()
    rc = run_plugin(plugin, env=env, stdin=io.BytesIO(stdin), stdout=out)
    return rc, out.getvalue()


def run_err(plugin, env, stdin, code: int) -> dict:
    rc, out = run(plugin, env, stdin)
    assert rc == 1, out
    err = json.loads(out)
    assert err["code"] == code, err
    assert err["msg"]
    assert "Traceback" not in out
    assert set(err) <= {"cniVersion", "code", "msg", "details"}
    return err


# --- CNI_COMMAND ------------------------------------------------------------------------


def test_missing_command():
    p = FakePlugin()
    err = run_err(p, env_for("ADD", CNI_COMMAND=None), conf(), 4)
    assert "CNI_COMMAND" in err["msg"]
    run_err(p, env_for(""), conf(), 4)
    assert p.calls == []


@pytest.mark.parametrize("cmd", ["BOGUS", "add", "FINALIZE"])
def test_unknown_command(cmd):
    err = run_err(FakePlugin(), env_for(cmd), conf(), 4)
    assert cmd in err["msg"]


# --- VERSION ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_version_echoes_supported_config_version(version):
    rc, out = run(FakePlugin(), {"CNI_COMMAND": "VERSION"}, {"cniVersion": version})
    assert rc == 0
    assert json.loads(out) == {"cniVersion": version, "supportedVersions": list(ALL_VERSIONS)}


@pytest.mark.parametrize("stdin", [b"", b"garbage", b"[1]", b'{"cniVersion": "9.9.9"}', b'{"cniVersion": 3}'])
def test_version_defaults_to_current(stdin):
    rc, out = run(FakePlugin(), {"CNI_COMMAND": "VERSION"}, stdin)
    assert rc == 0
    assert json.loads(out)["cniVersion"] == "1.1.0"


def test_version_ignores_other_env():
    env = {"CNI_COMMAND": "VERSION", "CNI_ARGS": "garbage;FOO=1", "CNI_IFNAME": "x" * 40, "CNI_CONTAINERID": "-"}
    rc, out = run(FakePlugin(), env, b"")
    assert rc == 0 and json.loads(out)["supportedVersions"] == list(ALL_VERSIONS)


def test_version_reports_plugin_versions():
    p = FakePlugin()
    p.supported_versions = ("0.4.0", "1.0.0")
    rc, out = run(p, {"CNI_COMMAND": "VERSION"}, {"cniVersion": "0.3.1"})
    assert json.loads(out) == {"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0"]}


def test_version_with_tty_like_stdin_does_not_read():
    class Tty(io.BytesIO):
        def isatty(self):
            return True

        def read(self, *a):
            raise AssertionError("must not block on a terminal")

    out = io.StringIO()
    assert run_plugin(FakePlugin(), env={"CNI_COMMAND": "VERSION"}, stdin=Tty(), stdout=out) == 0
    assert json.loads(out.getvalue())["cniVersion"] == "1.1.0"


# --- required env -----------------------------------------------------------------------


@pytest.mark.parametrize("cmd,missing", [
    ("ADD", ["CNI_CONTAINERID"]), ("ADD", ["CNI_NETNS"]), ("ADD", ["CNI_IFNAME"]),
    ("ADD", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]),
    ("CHECK", ["CNI_NETNS"]), ("CHECK", ["CNI_CONTAINERID", "CNI_IFNAME"]),
    ("DEL", ["CNI_CONTAINERID"]), ("DEL", ["CNI_IFNAME"]),
    ("GC", ["CNI_PATH"]),
])
def test_missing_env_listed_in_one_error(cmd, missing):
    p = FakePlugin()
    err = run_err(p, env_for(cmd, **{m: None for m in missing}), conf(), 4)
    assert err["msg"] == f"required env variables [{','.join(missing)}] missing"
    assert p.calls == []


def test_empty_env_value_counts_as_missing():
    err = run_err(FakePlugin(), env_for("ADD", CNI_NETNS=""), conf(), 4)
    assert "[CNI_NETNS]" in err["msg"]


def test_del_without_netns_succeeds():
    p = FakePlugin()
    rc, out = run(p, env_for("DEL", CNI_NETNS=None), conf())
    assert (rc, out) == (0, "")
    assert p.calls[0][1].netns is None


@pytest.mark.parametrize("cmd", ["ADD", "DEL", "CHECK", "STATUS"])
def test_cni_path_optional(cmd):
    p = FakePlugin()
    rc, _ = run(p, env_for(cmd, CNI_PATH=None), conf(prevResult=RESULT | {"cniVersion": "1.1.0"}))
    assert rc == 0
    assert p.calls[0][1].path == []


def test_status_needs_only_command():
    p = FakePlugin()
    rc, out = run(p, {"CNI_COMMAND": "STATUS"}, conf())
    assert (rc, out) == (0, "")


@pytest.mark.parametrize("cid", ["-abc", "_abc", ".abc", "a b", "a/b", "a:b", "ä"])
def test_bad_container_id(cid):
    err = run_err(FakePlugin(), env_for("ADD", CNI_CONTAINERID=cid), conf(), 4)
    assert "CNI_CONTAINERID" in err["msg"]


@pytest.mark.parametrize("ifname", ["a" * 16, ".", "..", "a/b", "a:b", "a b", "a\tb", "eth\n0"])
def test_bad_ifname(ifname):
    err = run_err(FakePlugin(), env_for("ADD", CNI_IFNAME=ifname), conf(), 4)
    assert "CNI_IFNAME" in err["msg"]


@pytest.mark.parametrize("ifname", ["a" * 15, "eth0", "net1.100", "a-b_c", "..."])
def test_good_ifname(ifname):
    p = FakePlugin()
    rc, _ = run(p, env_for("ADD", CNI_IFNAME=ifname), conf())
    assert rc == 0 and p.calls[0][1].ifname == ifname


def test_cmdargs_fields():
    p = FakePlugin()
    env = env_for("ADD", CNI_ARGS="IP=10.0.0.9;MAC=02:00:00:00:00:09")
    body = json.dumps(conf(ipam={"type": "host-local"})).encode()
    rc, _ = run(p, env, body)
    assert rc == 0
    a = p.calls[0][1]
    assert a.command == "ADD"
    assert a.container_id == "c0ffee" and a.netns == "/run/netns/spt-nope" and a.ifname == "eth0"
    assert a.args == {"IP": "10.0.0.9", "MAC": "02:00:00:00:00:09"}
    assert a.path == ["/opt/cni/bin", "/usr/lib/cni"]
    assert a.stdin == body
    assert a.config["ipam"] == {"type": "host-local"}
    assert a.version == "1.1.0"
    assert a.prev_result is None
    assert a.env == env


# --- CNI_ARGS ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw,expected", [
    ("", {}),
    ("IP=10.0.0.9", {"IP": "10.0.0.9"}),
    ("IP=10.0.0.9;MAC=aa", {"IP": "10.0.0.9", "MAC": "aa"}),
    ("IP=", {"IP": ""}),
    ("IP=1;", {"IP": "1"}),
    ("IgnoreUnknown=1;K8S_POD_NAME=web;FOO=bar", {"K8S_POD_NAME": "web", "FOO": "bar"}),
    ("IgnoreUnknown=true;FOO=bar", {"FOO": "bar"}),
    ("IgnoreUnknown=TRUE;FOO=bar", {"FOO": "bar"}),
    ("FOO=bar;IgnoreUnknown=True", {"FOO": "bar"}),
    ("IgnoreUnknown=0;IP=1", {"IP": "1"}),
])
def test_cni_args_ok(raw, expected):
    assert parse_cni_args(raw, frozenset({"IP", "MAC"})) == expected


@pytest.mark.parametrize("raw,needle", [
    ("garbage", "garbage"),
    ("IP=1;MAC", "MAC"),
    ("=1", "=1"),
    ("IP=1=2", "IP=1=2"),
    ("FOO=bar", "FOO"),
    ("K8S_POD_NAME=web;K8S_POD_NAMESPACE=ns", "K8S_POD_NAME"),
    ("IgnoreUnknown=0;FOO=bar", "FOO"),
    ("IgnoreUnknown=false;FOO=bar", "FOO"),
    ("IgnoreUnknown=yes;FOO=bar", "IgnoreUnknown"),
])
def test_cni_args_rejected(raw, needle):
    with pytest.raises(CniError) as exc:
        parse_cni_args(raw, frozenset({"IP", "MAC"}))
    assert exc.value.code == 4 and needle in exc.value.msg
    err = run_err(FakePlugin(), env_for("ADD", CNI_ARGS=raw), conf(), 4)
    assert needle in err["msg"]


def test_cni_args_declared_k8s_key_accepted():
    assert parse_cni_args("K8S_POD_NAME=web", frozenset({"K8S_POD_NAME"})) == {"K8S_POD_NAME": "web"}


def test_cni_args_reach_plugin_under_ignore_unknown():
    p = FakePlugin()
    raw = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c0ffee;IP=10.0.0.7"
    rc, _ = run(p, env_for("ADD", CNI_ARGS=raw), conf())
    assert rc == 0
    assert p.calls[0][1].args == {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web",
                                  "K8S_POD_INFRA_CONTAINER_ID": "c0ffee", "IP": "10.0.0.7"}


# --- stdin ------------------------------------------------------------------------------


def test_stdin_io_error():
    class Broken(io.RawIOBase):
        def read(self, *a):
            raise OSError(5, "Input/output error")

    out = io.StringIO()
    rc = run_plugin(FakePlugin(), env=env_for("ADD"), stdin=Broken(), stdout=out)
    assert rc == 1 and json.loads(out.getvalue())["code"] == 5


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]", b'"net"', b"null", b"\xff\xfe"])
def test_stdin_not_a_json_object(body):
    run_err(FakePlugin(), env_for("ADD"), body, 6)


def test_missing_cni_version_is_0_1_0():
    p = FakePlugin()
    rc, out = run(p, env_for("ADD"), conf(version=None))
    assert rc == 0
    assert p.calls[0][1].version == "0.1.0"
    assert json.loads(out)["cniVersion"] == "0.1.0"
    assert "ip4" in json.loads(out)


def test_missing_cni_version_unsupported_by_plugin():
    p = FakePlugin()
    p.supported_versions = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
    err = run_err(p, env_for("ADD"), conf(version=None), 1)
    assert "0.1.0" in err["msg"]


@pytest.mark.parametrize("version", ["9.9.9", "1.1", "v1.0.0", "0.5.0"])
def test_unsupported_version(version):
    err = run_err(FakePlugin(), env_for("ADD"), conf(version=version), 1)
    assert version in err["msg"] and "1.1.0" in err["msg"] and "0.1.0" in err["msg"]
    assert err["cniVersion"] == "1.1.0"


def test_version_not_a_string():
    run_err(FakePlugin(), env_for("ADD"), conf(version=1), 6)


@pytest.mark.parametrize("name", [None, "", "bad name!", "-net", "a/b", 42])
def test_bad_network_name(name):
    c = conf()
    if name is None:
        del c["name"]
    else:
        c["name"] = name
    run_err(FakePlugin(), env_for("ADD"), c, 7)


@pytest.mark.parametrize("typ", [None, "", 3])
def test_missing_type(typ):
    c = conf()
    if typ is None:
        del c["type"]
    else:
        c["type"] = typ
    err = run_err(FakePlugin(), env_for("ADD"), c, 7)
    assert "type" in err["msg"]


# --- verb gates -------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("cmd,minimum", [("CHECK", "0.4.0"), ("STATUS", "1.1.0"), ("GC", "1.1.0")])
def test_verb_gates(cmd, minimum, version):
    from splice.plugins.cni.version import at_least

    p = FakePlugin()
    c = conf(version=version, prevResult=RESULT | {"cniVersion": version}) if cmd == "CHECK" else conf(version)
    if cmd == "CHECK" and not at_least(version, "0.3.0"):
        c["prevResult"] = {"cniVersion": version, "ip4": {"ip": "10.0.0.2/24"}}
    if cmd == "GC":
        c["cni.dev/valid-attachments"] = []
    if at_least(version, minimum):
        rc, out = run(p, env_for(cmd), c)
        assert (rc, out) == (0, "")
        assert len(p.calls) == 1
    else:
        err = run_err(p, env_for(cmd), c, 1)
        assert cmd in err["msg"]
        assert err["cniVersion"] == version
        assert p.calls == []


# --- output -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_add_prints_result_in_config_version(version):
    rc, out = run(FakePlugin(), env_for("ADD"), conf(version))
    assert rc == 0
    res = json.loads(out)
    assert res["cniVersion"] == version
    if version in ("0.1.0", "0.2.0"):
        assert res["ip4"]["ip"] == "10.0.0.2/24" and res["ip6"]["ip"] == "fd00::2/64"
        assert "interfaces" not in res
    else:
        assert res["interfaces"][0]["name"] == "eth0"
        has_version = version in ("0.3.0", "0.3.1", "0.4.0")
        assert all(("version" in ip) == has_version for ip in res["ips"])
        assert ("mtu" in res["interfaces"][0]) == (version == "1.1.0")
        assert ("table" in res["routes"][0]) == (version == "1.1.0")


def test_add_l2_only_result_cannot_be_0_2_0():
    p = FakePlugin(result={"interfaces": [{"name": "eth0"}], "ips": [], "routes": []})
    err = run_err(p, env_for("ADD"), conf("0.2.0"), 1)
    assert err["msg"] == "cannot convert: no valid IP addresses"
    assert err["cniVersion"] == "0.2.0"


@pytest.mark.parametrize("cmd", ["DEL", "CHECK", "STATUS", "GC"])
def test_other_verbs_print_nothing(cmd):
    p = FakePlugin()
    c = conf(prevResult=RESULT | {"cniVersion": "1.1.0"}, **{"cni.dev/valid-attachments": []})
    assert run(p, env_for(cmd), c) == (0, "")
    assert p.calls[0][0] == {"DEL": "delete", "CHECK": "check", "STATUS": "status", "GC": "gc"}[cmd]


def test_invalid_plugin_result_is_an_error_not_a_traceback():
    p = FakePlugin(result={"ips": [{"address": "not-an-ip"}]})
    run_err(p, env_for("ADD"), conf(), 6)
    p = FakePlugin(result=["not", "a", "dict"])
    run_err(p, env_for("ADD"), conf(), E.INTERNAL)


# --- errors -----------------------------------------------------------------------------


def test_cni_error_passes_through(capsys):
    p = FakePlugin(raises=CniError(E.TRY_AGAIN_LATER, "busy", "store locked"))
    rc, out = run(p, env_for("ADD"), conf("0.4.0"))
    assert rc == 1
    assert json.loads(out) == {"cniVersion": "0.4.0", "code": 11, "msg": "busy", "details": "store locked"}
    err = capsys.readouterr().err
    assert "busy" in err and "Traceback" not in err


def test_driver_errors_are_mapped():
    from splice.plugins.errors import ConfigError, InterfaceExists

    err = run_err(FakePlugin(raises=ConfigError("bad mtu", "mtu: 'big'")), env_for("ADD"), conf(), 7)
    assert err["msg"] == "bad mtu" and err["details"] == "mtu: 'big'"
    run_err(FakePlugin(raises=InterfaceExists("eth0 exists")), env_for("ADD"), conf(), E.INTERFACE_EXISTS)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyError("x"), ZeroDivisionError(), KeyboardInterrupt()])
def test_unexpected_exception_is_internal_error(exc, capsys):
    err = run_err(FakePlugin(raises=exc), env_for("DEL"), conf(), E.INTERNAL)
    assert "Traceback" not in capsys.readouterr().err


def test_debug_prints_traceback_to_stderr(capsys):
    env = env_for("DEL", SPLICE_DEBUG="1")
    rc, out = run(FakePlugin(raises=RuntimeError("boom")), env, conf())
    assert rc == 1 and "Traceback" not in out
    assert "Traceback" in capsys.readouterr().err


def test_error_version_is_config_version_when_known():
    err = run_err(FakePlugin(), env_for("ADD", CNI_ARGS="FOO=1"), conf("0.3.1"), 4)
    assert err["cniVersion"] == "0.3.1"
    err = run_err(FakePlugin(), env_for("ADD"), conf("0.3.1", name="bad name"), 7)
    assert err["cniVersion"] == "0.3.1"
    err = run_err(FakePlugin(), env_for("ADD"), b"{", 6)
    assert err["cniVersion"] == "1.1.0"


# --- prevResult -------------------------------------------------------------------------

PREV = {
    "0.1.0": {"ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]}},
    "0.2.0": {"ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]}},
    "0.3.0": {"interfaces": [{"name": "eth0"}],
              "ip": [{"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}],
              "routes": [{"dst": "0.0.0.0/0"}]},
}
for _v in ("0.3.1", "0.4.0"):
    PREV[_v] = {"interfaces": [{"name": "eth0"}],
                "ips": [{"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0"}]}
for _v in ("1.0.0", "1.1.0"):
    PREV[_v] = {"interfaces": [{"name": "eth0"}],
                "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0"}]}


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("own_version", [True, False])
def test_prev_result_parsed_from_each_version(version, own_version):
    p = FakePlugin()
    prev = dict(PREV[version])
    if own_version:
        prev["cniVersion"] = version
    cfg_version = version if not own_version else "1.1.0"
    rc, out = run(p, env_for("DEL"), conf(cfg_version, prevResult=prev))
    assert rc == 0, out
    pr = p.calls[0][1].prev_result
    assert pr["cniVersion"] == "1.1.0"
    assert pr["ips"][0]["address"] == "10.0.0.2/24" and pr["ips"][0]["gateway"] == "10.0.0.1"
    assert "version" not in pr["ips"][0]
    assert pr["routes"] == [{"dst": "0.0.0.0/0"}]
    assert len(pr["interfaces"]) == (0 if version in ("0.1.0", "0.2.0") else 1)


@pytest.mark.parametrize("prev,code", [
    ("a string", 6),
    ([1], 6),
    ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/24"}]}, 6),
    ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3"}]}, 6),
    ({"cniVersion": "1.0.0", "ips": "10.0.0.3/24"}, 6),
    ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/24", "interface": 1}]}, 7),
    ({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "10.0.0.3/24", "interface": -1}]}, 7),
    ({"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]}, 6),
    ({"cniVersion": "0.2.0", "ip4": {"ip": "fd00::1/64"}}, 6),
    ({"cniVersion": "7.0.0", "ips": []}, 1),
    ({"cniVersion": 1, "ips": []}, 6),
])
def test_malformed_prev_result(prev, code):
    p = FakePlugin()
    err = run_err(p, env_for("CHECK"), conf("1.0.0", prevResult=prev), code)
    assert "prevResult" in err["msg"]
    assert p.calls == []


def test_null_prev_result_is_none():
    p = FakePlugin()
    assert run(p, env_for("DEL"), conf(prevResult=None)) == (0, "")
    assert p.calls[0][1].prev_result is None


# --- GC keep-list -----------------------------------------------------------------------


def test_valid_attachments_union_of_both_keys():
    cfg = {"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
           "cni.dev/attachments": [{"containerID": "b", "ifname": "eth1"}]}
    assert valid_attachments(cfg) == {("a", "eth0"), ("b", "eth1")}
    assert valid_attachments({"cni.dev/valid-attachments": None}) == set()
    assert valid_attachments({"cni.dev/attachments": []}) == set()


@pytest.mark.parametrize("cfg", [{}, {"cni.dev/valid-attachments": {}},
                                 {"cni.dev/valid-attachments": [{"containerID": "a"}]},
                                 {"cni.dev/valid-attachments": ["a"]}])
def test_valid_attachments_rejected(cfg):
    with pytest.raises(CniError) as exc:
        valid_attachments(cfg)
    assert exc.value.code == 7
    p = FakePlugin()
    run_err(p, env_for("GC"), conf(**cfg), 7)
    assert p.calls == []


# --- plugin netns == CNI_NETNS (lib code 8) --------------------------------------------


def test_own_netns_rejected():
    p = FakePlugin()
    run_err(p, env_for("ADD", CNI_NETNS="/proc/self/ns/net"), conf(), 8)
    assert p.calls == []
    rc, _ = run(p, env_for("ADD", CNI_NETNS="/proc/self/ns/net", CNI_NETNS_OVERRIDE="true"), conf())
    assert rc == 0


# --- the executables ----------------------------------------------------------------------

FAKE_MODULE = '''
from splice.plugins.cni.version import ALL_VERSIONS
class Fake:
    name = "fake"; supported_versions = ALL_VERSIONS; cni_args = frozenset()
'''


def _python(tmp_path, code: str, env_extra: dict, stdin: bytes) -> subprocess.CompletedProcess:
    (tmp_path / "fakemod.py").write_text(FAKE_MODULE)
    env = {**os.environ, **env_extra,
           "PYTHONPATH": os.pathsep.join([str(tmp_path)] + [os.path.join(REPO, d) for d in ("plugins", "ipam", "libnet")])}
    return subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, env=env, timeout=30)


NEW_HEAVY = ("import sys; new = set(sys.modules) - before; "
             "heavy = sorted(m for m in new if m.split('.')[0] in HEAVY or m in HEAVY); "
             "print(heavy, file=sys.stderr); sys.exit(rc)")


def test_version_through_run_plugin_is_light(tmp_path):
    """VERSION via run_plugin in a fresh interpreter: no types/ipaddress/subprocess loaded."""
    code = ("import sys; before = set(sys.modules); from splice.plugins.cni.skel import run_plugin; import fakemod; "
            "HEAVY = ('ipaddress', 'pyroute2', 'subprocess', 'sqlite3', 'traceback', 'splice.plugins.cni.types', "
            "'splice.plugins.cni.delegate'); rc = run_plugin(fakemod.Fake()); " + NEW_HEAVY)
    p = _python(tmp_path, code, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"cniVersion": "0.4.0", "supportedVersions": list(ALL_VERSIONS)}
    assert p.stderr.decode().strip() == "[]"


def test_entry_point_version_fast_path_skips_skel(tmp_path):
    code = ("import sys; before = set(sys.modules); from splice.plugins.cni import main; "
            "HEAVY = ('dataclasses', 'ipaddress', 'pyroute2', 'subprocess', 'sqlite3', 'splice.plugins.cni.skel', "
            "'splice.plugins.cni.types'); rc = main._run('fakemod', 'Fake'); " + NEW_HEAVY)
    p = _python(tmp_path, code, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"cniVersion": "1.0.0", "supportedVersions": list(ALL_VERSIONS)}
    assert p.stderr.decode().strip() == "[]"


def test_entry_point_runs_skel_for_other_commands(tmp_path):
    code = "import sys; from splice.plugins.cni import main; sys.exit(main._run('fakemod', 'Fake'))"
    p = _python(tmp_path, code, {"CNI_COMMAND": "ADD"}, b"{}")
    assert p.returncode == 1
    assert json.loads(p.stdout)["code"] == 4


def test_entry_point_plugin_import_failure_is_json(tmp_path):
    code = "import sys; from splice.plugins.cni import main; sys.exit(main._run('no_such_module_xyz', 'X'))"
    p = _python(tmp_path, code, {"CNI_COMMAND": "ADD"}, b"{}")
    assert p.returncode == 1
    err = json.loads(p.stdout)
    assert err["code"] == E.INTERNAL and "no_such_module_xyz" in err["details"]
    assert b"Traceback" not in p.stdout + p.stderr
