"""``splice doctor``'s host-level checks (doctor_host.py), broken by hand in a throwaway host
namespace: the forwarding sysctl of a gateway bridge (``--fix`` sets it), a splice-made
802.1Q sub-interface with no user and a registration of a link that is gone (``--fix``
removes them; ``needs_vm``: 8021q), a VXLAN peer's FDB entry deleted (named, not fixed: the
underlay address is the registry's; the printed command repairs it)."""

from __future__ import annotations

import json
import subprocess

import pytest

from ..conftest import bin_dir, make_switch, missing_kernel_feature, vlan_supported

pytestmark = pytest.mark.root


def test_ip_forward_off_is_named_and_fixed(cli, make_ns):
    cli.create_bridge("fw", "10.98.20.0/24")
    c = make_ns()
    cli("attach", "fw", "--netns", c.name, check=0)
    assert cli("doctor", check=0).out.startswith("ok")
    cli.host.sh("sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")  # the throwaway host's, not ours
    r = cli("doctor", check=1)
    assert "sysctl net.ipv4.ip_forward is 0" in r.out and "repair: sysctl -w net.ipv4.ip_forward=1" in r.out
    r = cli("doctor", "fw", "--fix", check=0)
    assert "FIXED" in r.out
    assert cli.host.sh("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert cli("doctor", check=0).out.startswith("ok")
    cli("detach", "fw", "--netns", c.name, check=0)


def test_vxlan_peer_fdb_entry_missing_is_named(cli):
    h = cli.host
    h.sh("ip", "link", "add", "sptu0", "type", "veth", "peer", "name", "sptu1")  # the underlay (no dummy here)
    h.sh("ip", "addr", "add", "192.168.77.1/24", "dev", "sptu0")
    h.sh("ip", "link", "set", "sptu0", "up")
    h.sh("ip", "link", "add", "spvx77", "type", "vxlan", "id", "77", "dstport", "4789", "local", "192.168.77.1",
         "dev", "sptu0", "nolearning")
    h.sh("ip", "addr", "add", "10.77.1.0/32", "dev", "spvx77")
    h.sh("ip", "link", "set", "spvx77", "up")
    mac = "02:00:00:00:77:02"
    h.sh("ip", "route", "add", "10.77.2.0/24", "via", "10.77.2.0", "dev", "spvx77", "onlink")
    h.sh("ip", "neigh", "add", "10.77.2.0", "lladdr", mac, "dev", "spvx77", "nud", "permanent")
    h.sh("bridge", "fdb", "append", mac, "dev", "spvx77", "dst", "192.168.77.2")
    cli.config_dir.mkdir(parents=True, exist_ok=True)
    (cli.config_dir / "ov.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "ov", "plugins": [
        {"type": "splice-vxlan", "vni": 77, "clusterCIDR": "10.77.0.0/16",
         "etcd": {"endpoints": ["http://127.0.0.1:2379"], "prefix": "/splice"}}]}))
    r = cli("doctor", check=0)
    assert r.out.startswith("ok") and "ov (vxlan)" in r.out
    h.sh("bridge", "fdb", "del", mac, "dev", "spvx77", "dst", "192.168.77.2")
    r = cli("doctor", "--fix", check=1)  # nothing fixable: the peer's underlay is not known here
    assert "route 10.77.2.0/24 via 10.77.2.0 (VTEP MAC 02:00:00:00:77:02) has no FDB entry on spvx77" in r.out
    assert "FIXED" not in r.out and f"bridge fdb append {mac} dev spvx77 dst PEER-UNDERLAY-IP" in r.out
    h.sh("bridge", "fdb", "append", mac, "dev", "spvx77", "dst", "192.168.77.2")
    assert cli("doctor", check=0).out.startswith("ok")
    # a neighbour no route accounts for (a peer that left half-removed)
    h.sh("ip", "route", "del", "10.77.2.0/24")
    r = cli("doctor", "ov", check=1)
    assert "permanent neighbour 10.77.2.0 on spvx77 has no route" in r.out
    # the device gone: fine without attachments, named otherwise (checked as 'no device' only)
    h.sh("ip", "link", "del", "spvx77")
    assert cli("doctor", "ov", check=0).out.startswith("ok")


