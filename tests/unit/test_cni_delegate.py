"""Delegation to plugins in CNI_PATH, and the IPAM dispatcher (in-process vs. delegated)."""

from __future__ import annotations

import io
import json
import os
import sys
import types as pytypes

import pytest

import splice.plugins.cni as cni_pkg
from splice.plugins.cni import delegate as dmod
from splice.plugins.cni import ipam
from splice.plugins.cni.delegate import delegate, find_in_path
from splice.plugins.cni.errors import CniError, DELEGATE_FAILED
from splice.plugins.cni.skel import CmdArgs, run_plugin
from splice.plugins.cni.version import ALL_VERSIONS

FAKE = r'''#!/usr/bin/python3
import json, os, sys, time
data = sys.stdin.buffer.read()
cmd = os.environ.get("CNI_COMMAND")
mode = os.environ.get("FAKE_MODE", "ok")
rec = os.environ.get("FAKE_RECORD")
if rec:
    with open(rec, "a") as f:
        f.write(json.dumps({"argv": sys.argv, "env": dict(os.environ), "stdin": data.decode()}) + "\n")
sys.stderr.write("fake-ipam: %s %s\n" % (cmd, mode))
version = os.environ.get("FAKE_VERSION", "0.2.0")
if mode == "ok":
    if cmd == "ADD":
        if version in ("0.1.0", "0.2.0"):
            res = {"cniVersion": version, "ip4": {"ip": "10.0.0.5/24", "gateway": "10.0.0.1",
                   "routes": [{"dst": "0.0.0.0/0"}]}, "dns": {"nameservers": ["10.0.0.53"]}}
        else:
            ip = {"address": "10.0.0.5/24", "gateway": "10.0.0.1"}
            if version in ("0.3.0", "0.3.1", "0.4.0"):
                ip["version"] = "4"
            res = {"cniVersion": version, "ips": [ip], "routes": [{"dst": "0.0.0.0/0"}],
                   "dns": {"nameservers": ["10.0.0.53"]}}
        if version == "none":
            res.pop("cniVersion")
        print(json.dumps(res))
    sys.exit(0)
if mode == "fail":
    print(json.dumps({"cniVersion": "1.0.0", "code": 11, "msg": "store busy", "details": "lock held"}))
    sys.exit(1)
if mode == "fail-stderr":
    sys.stderr.write(json.dumps({"code": 102, "msg": "address taken"}))
    sys.exit(1)
if mode == "garbage":
    print("panic: runtime error: invalid memory address")
    sys.stderr.write("goroutine 1 [running]\n")
    sys.exit(2)
if mode == "bad-json":
    print("{not json")
    sys.exit(0)
if mode == "bad-result":
    print(json.dumps({"cniVersion": "1.0.0", "ips": [{"address": "nonsense"}]}))
    sys.exit(0)
if mode == "sleep":
    time.sleep(30)
sys.exit(3)
'''


@pytest.fixture
def cni_bin(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    exe = d / "fake-ipam"
    exe.write_text(FAKE)
    exe.chmod(0o755)
    (d / "not-exec").write_text("#!/bin/sh\n")
    (d / "a-dir").mkdir()
    return d


def make_args(cni_bin, tmp_path, command="ADD", version="1.0.0", mode="ok", path=None, **env_extra) -> CmdArgs:
    config = {"cniVersion": version, "name": "net1", "type": "upper",
              "ipam": {"type": "fake-ipam", "ranges": [[{"subnet": "10.0.0.0/24"}]]}}
    raw = json.dumps(config, indent=2).encode() + b"\n"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_CONTAINERID": "c1",
           "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0", "CNI_PATH": f"/nonexistent:{cni_bin}",
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web", "FAKE_MODE": mode,
           "FAKE_RECORD": str(tmp_path / "record.jsonl"), **env_extra}
    return CmdArgs(command=command, container_id="c1", netns="/run/netns/x", ifname="eth0",
                   args={"K8S_POD_NAME": "web"}, path=path if path is not None else ["/nonexistent", str(cni_bin)],
                   stdin=raw, config=config, version=version, prev_result=None, env=env)


def records(tmp_path) -> list[dict]:
    p = tmp_path / "record.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


# --- find_in_path -----------------------------------------------------------------------


def test_find_in_path(cni_bin):
    assert find_in_path("fake-ipam", ["/nonexistent", str(cni_bin)]) == str(cni_bin / "fake-ipam")
    assert find_in_path("fake-ipam", f"/nonexistent:{cni_bin}") == str(cni_bin / "fake-ipam")


def test_find_in_path_first_match_wins(cni_bin, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "fake-ipam").write_text(FAKE)
    (other / "fake-ipam").chmod(0o755)
    assert find_in_path("fake-ipam", [str(other), str(cni_bin)]) == str(other / "fake-ipam")


@pytest.mark.parametrize("name", ["missing", "not-exec", "a-dir"])
def test_find_in_path_missing(cni_bin, name):
    with pytest.raises(CniError) as exc:
        find_in_path(name, [str(cni_bin)])
    assert exc.value.code == DELEGATE_FAILED
    assert name in exc.value.msg and "CNI_PATH" in exc.value.msg


