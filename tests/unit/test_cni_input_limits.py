"""Request limits and the well-known config objects (issue 9 item 8): a bad request gets a
spec code (6 decoding, 7 config, 4 environment) and a clear message, never code 100."""

from __future__ import annotations

import io
import json

import pytest

from splice.plugins.cni import skel
from splice.plugins.cni.skel import MAX_NESTING, MAX_REQUEST_BYTES, json_depth_exceeds

from .test_cni_skel import FakePlugin, conf, env_for, run, run_err


@pytest.mark.parametrize("body", [
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"cniVersion": "1.0.0", "name": "n", "type": "t", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"cniVersion": "1.0.0", "name": "n", "type": "t", "x": ' + b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1) + b"}",
])
def test_deep_nesting_is_a_decoding_failure(body):
    p = FakePlugin()
    err = run_err(p, env_for("ADD"), body, 6)
    assert "nested" in err["msg"], err
    assert p.calls == []


def test_nesting_up_to_the_limit_is_fine():
    c = conf()
    deep: object = 1
    for _ in range(MAX_NESTING - 1):  # the config object is one level
        deep = [deep]
    c["x"] = deep
    rc, out = run(FakePlugin(), env_for("ADD"), c)
    assert rc == 0, out


def test_brackets_inside_strings_do_not_count():
    c = conf(x="[" * 10_000, y='{"\\"[[[' * 1000)
    assert not json_depth_exceeds(json.dumps(c).encode())
    rc, out = run(FakePlugin(), env_for("ADD"), c)
    assert rc == 0, out


def test_recursion_error_while_decoding_is_code_6(monkeypatch):
    """The decoder's own recursion limit is a safety net behind the depth check."""
    monkeypatch.setattr(skel, "json_depth_exceeds", lambda raw, limit=0: False)
    err = run_err(FakePlugin(), env_for("ADD"), b"[" * 100_000 + b"]" * 100_000, 6)
    assert "nested too deeply" in err["msg"]


@pytest.mark.parametrize("size", [MAX_REQUEST_BYTES + 1, 70 << 20])
def test_request_over_the_cap_is_a_decoding_failure(size):
    c = json.dumps(conf(pad="")).encode()
    body = c[:-2] + b"x" * (size - len(c)) + c[-2:]
    assert len(body) == size
    stdin = io.BytesIO(body)
    p = FakePlugin()
    out = io.StringIO()
    rc = skel.run_plugin(p, env=env_for("ADD"), stdin=stdin, stdout=out)
    err = json.loads(out.getvalue())
    assert rc == 1 and err["code"] == 6 and "too large" in err["msg"] and "1 MiB" in err["details"], err
    assert stdin.tell() == MAX_REQUEST_BYTES + 1  # not read to the end
    assert p.calls == []


def test_request_at_the_cap_is_read():
    c = json.dumps(conf(pad="")).encode()
    body = c[:-2] + b"x" * (MAX_REQUEST_BYTES - len(c)) + c[-2:]
    assert len(body) == MAX_REQUEST_BYTES
    rc, out = run(FakePlugin(), env_for("ADD"), body)
    assert rc == 0, out[:200]


def test_short_reads_are_joined():
    """A raw stream answers a read with what one syscall gave: the skel reads to EOF."""
    data = json.dumps(conf()).encode()

    class Trickle(io.RawIOBase):
        pos = 0

        def readable(self):
            return True

        def read(self, n=-1):
            chunk = data[self.pos:self.pos + 7]
            self.pos += len(chunk)
            return chunk

    out = io.StringIO()
    assert skel.run_plugin(FakePlugin(), env=env_for("ADD"), stdin=Trickle(), stdout=out) == 0, out.getvalue()


def test_text_stdin_still_works():
    out = io.StringIO()
    assert skel.run_plugin(FakePlugin(), env=env_for("ADD"), stdin=io.StringIO(json.dumps(conf())), stdout=out) == 0


