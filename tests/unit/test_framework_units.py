"""The driver framework without a kernel: the generic CNI main-plugin adapter on a fake
driver, the error table, owner names, Steps, and the defects of issue 8 that need no root
(5: a closed Netns; 6: every failure reported; 7: one ifname validator, in bytes)."""

from __future__ import annotations

import hashlib
import io
import json

import pytest

from splice.ipam import errors as ie
from splice.libnet import errors as ne
from splice.plugins import driver as framework
from splice.plugins import errors as pe
from splice.plugins import owners
from splice.plugins.cni import ipam as ipamc
from splice.plugins.cni.main_plugin import MainPlugin
from splice.plugins.cni.skel import run_plugin
from splice.plugins.model import Interface, Wiring

CALLS: list[tuple] = []


class FakeDriver:
    """A framework driver that records calls and fails on demand."""

    kind = "fake"
    fail: dict[str, BaseException] = {}

    @staticmethod
    def parse_config(raw: dict) -> dict:
        if raw.get("bad"):
            raise pe.ConfigError("bad is not allowed")
        return raw

    def __init__(self, cfg, host) -> None:
        self.cfg, self.host = cfg, host

    installs_default_routes = False

    def _maybe_fail(self, verb):
        CALLS.append((verb,))
        if verb in self.fail:
            raise self.fail[verb]

    def attach(self, att, ips, routes, placement=framework.IN_SANDBOX):
        self._maybe_fail("attach")
        return Wiring(interfaces=[Interface("eth0", "02:00:00:00:00:01", att.netns)],
                      ips=[type(ip)(address=ip.address, gateway=ip.gateway, interface=0) for ip in ips],
                      routes=list(routes))

    def detach(self, att, ips):
        self._maybe_fail("detach")

    def gc(self, network, valid):
        self._maybe_fail("gc")

    def status(self):
        self._maybe_fail("status")

    def check(self, att, expected, own=None):
        self._maybe_fail("check")


class FakePlugin(MainPlugin):
    name = "splice-fake"
    driver_kind = "fake"


@pytest.fixture(autouse=True)
def fake(monkeypatch):
    monkeypatch.setitem(framework.DRIVERS, "fake", f"{__name__}:FakeDriver")
    monkeypatch.setattr(FakeDriver, "fail", {})
    CALLS.clear()
    released: list = []
    monkeypatch.setattr(ipamc, "ipam_add", lambda a: {"cniVersion": "1.1.0", "ips": [{"address": "10.9.0.2/24"}]})
    monkeypatch.setattr(ipamc, "ipam_del", lambda a: released.append(a.container_id) or [])
    monkeypatch.setattr(ipamc, "ipam_gc", lambda a: None)
    return released


def call(cmd: str, conf: dict, version: str = "1.0.0", **env) -> tuple[int, dict | None]:
    e = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/spt-none", "CNI_IFNAME": "eth0",
         "CNI_PATH": "/nonexistent"}
    e.update(env)
    stdin = {"cniVersion": version, "name": "net1", "type": "splice-fake", "ipam": {"type": "splice-ipam"}, **conf}
    out = io.StringIO()
    rc = run_plugin(FakePlugin(), env=e, stdin=io.BytesIO(json.dumps(stdin).encode()), stdout=out)
    text = out.getvalue()
    return rc, (json.loads(text) if text.strip() else None)


def test_add_renders_through_the_adapter():
    rc, out = call("ADD", {})
    assert rc == 0, out
    assert out["ips"] == [{"address": "10.9.0.2/24", "interface": 0}]
    assert out["cniVersion"] == "1.0.0"


def test_bad_driver_config_fails_before_ipam(fake):
    rc, out = call("ADD", {"bad": True})
    assert rc == 1 and out["code"] == 7 and "bad is not allowed" in out["msg"]
    assert CALLS == [] and fake == []


def test_bad_config_dns_fails_before_ipam(fake):
    rc, out = call("ADD", {"dns": "8.8.8.8"})
    assert rc == 1 and out["code"] == 6, out
    assert CALLS == [] and fake == []


def test_malformed_ipam_result_is_released_before_the_kernel(fake, monkeypatch):
    monkeypatch.setattr(ipamc, "ipam_add", lambda a: {"ips": [{"address": "10.9.0.2/24"}], "dns": {"nameservers": "x"}})
    rc, out = call("ADD", {})
    assert rc == 1 and out["code"] == 6, out
    assert CALLS == [] and fake == ["c1"]


def test_a_result_the_version_cannot_express_is_undone(fake, monkeypatch):
    """A 0.2.0 result needs an address: an IPAM that hands out none makes one that does
    not convert, after the driver has wired the interface."""
    monkeypatch.setattr(ipamc, "ipam_add", lambda a: {"ips": []})
    rc, out = call("ADD", {}, version="0.2.0")
    assert rc == 1 and out["code"] == 1 and "cannot convert" in out["msg"], out
    assert CALLS == [("attach",), ("detach",)] and fake == ["c1"]