@pytest.mark.needs_vm
def test_unused_splice_vlan_subinterface_and_stale_registration(cli, make_ns, tmp_path):
    h = cli.host
    if not vlan_supported(h):
        missing_kernel_feature("802.1Q VLAN links (8021q)")
    make_switch(h, make_ns, "sptv0", "10.98.21.254")
    vdir = tmp_path / "vlans"
    vdir.mkdir()
    env = {"SPLICE_VLAN_DIR": str(vdir)}
    cli.create_bridge("b", "10.98.22.0/24")
    assert cli("doctor", env=env, check=0).out.startswith("ok")
    h.sh("ip", "link", "add", "link", "sptv0", "name", "sptv0.10", "type", "vlan", "id", "10")
    h.sh("ip", "link", "set", "sptv0.10", "alias", "splice-vlan:sptv0.10", "up")
    h.sh("ip", "link", "add", "link", "sptv0", "name", "sptv0.11", "type", "vlan", "id", "11")  # not ours
    cookie = _cookie(h)
    stale = vdir / f"{cookie}-99999-sptv0.12"
    stale.mkdir()
    (stale / ("0" * 32)).write_text("gone")
    r = cli("doctor", env=env, check=1)
    assert "splice-made VLAN sub-interface sptv0.10 has no user" in r.out and "sptv0.11" not in r.out
    assert f"VLAN registration {stale} names a link that is gone" in r.out
    r = cli("doctor", "--fix", env=env, check=0)
    assert r.out.count("FIXED") == 2
    assert h.sh("ip", "link", "show", "sptv0.10", check=False).returncode != 0
    assert h.sh("ip", "link", "show", "sptv0.11", check=False).returncode == 0
    assert not stale.exists()
    assert cli("doctor", env=env, check=0).out.startswith("ok")


def _cookie(h) -> str:
    return subprocess.run(["nsenter", f"--net={h.path}", str(bin_dir() / "python"), "-c",
                           "from splice.plugins.vlans import _cookie; print(_cookie())"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.needs_vm
def test_macvlan_on_a_vlan_subinterface(cli, make_ns):
    """The sub-interface a macvlan network's attachments hang on: down is named; its
    registrations lost while attachments are cached is named and not "fixed" (deleting it
    would cut them off); another attach registers again and doctor is clean. The plugins
    run with libcni's clean environment, so the registrations are in the default directory
    (those of this throwaway namespace only: its netns cookie)."""
    import os
    import shutil
    from pathlib import Path

    h = cli.host
    if not vlan_supported(h):
        missing_kernel_feature("802.1Q VLAN links (8021q)")
    make_switch(h, make_ns, "sptw0", "10.98.23.254")
    cli("net", "create", "mvv", "--driver", "macvlan", "--subnet", "10.98.24.0/24", "-o", "master=sptw0.20",
        "-o", f"ipam.dataDir={cli.ipam_dir}", check=0)
    a = make_ns()
    cli("attach", "mvv", "--netns", a.name, check=0)
    assert h.sh("ip", "link", "show", "sptw0.20").returncode == 0
    assert cli("doctor", check=0).out.startswith("ok")
    h.sh("ip", "link", "set", "sptw0.20", "down")
    r = cli("doctor", "mvv", check=1)
    assert "VLAN sub-interface sptw0.20 is down (1 attachment(s) on it)" in r.out and "ip link set sptw0.20 up" in r.out
    h.sh("ip", "link", "set", "sptw0.20", "up")
    assert cli("doctor", check=0).out.startswith("ok")
    vdir = Path(os.environ.get("SPLICE_VLAN_DIR") or "/run/splice/vlans")
    mine = [d for d in vdir.iterdir() if d.name.startswith(_cookie(h) + "-")]
    assert mine, f"no registration of this namespace in {vdir}"
    for d in mine:
        shutil.rmtree(d)
    r = cli("doctor", "--fix", check=1)
    assert "sptw0.20 has no registered user, but network mvv has cached attachments on it" in r.out
    assert "FIXED" not in r.out and h.sh("ip", "link", "show", "sptw0.20", check=False).returncode == 0
    b = make_ns()
    cli("attach", "mvv", "--netns", b.name, check=0)  # registers a user again
    assert cli("doctor", check=0).out.startswith("ok")
    cli("detach", "mvv", "--netns", b.name, check=0)
    cli("detach", "mvv", "--netns", a.name, check=0)
    assert h.sh("ip", "link", "show", "sptw0.20", check=False).returncode != 0  # the last user removed it
    assert cli("doctor", check=0).out.startswith("ok")