def test_find_in_path_empty_path():
    with pytest.raises(CniError) as exc:
        find_in_path("host-local", [])
    assert "CNI_PATH" in exc.value.msg


@pytest.mark.parametrize("name", ["", "../fake-ipam", "/bin/sh", ".", ".."])
def test_find_in_path_rejects_paths(cni_bin, name):
    with pytest.raises(CniError) as exc:
        find_in_path(name, [str(cni_bin)])
    assert exc.value.code == 7


# --- delegate ---------------------------------------------------------------------------


@pytest.mark.parametrize("result_version", ALL_VERSIONS)
def test_delegate_add_returns_canonical(cni_bin, tmp_path, result_version):
    a = make_args(cni_bin, tmp_path, FAKE_VERSION=result_version)
    res = delegate("ADD", "fake-ipam", a)
    assert res == {"cniVersion": "1.1.0", "interfaces": [],
                   "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}],
                   "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.0.0.53"]}}


def test_delegate_result_without_version_uses_config_version(cni_bin, tmp_path):
    a = make_args(cni_bin, tmp_path, version="1.0.0", FAKE_VERSION="none")
    assert delegate("ADD", "fake-ipam", a)["ips"] == [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}]


def test_delegate_passes_env_and_complete_stdin(cni_bin, tmp_path, capfd):
    a = make_args(cni_bin, tmp_path, command="ADD")
    delegate("DEL", "fake-ipam", a)
    (rec,) = records(tmp_path)
    assert rec["stdin"].encode() == a.stdin  # byte for byte
    assert rec["argv"] == [str(cni_bin / "fake-ipam")]
    assert rec["env"]["CNI_COMMAND"] == "DEL"
    for key in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH", "CNI_ARGS"):
        assert rec["env"][key] == a.env[key]
    assert "fake-ipam: DEL ok" in capfd.readouterr().err  # delegate stderr reaches ours


@pytest.mark.parametrize("command", ["DEL", "CHECK", "STATUS", "GC"])
def test_delegate_non_add_returns_none(cni_bin, tmp_path, command):
    assert delegate(command, "fake-ipam", make_args(cni_bin, tmp_path, command=command)) is None
    assert records(tmp_path)[0]["env"]["CNI_COMMAND"] == command


def test_delegate_error_code_preserved(cni_bin, tmp_path):
    with pytest.raises(CniError) as exc:
        delegate("ADD", "fake-ipam", make_args(cni_bin, tmp_path, mode="fail"))
    assert (exc.value.code, exc.value.msg, exc.value.details) == (11, "store busy", "lock held")


def test_delegate_error_json_on_stderr(cni_bin, tmp_path):
    with pytest.raises(CniError) as exc:
        delegate("DEL", "fake-ipam", make_args(cni_bin, tmp_path, mode="fail-stderr"))
    assert (exc.value.code, exc.value.msg) == (102, "address taken")


def test_delegate_garbage_output(cni_bin, tmp_path):
    with pytest.raises(CniError) as exc:
        delegate("ADD", "fake-ipam", make_args(cni_bin, tmp_path, mode="garbage"))
    assert exc.value.code == DELEGATE_FAILED
    assert "exit status 2" in exc.value.msg
    assert "panic: runtime error" in exc.value.details and "goroutine 1" in exc.value.details


def test_delegate_unparseable_add_result(cni_bin, tmp_path):
    with pytest.raises(CniError) as exc:
        delegate("ADD", "fake-ipam", make_args(cni_bin, tmp_path, mode="bad-json"))
    assert exc.value.code == DELEGATE_FAILED


def test_delegate_invalid_add_result(cni_bin, tmp_path):
    with pytest.raises(CniError) as exc:
        delegate("ADD", "fake-ipam", make_args(cni_bin, tmp_path, mode="bad-result"))
    assert exc.value.code == 6 and "fake-ipam" in exc.value.msg


def test_delegate_timeout(cni_bin, tmp_path, monkeypatch):
    monkeypatch.setattr(dmod, "TIMEOUT_S", 0.5)
    with pytest.raises(CniError) as exc:
        delegate("ADD", "fake-ipam", make_args(cni_bin, tmp_path, mode="sleep"))
    assert exc.value.code == DELEGATE_FAILED and "timed out" in exc.value.msg


def test_delegate_missing_binary(cni_bin, tmp_path):
    with pytest.raises(CniError) as exc:
        delegate("ADD", "host-local", make_args(cni_bin, tmp_path))
    assert exc.value.code == DELEGATE_FAILED and "host-local" in exc.value.msg


def test_delegate_exec_failure(cni_bin, tmp_path):
    bad = cni_bin / "bad-interp"
    bad.write_text("#!/nonexistent/interpreter\n")
    bad.chmod(0o755)
    with pytest.raises(CniError) as exc:
        delegate("ADD", "bad-interp", make_args(cni_bin, tmp_path))
    assert exc.value.code == DELEGATE_FAILED


# --- ipam dispatcher --------------------------------------------------------------------