def test_failed_ipam_rollback_is_reported_not_swallowed(monkeypatch):
    """Defect 6: ADD's IPAM release failing after a driver failure is in the details."""
    FakeDriver.fail = {"attach": pe.KernelError("attach failed")}

    def release(a):
        raise ie.StoreError("store is read-only")

    monkeypatch.setattr(ipamc, "ipam_del", release)
    rc, out = call("ADD", {})
    assert rc == 1 and out["code"] == 103 and out["msg"] == "attach failed"
    assert "IPAM release: store is read-only" in out["details"]


def test_gc_reports_every_failure(monkeypatch):
    """Defect 6: GC continues past failures and reports all of them, not the first only."""
    FakeDriver.fail = {"gc": pe.KernelError("links: EPERM")}

    def ipam_gc(a):
        raise ie.StoreError("ipam store corrupt")

    monkeypatch.setattr(ipamc, "ipam_gc", ipam_gc)
    rc, out = call("GC", {"cni.dev/valid-attachments": []}, version="1.1.0")
    assert rc == 1, out
    assert "2 failures" in out["msg"]
    assert "links: EPERM" in out["details"] and "ipam store corrupt" in out["details"]


def test_del_releases_ipam_even_when_the_driver_fails(fake):
    FakeDriver.fail = {"detach": pe.KernelError("veth delete failed")}
    rc, out = call("DEL", {})
    assert rc == 1 and "veth delete failed" in out["msg"]
    assert fake == ["c1"]


@pytest.mark.parametrize("name,ok", [
    ("eth0", True),
    ("a" * 15, True),
    ("a" * 16, False),
    ("é" * 7, True),  # 14 bytes
    ("é" * 8, False),  # 8 characters, 16 bytes: the kernel refuses it
    ("e\u00e9" * 5, True),  # 15 bytes
])
def test_ifname_is_measured_in_bytes_code_4(name, ok):
    """Defect 7: one validator (bytes, as the kernel), code 4, in skel and in drivers."""
    rc, out = call("DEL", {}, CNI_IFNAME=name)
    if ok:
        assert rc == 0, out
    else:
        assert rc == 1 and out["code"] == 4 and "bytes" in out["msg"], out


def test_closed_netns_raises_instead_of_running_here(tmp_path):
    """Defect 5: a closed handle must never run in the caller's namespace."""
    from splice.libnet.netns import Netns

    ns = Netns.open("/proc/self/ns/net")
    assert ns.run(lambda: 7) == 7
    ns.close()
    ran: list = []
    with pytest.raises(ne.NetError, match="after close"):
        ns.run(ran.append, 1)
    assert ran == []
    ns.close()  # idempotent
    borrowed = Netns.from_fd(0)
    borrowed.close()
    with pytest.raises(ne.NetError):
        borrowed.run(ran.append, 1)
    assert Netns.current().run(lambda: 3) == 3  # current() holds nothing: always usable


def test_error_table_covers_every_error_class():
    code = lambda e: pe.classify(e)[0]  # noqa: E731
    assert code(pe.PortInUse("port 80 taken")) == 107
    assert code(pe.InvalidEnvironment("x")) == 4
    assert code(ne.NameTaken("x")) == 104
    assert code(ne.Mismatch("x")) == 105
    assert code(ne.NetnsNotFound("x")) == 3
    assert code(ie.PoolExhausted("x")) == 101
    assert code(ValueError("boom")) == 100
    assert pe.classify(pe.ConfigError("x"))[1] == 400  # the Docker form: HTTP status
    for mod in (pe, ne, ie):
        for obj in vars(mod).values():
            if (isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == mod.__name__
                    and obj not in (pe.SpliceError, ie.IpamError)):  # abstract bases
                assert any(issubclass(obj, cls) for cls, _, _ in pe.table()), obj


def test_owner_names_are_one_hash():
    assert owners.net8("net1") == hashlib.sha256(b"net1").hexdigest()[:8]
    assert owners.host_veth_name("n", "c", "eth0") == "veth" + hashlib.sha256(b"n\0c\0eth0").hexdigest()[:10]
    assert owners.owner_tag("n", "c", "eth0").startswith(owners.gc_prefix("n"))
    assert len(owners.owner_tag("n", "c" * 300, "eth0").encode()) == 127
    assert len(owners.link_alias("n", "é" * 300, "eth0").encode()) <= 254


def test_steps_run_all_and_report_all():
    s = owners.Steps("GC of x")
    s.run(lambda: 1 / 0)
    ran = []
    s.run(ran.append, 1)
    s.run(lambda: (_ for _ in ()).throw(OSError("second")))
    assert ran == [1]
    with pytest.raises(pe.MultipleErrors) as ei:
        s.done()
    assert "2 failures" in ei.value.msg and "second" in ei.value.details
    one = owners.Steps("x")
    one.run(lambda: (_ for _ in ()).throw(pe.KernelError("only")))
    with pytest.raises(pe.KernelError, match="only"):
        one.done()
    owners.Steps("none").done()
