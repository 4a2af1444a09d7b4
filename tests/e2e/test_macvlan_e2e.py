"""splice-macvlan (+ splice-ipam) through the installed executables, run like libcni.

The master is a veth in the throwaway host namespace whose peer sits in a "switch"
namespace holding 10.88.0.254/24, so the containers' traffic really leaves the master."""

from __future__ import annotations

import json

import pytest

from splice.conformance import oracle
from splice.conformance.runtime import CniCallError

from ..conftest import make_switch
from .conftest import ALL_VERSIONS, Leaks, count_leases, vt

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

MASTER = "mv0"
SWITCH_IP = "10.88.0.254"
NET = "spt-mv"


@pytest.fixture
def switch(host_ns, make_ns):
    return make_switch(host_ns, make_ns, MASTER, SWITCH_IP)


@pytest.fixture
def mvleaks(host_ns):
    return Leaks(host_ns, allow={MASTER})


def conflist(ipam_dir, version: str = "1.0.0", **opts) -> dict:
    plugin = {
        "type": "splice-macvlan",
        "master": MASTER,
        "ipam": {"type": "splice-ipam", "ranges": [[{"subnet": "10.88.0.0/24", "gateway": SWITCH_IP}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(ipam_dir)},
    }
    plugin.update(opts)
    plugin = {k: v for k, v in plugin.items() if v is not None}
    return {"cniVersion": version, "name": NET, "plugins": [plugin]}


def addr_of(result: dict, version: str) -> str:
    return result["ip4"]["ip"] if vt(version) < (0, 3, 0) else result["ips"][0]["address"]


def clean(mvleaks, ipam_dir, *sandboxes) -> None:
    mvleaks.assert_clean(list(sandboxes), [ipam_dir], network=NET)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_two_containers_reach_each_other_and_the_switch(version, runtime, switch, make_ns, ipam_dir, mvleaks):
    conf = conflist(ipam_dir, version)
    c1, c2 = make_ns(), make_ns()
    r1 = runtime.add(conf, "ctr-1", c1.path)
    r2 = runtime.add(conf, "ctr-2", c2.path)
    assert r1["cniVersion"] == version
    if vt(version) >= (0, 3, 0):
        assert [i["name"] for i in r1["interfaces"]] == ["eth0"]
        assert r1["interfaces"][0]["sandbox"] == c1.path
        assert r1["interfaces"][0]["mac"] == oracle.link(c1.name, "eth0")["address"]
        assert r1["ips"][0]["interface"] == 0
    a1, a2 = addr_of(r1, version), addr_of(r2, version)
    assert oracle.addresses(c1.name, "eth0") == [a1]
    link = oracle.link(c1.name, "eth0")
    assert link["linkinfo"]["info_kind"] == "macvlan" and link["linkinfo"]["info_data"]["mode"] == "bridge"
    assert oracle.ping(c1.name, a2.split("/")[0])
    assert oracle.ping(c1.name, SWITCH_IP) and oracle.ping(c2.name, SWITCH_IP)
    assert any(r["dst"] == "default" and r.get("gateway") == SWITCH_IP for r in oracle.routes(c2.name))
    if vt(version) >= (0, 4, 0):
        runtime.check(conf, "ctr-1", c1.path)
    if vt(version) >= (1, 1, 0):
        runtime.status(conf)
    runtime.delete(conf, "ctr-1", c1.path)
    runtime.delete(conf, "ctr-1", c1.path)  # twice
    runtime.delete(conf, "ctr-2", c2.path)
    clean(mvleaks, ipam_dir, c1, c2)


def test_private_isolates(runtime, switch, make_ns, ipam_dir, mvleaks):
    conf = conflist(ipam_dir, mode="private")
    c1, c2 = make_ns(), make_ns()
    runtime.add(conf, "ctr-1", c1.path)
    r2 = runtime.add(conf, "ctr-2", c2.path)
    assert oracle.link(c1.name, "eth0")["linkinfo"]["info_data"]["mode"] == "private"
    assert not oracle.ping(c1.name, r2["ips"][0]["address"].split("/")[0])
    assert oracle.ping(c1.name, SWITCH_IP)
    runtime.delete(conf, "ctr-1", c1.path)
    runtime.delete(conf, "ctr-2", c2.path)
    clean(mvleaks, ipam_dir, c1, c2)


def test_passthru_takes_the_master_alone(runtime, host_ns, switch, make_ns, ipam_dir, mvleaks):
    conf = conflist(ipam_dir, mode="passthru")
    c1, c2 = make_ns(), make_ns()
    runtime.add(conf, "ctr-1", c1.path)
    assert oracle.ping(c1.name, SWITCH_IP)
    with pytest.raises(CniCallError, match="passthru macvlan takes master 'mv0' alone") as e:
        runtime.add(conf, "ctr-2", c2.path)
    assert e.value.code == 103
    assert oracle.link_names(c2.name) == {"lo"} and oracle.link_names(host_ns.name) == {"lo", MASTER}
    assert count_leases(ipam_dir, NET) == 1  # only the first container's
    runtime.delete(conf, "ctr-1", c1.path)
    clean(mvleaks, ipam_dir, c1, c2)


def test_mac_and_mtu_as_configured(runtime, switch, make_ns, ipam_dir, mvleaks):
    conf = conflist(ipam_dir, "1.1.0", mtu=1400, mac="02:00:00:00:aa:01")
    c1, c2 = make_ns(), make_ns()
    r1 = runtime.add(conf, "ctr-1", c1.path)
    assert oracle.link(c1.name, "eth0")["address"] == "02:00:00:00:aa:01" == r1["interfaces"][0]["mac"]
    assert oracle.link(c1.name, "eth0")["mtu"] == 1400
    # CNI_ARGS MAC wins over the config's mac
    runtime.add(conf, "ctr-2", c2.path, cni_args="IgnoreUnknown=1;MAC=02:00:00:00:bb:02")
    assert oracle.link(c2.name, "eth0")["address"] == "02:00:00:00:bb:02"
    assert oracle.ping(c2.name, SWITCH_IP)
    runtime.check(conf, "ctr-1", c1.path)
    runtime.delete(conf, "ctr-1", c1.path)
    runtime.delete(conf, "ctr-2", c2.path, cni_args="IgnoreUnknown=1;MAC=02:00:00:00:bb:02")
    clean(mvleaks, ipam_dir, c1, c2)


@pytest.mark.parametrize("opts,code,msg", [
    ({"master": "nope0"}, 7, "master 'nope0' not found"),
    ({"master": "lo"}, 7, "loopback"),
    ({"mtu": 9000}, 7, "larger than the MTU 1500"),
    ({"master": "mv0.4095"}, 7, "outside 1-4094"),
    ({"master": "mv0.10", "vlan": 20}, 7, "names VLAN 10 but vlan is 20"),
    ({"master": "nope0", "vlan": 10}, 7, "parent link 'nope0' of the VLAN sub-interface 'nope0.10' not found"),
    ({"mode": "nope"}, 7, "mode must be one of"),
])
def test_errors_leave_nothing(opts, code, msg, runtime, host_ns, switch, sandbox_ns, ipam_dir, mvleaks):
    conf = conflist(ipam_dir, **opts)
    with pytest.raises(CniCallError, match=msg) as e:
        runtime.add(conf, "ctr-1", sandbox_ns.path)
    assert e.value.code == code
    clean(mvleaks, ipam_dir, sandbox_ns)


def test_bridge_port_master_is_refused(runtime, host_ns, switch, sandbox_ns, ipam_dir, mvleaks):
    host_ns.sh("ip", "link", "add", "brx", "type", "bridge")
    host_ns.sh("ip", "link", "add", "pt0", "type", "veth", "peer", "name", "pt1")
    host_ns.sh("ip", "link", "set", "pt0", "master", "brx")
    with pytest.raises(CniCallError, match="port of another device"):
        runtime.add(conflist(ipam_dir, master="pt0"), "ctr-1", sandbox_ns.path)
    mvleaks.allow |= {"brx", "pt0", "pt1"}
    clean(mvleaks, ipam_dir, sandbox_ns)


def test_interface_exists_leaves_nothing(runtime, host_ns, switch, sandbox_ns, ipam_dir, mvleaks):
    sandbox_ns.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "xpeer")
    with pytest.raises(CniCallError) as e:
        runtime.add(conflist(ipam_dir), "ctr-1", sandbox_ns.path)
    assert e.value.code == 104
    assert oracle.link_names(sandbox_ns.name) == {"lo", "eth0", "xpeer"}
    assert oracle.link_names(host_ns.name) == {"lo", MASTER}
    assert count_leases(ipam_dir, NET) == 0


def test_del_forms_release_the_lease(runtime, switch, make_ns, ipam_dir, mvleaks):
    conf = conflist(ipam_dir, "1.1.0")
    c1, c2, c3 = make_ns(), make_ns(), make_ns()
    for n, c in enumerate((c1, c2, c3)):
        runtime.add(conf, f"ctr-{n}", c.path)
    assert count_leases(ipam_dir, NET) == 3
    # netns gone
    c1.sh("true")
    import subprocess

    subprocess.run(["ip", "netns", "del", c1.name], check=True)
    runtime.delete(conf, "ctr-0", c1.path)
    # no netns
    runtime.delete(conf, "ctr-1", None)
    # no prevResult
    runtime.delete(conf, "ctr-2", c3.path, use_cache=False)
    assert count_leases(ipam_dir, NET) == 0
    assert oracle.link_names(c3.name) == {"lo"}
    runtime.delete(conf, "ctr-2", c3.path, use_cache=False)  # again
    clean(mvleaks, ipam_dir, c3)


def test_check_detects_changes(runtime, switch, sandbox_ns, ipam_dir, mvleaks):
    conf = conflist(ipam_dir, "1.1.0")
    r = runtime.add(conf, "ctr-1", sandbox_ns.path)
    runtime.check(conf, "ctr-1", sandbox_ns.path)
    with pytest.raises(CniCallError, match="mode bridge, configured private") as e:
        runtime.check(conflist(ipam_dir, "1.1.0", mode="private"), "ctr-1", sandbox_ns.path, prev_result=r)
    assert e.value.code == 105
    addr = r["ips"][0]["address"]
    sandbox_ns.sh("ip", "addr", "del", addr, "dev", "eth0")
    with pytest.raises(CniCallError, match="not found"):
        runtime.check(conf, "ctr-1", sandbox_ns.path)
    sandbox_ns.sh("ip", "addr", "add", addr, "dev", "eth0")
    sandbox_ns.sh("ip", "link", "set", "eth0", "address", "02:00:00:00:cc:03")
    with pytest.raises(CniCallError, match="MAC"):
        runtime.check(conf, "ctr-1", sandbox_ns.path)
    runtime.delete(conf, "ctr-1", sandbox_ns.path)
    clean(mvleaks, ipam_dir, sandbox_ns)


def test_status_fails_on_missing_or_down_master(runtime, host_ns, switch, ipam_dir):
    runtime.status(conflist(ipam_dir, "1.1.0"))
    with pytest.raises(CniCallError, match="master 'nope0' not found"):
        runtime.status(conflist(ipam_dir, "1.1.0", master="nope0"))
    host_ns.sh("ip", "link", "set", MASTER, "down")
    with pytest.raises(CniCallError, match="master 'mv0' is down"):
        runtime.status(conflist(ipam_dir, "1.1.0"))


def test_chained_without_ipam_takes_prev_result_addresses(cni, switch, sandbox_ns, mvleaks):
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "x"}],
            "ips": [{"address": "10.88.0.42/24", "gateway": SWITCH_IP}], "routes": [{"dst": "0.0.0.0/0"}]}
    conf = {"cniVersion": "1.0.0", "name": NET, "type": "splice-macvlan", "master": MASTER, "prevResult": prev}
    r = cni.run("splice-macvlan", "ADD", conf, netns=sandbox_ns.path)
    assert r.rc == 0, r.stdout + r.stderr
    out = r.json
    assert [i["name"] for i in out["interfaces"]] == ["x", "eth0"]
    assert out["ips"] == [{"address": "10.88.0.42/24", "gateway": SWITCH_IP, "interface": 1}]
    assert oracle.addresses(sandbox_ns.name, "eth0") == ["10.88.0.42/24"]
    assert oracle.ping(sandbox_ns.name, SWITCH_IP)
    conf["prevResult"] = out
    assert cni.run("splice-macvlan", "CHECK", conf, netns=sandbox_ns.path).rc == 0
    assert cni.run("splice-macvlan", "DEL", conf, netns=sandbox_ns.path).rc == 0
    mvleaks.assert_clean([sandbox_ns], [], network=NET)