@pytest.fixture
def fake_splice_ipam(monkeypatch):
    calls: list[tuple[str, CmdArgs]] = []
    mod = pytypes.ModuleType("splice.plugins.cni.ipam_plugin")

    def rec(name, ret=None):
        def f(a):
            calls.append((name, a))
            return ret
        return f

    mod.ipam_add = rec("add", {"cniVersion": "1.1.0", "interfaces": [], "ips": [{"address": "10.9.0.2/24"}],
                               "routes": [], "dns": {}})
    mod.ipam_del = rec("del", ["lease"])
    mod.ipam_check = rec("check")
    mod.ipam_status = rec("status")
    mod.ipam_gc = rec("gc")
    monkeypatch.setitem(sys.modules, "splice.plugins.cni.ipam_plugin", mod)
    monkeypatch.setattr(cni_pkg, "ipam_plugin", mod, raising=False)
    return calls


def test_ipam_in_process(fake_splice_ipam, cni_bin, tmp_path):
    a = make_args(cni_bin, tmp_path)
    a.config["ipam"]["type"] = "splice-ipam"
    assert ipam.ipam_add(a)["ips"] == [{"address": "10.9.0.2/24"}]
    assert ipam.ipam_del(a) == ["lease"]
    ipam.ipam_check(a)
    ipam.ipam_status(a)
    ipam.ipam_gc(a)
    assert [c[0] for c in fake_splice_ipam] == ["add", "del", "check", "status", "gc"]
    assert all(c[1] is a for c in fake_splice_ipam)
    assert records(tmp_path) == []  # nothing executed


def test_ipam_delegated(fake_splice_ipam, cni_bin, tmp_path):
    a = make_args(cni_bin, tmp_path)
    assert ipam.ipam_add(a)["ips"] == [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}]
    assert ipam.ipam_del(a) == []
    ipam.ipam_check(a)
    ipam.ipam_status(a)
    ipam.ipam_gc(a)
    assert [r["env"]["CNI_COMMAND"] for r in records(tmp_path)] == ["ADD", "DEL", "CHECK", "STATUS", "GC"]
    assert fake_splice_ipam == []


def test_ipam_delegated_error_propagates(cni_bin, tmp_path):
    with pytest.raises(CniError) as exc:
        ipam.ipam_del(make_args(cni_bin, tmp_path, mode="fail"))
    assert exc.value.code == 11


@pytest.mark.parametrize("section", [None, {}, {"ranges": []}, {"type": ""}, {"type": 5}, "host-local"])
def test_ipam_type_missing(cni_bin, tmp_path, section):
    from splice.plugins.errors import ConfigError

    a = make_args(cni_bin, tmp_path)
    if section is None:
        del a.config["ipam"]
    else:
        a.config["ipam"] = section
    for fn in (ipam.ipam_add, ipam.ipam_del, ipam.ipam_check, ipam.ipam_status, ipam.ipam_gc):
        with pytest.raises(ConfigError):
            fn(a)


def test_has_ipam():
    assert not ipam.has_ipam({})
    assert not ipam.has_ipam({"ipam": {}})
    assert ipam.has_ipam({"ipam": {"type": "x"}})
    assert ipam.has_ipam({"ipam": {"ranges": []}})  # present but broken: ipam_* will say why


# --- end to end through run_plugin ------------------------------------------------------


class Upper:
    name = "upper"
    supported_versions = tuple(ALL_VERSIONS)
    cni_args = frozenset()

    def add(self, a):
        r = ipam.ipam_add(a)
        r["interfaces"] = [{"name": a.ifname, "sandbox": a.netns}]
        for ip in r["ips"]:
            ip["interface"] = 0
        return r

    def delete(self, a):
        ipam.ipam_del(a)

    check = status = gc = delete


@pytest.mark.parametrize("config_version", ALL_VERSIONS)
def test_upper_plugin_with_delegated_ipam(cni_bin, tmp_path, config_version):
    base = make_args(cni_bin, tmp_path, version=config_version, FAKE_VERSION=config_version)
    env = {**base.env, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web"}
    out = io.StringIO()
    rc = run_plugin(Upper(), env=env, stdin=io.BytesIO(base.stdin), stdout=out)
    assert rc == 0, out.getvalue()
    res = json.loads(out.getvalue())
    assert res["cniVersion"] == config_version
    if config_version in ("0.1.0", "0.2.0"):
        assert res["ip4"]["ip"] == "10.0.0.5/24"
    else:
        assert res["ips"][0]["address"] == "10.0.0.5/24" and res["interfaces"][0]["name"] == "eth0"
    assert records(tmp_path)[0]["stdin"].encode() == base.stdin


def test_upper_plugin_delegate_failure_is_reported(cni_bin, tmp_path):
    base = make_args(cni_bin, tmp_path, mode="fail")
    out = io.StringIO()
    rc = run_plugin(Upper(), env=base.env, stdin=io.BytesIO(base.stdin), stdout=out)
    assert rc == 1
    assert json.loads(out.getvalue()) == {"cniVersion": "1.0.0", "code": 11, "msg": "store busy",
                                          "details": "lock held"}