@pytest.mark.parametrize("cmd", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
@pytest.mark.parametrize("key,value,needle", [
    ("runtimeConfig", "x", "runtimeConfig must be an object, got a string"),
    ("runtimeConfig", [1], "runtimeConfig must be an object, got an array"),
    ("runtimeConfig", 5, "runtimeConfig must be an object, got a number"),
    ("runtimeConfig", True, "runtimeConfig must be an object, got a boolean"),
    ("args", "x", "args must be an object, got a string"),
    ("args", [], "args must be an object, got an array"),
    ("args", {"cni": "x"}, "args.cni must be an object, got a string"),
    ("args", {"cni": [1]}, "args.cni must be an object, got an array"),
])
def test_wrong_typed_conventions_are_config_errors(cmd, key, value, needle):
    p = FakePlugin()
    c = conf(**{key: value, "cni.dev/valid-attachments": []})
    err = run_err(p, env_for(cmd), c, 7)
    assert needle in err["msg"], err
    assert err["cniVersion"] == "1.1.0"
    assert p.calls == []


@pytest.mark.parametrize("key,value", [("runtimeConfig", None), ("runtimeConfig", {}), ("args", None),
                                       ("args", {"cni": None}), ("args", {"other": "x"}),
                                       ("args", {"cni": {"ips": ["10.0.0.2"]}})])
def test_well_typed_conventions_pass(key, value):
    rc, out = run(FakePlugin(), env_for("ADD"), conf(**{key: value}))
    assert rc == 0, out


def test_error_answers_in_the_config_version():
    err = run_err(FakePlugin(), env_for("ADD"), conf(version="0.4.0", args="x"), 7)
    assert err["cniVersion"] == "0.4.0"


def test_depth_check_is_cheap_for_real_configs():
    import time

    raw = json.dumps({**conf(), "prevResult": {"ips": [{"address": "10.0.0.2/24"}] * 20}}).encode()
    t0 = time.perf_counter()
    for _ in range(1000):
        json_depth_exceeds(raw)
    assert time.perf_counter() - t0 < 0.05


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant):
    body = json.dumps(conf())[:-1] + f', "mtu": {constant}}}'
    p = FakePlugin()
    err = run_err(p, env_for("ADD"), body, 6)
    assert f"{constant.lstrip('-')} is not valid JSON" in err["msg"] or f"{constant} is not valid JSON" in err["msg"]
    assert p.calls == []


@pytest.mark.parametrize("text", ["\\ud800", "a\\udcffb", "\\uDBFF", "x\\udc00"])
def test_unpaired_surrogates_are_a_decoding_failure(text):
    body = json.dumps(conf())[:-1] + f', "bridge": "{text}"}}'
    p = FakePlugin()
    err = run_err(p, env_for("ADD"), body, 6)
    assert "unpaired surrogate" in err["msg"], err
    assert p.calls == []


def test_surrogate_pairs_and_escaped_backslashes_are_fine():
    body = json.dumps(conf())[:-1] + ', "x": "\\ud83d\\ude00", "y": "\\\\ud800"}'
    rc, out = run(FakePlugin(), env_for("ADD"), body)
    assert rc == 0, out


def test_text_stdin_with_surrogates_is_code_6():
    out = io.StringIO()
    rc = skel.run_plugin(FakePlugin(), env=env_for("ADD"), stdin=io.StringIO('{"name": "\udcff"}'), stdout=out)
    assert rc == 1 and json.loads(out.getvalue())["code"] == 6


@pytest.mark.parametrize("ifname", ["eth\udcff", "\ud800"])
def test_ifname_that_is_not_utf8_is_code_4(ifname):
    err = run_err(FakePlugin(), env_for("ADD", CNI_IFNAME=ifname), conf(), 4)
    assert "CNI_IFNAME" in err["msg"] and "UTF-8" in err["msg"], err


@pytest.mark.parametrize("dns,needle", [({"domain": "a\u0000b"}, "dns.domain"),
                                        ({"nameservers": ["10.0.0.1\n"]}, "dns.nameservers[0]"),
                                        ({"search": ["a", "b\x7f"]}, "dns.search[1]"),
                                        ({"options": ["ndots:5\r"]}, "dns.options[0]")])
def test_config_dns_control_characters(dns, needle):
    from splice.plugins.cni.errors import CniError
    from splice.plugins.cni.types import config_dns

    with pytest.raises(CniError) as e:
        config_dns(dns)
    assert e.value.code == 6 and needle in e.value.msg and "invalid network config" in e.value.msg
    assert config_dns({"domain": "example.org", "search": ["a.example"], "nameservers": ["10.0.0.1"]})