def test_install_cni_installs_splice_macvlan(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    splice = Path(sys.executable).parent / "splice"
    subprocess.run([str(splice), "install-cni", "--dir", str(tmp_path)], check=True, capture_output=True)
    exe = tmp_path / "splice-macvlan"
    assert exe.exists()
    p = subprocess.run([str(exe)], input=json.dumps({"cniVersion": "1.0.0"}), env={"CNI_COMMAND": "VERSION"},
                       capture_output=True, text=True)
    assert "1.1.0" in json.loads(p.stdout)["supportedVersions"], p.stdout + p.stderr


@pytest.mark.needs_vm
def test_eight_parallel_add_del_on_one_vlan(runtime, host_ns, switch, make_ns, ipam_dir, mvleaks):
    """8 containers ADD and DEL in parallel, twice, through splice-macvlan on ``mv0.10``:
    every ADD finds the sub-interface (made once, never deleted from under a new user) and
    reaches the switch's VLAN 10; the last DEL removes it."""
    import threading

    from ..conftest import missing_kernel_feature, vlan_supported

    if not vlan_supported(host_ns):
        missing_kernel_feature("802.1Q VLAN links (8021q)")
    switch.sh("ip", "link", "add", "link", "sw0", "name", "sw0.10", "type", "vlan", "id", "10")
    switch.sh("ip", "link", "set", "sw0.10", "up")
    switch.sh("ip", "addr", "add", "10.88.10.254/24", "dev", "sw0.10")
    conf = conflist(ipam_dir, master="mv0.10")
    conf["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.88.10.0/24", "gateway": "10.88.10.254"}]]
    sandboxes = [make_ns() for _ in range(8)]
    errors: list[str] = []

    def worker(i: int) -> None:
        try:
            for rnd in range(2):
                cid = f"ctr-{i}-{rnd}"
                runtime.add(conf, cid, sandboxes[i].path)
                if not oracle.ping(sandboxes[i].name, "10.88.10.254", count=1, timeout=3):
                    errors.append(f"{cid}: no reply from the switch's VLAN 10")
                runtime.delete(conf, cid, sandboxes[i].path)
        except Exception as e:  # noqa: BLE001 - collected, asserted below
            errors.append(f"worker {i}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert oracle.link_names(host_ns.name) == {"lo", MASTER}  # the last DEL removed mv0.10
    clean(mvleaks, ipam_dir, *sandboxes)
