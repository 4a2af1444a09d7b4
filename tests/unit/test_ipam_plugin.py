"""splice.plugins.cni.ipam_plugin: the splice-ipam CNI adapter (in-process, no kernel)."""

from __future__ import annotations

import copy

import pytest

from splice.ipam.errors import AddressUnavailable, IpamConfigError, PoolExhausted
from splice.plugins.cni import ipam_plugin as ip
from splice.plugins.cni.errors import from_exception
from splice.plugins.cni.skel import CmdArgs
from splice.plugins.errors import CheckFailed


@pytest.fixture(autouse=True)
def no_host_routes(monkeypatch):
    """Unit tests do not read this machine's routes: the host overlap check sees none
    (it is tested against a throwaway host namespace in tests/e2e/test_bridge_e2e.py)."""
    monkeypatch.setattr(ip, "host_prefixes", lambda a, cfg: (lambda: []))

ALL = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


def conf(tmp_path, **ipam) -> dict:
    base = {"type": "splice-ipam", "ranges": [[{"subnet": "10.1.0.0/24"}]], "dataDir": str(tmp_path)}
    base.update(ipam)
    return {"cniVersion": "1.1.0", "name": "net1", "type": "splice-ipam", "ipam": base}


def cmd(config: dict, command: str = "ADD", cid: str | None = "c1", ifname: str | None = "eth0",
        netns: str | None = "/run/netns/x", args: dict | None = None, prev: dict | None = None) -> CmdArgs:
    return CmdArgs(command=command, container_id=cid, netns=netns, ifname=ifname, args=dict(args or {}),
                   path=[], stdin=b"", config=copy.deepcopy(config), version=config.get("cniVersion", "1.1.0"),
                   prev_result=prev, env={})


def first_ip(result: dict) -> str:
    return result["ips"][0]["address"]


def test_plugin_attributes():
    p = ip.SpliceIpam()
    assert p.name == "splice-ipam"
    assert tuple(p.supported_versions) == ALL
    assert p.cni_args == frozenset({"IP"})
    for verb in ("add", "delete", "check", "status", "gc"):
        assert callable(getattr(p, verb))


def test_add_result_shape(tmp_path):
    c = conf(tmp_path, routes=[{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.254"}],
             dns={"nameservers": ["10.1.0.53"], "search": [], "domain": ""})
    result = ip.SpliceIpam().add(cmd(c))
    assert result == {
        "cniVersion": "1.1.0",
        "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.254"}],
        "dns": {"nameservers": ["10.1.0.53"]},
    }


def test_add_result_without_dns_dual_stack(tmp_path):
    c = conf(tmp_path, ranges=[[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]])
    result = ip.ipam_add(cmd(c))
    assert result == {"cniVersion": "1.1.0", "routes": [],
                      "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1"},
                              {"address": "fd00::2/64", "gateway": "fd00::1"}]}
    assert "interfaces" not in result and all("interface" not in x for x in result["ips"])


def test_requested_ip_precedence(tmp_path):
    c = conf(tmp_path)
    c["runtimeConfig"] = {"ips": ["10.1.0.10/24"]}
    c["args"] = {"cni": {"ips": ["10.1.0.20"]}}
    assert first_ip(ip.ipam_add(cmd(c, cid="a", args={"IP": "10.1.0.30"}))) == "10.1.0.10/24"
    del c["runtimeConfig"]
    assert first_ip(ip.ipam_add(cmd(c, cid="b", args={"IP": "10.1.0.30"}))) == "10.1.0.20/24"
    del c["args"]
    assert first_ip(ip.ipam_add(cmd(c, cid="c", args={"IP": "10.1.0.30"}))) == "10.1.0.30/24"
    c["runtimeConfig"] = {"ips": []}  # an empty capability does not count
    assert first_ip(ip.ipam_add(cmd(c, cid="d", args={"IP": "10.1.0.31/24"}))) == "10.1.0.31/24"
    assert first_ip(ip.ipam_add(cmd(c, cid="e"))) == "10.1.0.32/24"


def test_cni_args_ip_comma_separated_dual_stack(tmp_path):
    c = conf(tmp_path, ranges=[[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]])
    r = ip.ipam_add(cmd(c, args={"IP": "fd00::99,10.1.0.99"}))
    assert [x["address"] for x in r["ips"]] == ["10.1.0.99/24", "fd00::99/64"]


def test_requested_ip_errors(tmp_path):
    c = conf(tmp_path)
    with pytest.raises(IpamConfigError, match="CNI_ARGS IP: invalid IP address 'x.y'"):
        ip.ipam_add(cmd(c, args={"IP": "x.y"}))
    c["args"] = {"cni": {"ips": "10.1.0.5"}}  # a single string is accepted too
    assert first_ip(ip.ipam_add(cmd(c, cid="s"))) == "10.1.0.5/24"
    c["args"] = {"cni": {"ips": [5]}}
    with pytest.raises(IpamConfigError, match="args.cni.ips"):
        ip.ipam_add(cmd(c, cid="t"))
    c["args"] = {"cni": {"ips": ["10.2.0.5"]}}
    with pytest.raises(AddressUnavailable, match="not in any range"):
        ip.ipam_add(cmd(c, cid="t"))


def test_ip_ranges_capability_replaces_ranges(tmp_path):
    c = conf(tmp_path)
    c["runtimeConfig"] = {"ipRanges": [[{"subnet": "192.168.7.0/24", "rangeStart": "192.168.7.100"}]]}
    r = ip.ipam_add(cmd(c))
    assert r["ips"] == [{"address": "192.168.7.100/24", "gateway": "192.168.7.1"}]


def test_delete_idempotent_without_netns_returns_leases(tmp_path):
    c = conf(tmp_path)
    ip.ipam_add(cmd(c))
    released = ip.ipam_del(cmd(c, "DEL", netns=None))
    assert [str(l.address) for l in released] == ["10.1.0.2/24"]
    assert ip.ipam_del(cmd(c, "DEL", netns=None)) == []
    ip.SpliceIpam().delete(cmd(c, "DEL", netns=None))
    ip.SpliceIpam().delete(cmd(c, "DEL", cid="never-added"))


def test_delete_releases_even_when_ranges_no_longer_parse(tmp_path):
    c = conf(tmp_path)
    ip.ipam_add(cmd(c))
    broken = copy.deepcopy(c)
    broken["ipam"]["ranges"] = [[{"subnet": "10.1.0.0/31"}]]
    with pytest.raises(IpamConfigError):
        ip.ipam_add(cmd(broken, cid="z"))
    assert [str(l.address) for l in ip.ipam_del(cmd(broken, "DEL"))] == ["10.1.0.2/24"]


def test_check(tmp_path):
    c = conf(tmp_path)
    with pytest.raises(CheckFailed, match="no IP address is reserved for container c1 interface eth0"):
        ip.ipam_check(cmd(c, "CHECK"))
    result = ip.ipam_add(cmd(c))
    ip.SpliceIpam().check(cmd(c, "CHECK", prev=result))
    ip.ipam_check(cmd(c, "CHECK", prev=None))
    ip.ipam_check(cmd(c, "CHECK", prev={"cniVersion": "1.1.0", "interfaces": [], "ips": []}))
    later = copy.deepcopy(result)
    later["ips"].append({"address": "198.51.100.77/24"})  # added by a later chained plugin: tolerated
    assert [str(l.address) for l in ip.ipam_check(cmd(c, "CHECK", prev=later))] == [result["ips"][0]["address"]]
    bad = copy.deepcopy(result)
    bad["ips"] = [{"address": "10.1.0.77/24"}]  # our reservation is not in the result
    with pytest.raises(CheckFailed, match="is missing from prevResult"):
        ip.ipam_check(cmd(c, "CHECK", prev=bad))
    with pytest.raises(CheckFailed):
        ip.ipam_check(cmd(c, "CHECK", ifname="eth1", prev=result))
    ip.ipam_del(cmd(c, "DEL"))
    with pytest.raises(CheckFailed):
        ip.ipam_check(cmd(c, "CHECK", prev=result))


def test_status(tmp_path):
    c = conf(tmp_path, ranges=[[{"subnet": "10.1.0.0/30"}]])
    st = cmd(c, "STATUS", cid=None, ifname=None, netns=None)
    ip.SpliceIpam().status(st)
    ip.ipam_add(cmd(c))
    with pytest.raises(PoolExhausted):
        ip.ipam_status(st)
    assert from_exception(PoolExhausted("x")).code == 101


def test_gc_union_of_both_keys(tmp_path):
    c = conf(tmp_path)
    for cid in ("a", "b", "c", "d"):
        ip.ipam_add(cmd(c, cid=cid))
    g = cmd(c, "GC", cid=None, ifname=None, netns=None)
    g.config["cni.dev/valid-attachments"] = [{"containerID": "a", "ifname": "eth0"}]
    g.config["cni.dev/attachments"] = [{"containerID": "b", "ifname": "eth0"}]
    gone = ip.ipam_gc(g)
    assert sorted(l.container_id for l in gone) == ["c", "d"]
    for kept in ("a", "b"):
        ip.ipam_check(cmd(c, "CHECK", cid=kept))
    # legacy key alone
    g2 = cmd(c, "GC", cid=None, ifname=None, netns=None)
    g2.config["cni.dev/attachments"] = [{"containerID": "a", "ifname": "eth0"}]
    ip.SpliceIpam().gc(g2)
    ip.ipam_check(cmd(c, "CHECK", cid="a"))
    with pytest.raises(CheckFailed):
        ip.ipam_check(cmd(c, "CHECK", cid="b"))


def test_gc_without_keep_list_releases_nothing(tmp_path):
    c = conf(tmp_path)
    ip.ipam_add(cmd(c))
    with pytest.raises(Exception) as e:
        ip.ipam_gc(cmd(c, "GC", cid=None, ifname=None, netns=None))
    assert from_exception(e.value).code == 7
    ip.ipam_check(cmd(c, "CHECK"))  # still reserved
    g = cmd(c, "GC", cid=None, ifname=None, netns=None)
    g.config["cni.dev/valid-attachments"] = []
    assert len(ip.ipam_gc(g)) == 1


@pytest.mark.parametrize("exc, code", [
    (IpamConfigError("x"), 7), (PoolExhausted("x"), 101), (AddressUnavailable("x"), 102),
    (CheckFailed("x"), 105),
])
def test_errors_map_to_cni_codes(exc, code):
    assert from_exception(exc).code == code


def test_missing_ipam_or_name(tmp_path):
    c = conf(tmp_path)
    del c["ipam"]
    with pytest.raises(IpamConfigError, match="ipam: expected an object"):
        ip.ipam_add(cmd(c))
    c = conf(tmp_path)
    c["name"] = "../../etc"
    with pytest.raises(IpamConfigError, match="invalid network name"):
        ip.ipam_del(cmd(c, "DEL"))


def test_data_dir_a_regular_file_answers_code_7(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(IpamConfigError) as e:
        ip.ipam_add(cmd(conf(tmp_path, dataDir=str(blocker))))
    assert from_exception(e.value).code == 7
    assert f"{blocker} is a regular file, not a directory" in str(e.value)


@pytest.mark.parametrize("shared", [False, True])
def test_store_deleted_under_a_running_system_is_refused(tmp_path, shared):
    # issue 9 item 8: two containers got the same address after store.db was removed
    # (the agent's shared store re-opened the path and started a new, empty store)
    from splice.ipam.errors import StoreError

    ip.share_stores(shared)
    try:
        c = conf(tmp_path)
        assert first_ip(ip.ipam_add(cmd(c, cid="c1"))) == "10.1.0.2/24"
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / "net1" / ("store.db" + suffix)).unlink(missing_ok=True)
        with pytest.raises(StoreError, match=r"store.db is missing, but .*/\.store\.db\.id shows it existed") as e:
            ip.ipam_add(cmd(c, cid="c2"))
        assert from_exception(e.value).code == 100  # not retried as transient
        assert not (tmp_path / "net1" / "store.db").exists()
    finally:
        ip.share_stores(False)
