"""The operator's story, through ``.venv/bin/splice`` in a throwaway host namespace:
create -> attach -> ipam ls shows the address -> doctor clean -> break things by hand
(delete the host veth, drop a lease, delete an nft element, leave a container without
DEL) -> doctor names each, with the command that repairs it -> ``--fix`` repairs what is
unambiguous -> the printed command repairs the rest -> detach leaves nothing."""

from __future__ import annotations

import json
import os

import pytest

from splice.conformance import oracle
from splice.conformance.runtime import Runtime
from splice.plugins.owners import host_veth_name

from ..conftest import bin_dir, has_ipv6, make_switch

pytestmark = pytest.mark.root


def _cid(cli, netns: str) -> str:
    from splice.plugins.cli.common import default_container_id

    return default_container_id(f"/run/netns/{netns}")


def test_create_attach_doctor_break_fix_detach(cli, make_ns):
    host = cli.host
    cli.create_bridge("web", "10.98.0.0/24")
    c1, c2, c3, c4 = (make_ns() for _ in range(4))

    # attach: the result as a table, and as the CNI result with --json
    r = cli("attach", "web", "--netns", c1.name, "-p", "18080:80", check=0)
    assert "eth0" in r.out and "10.98.0.2/24" in r.out and f"/run/netns/{c1.name}" in r.out
    res = cli("attach", "web", "--netns", c2.name, "--json", check=0).json
    assert res["ips"][0]["address"] == "10.98.0.3/24"
    cli("attach", "web", "--netns", c4.name, check=0)
    cli("attach", "web", "--netns", c3.name, "--ip", "10.98.0.50", check=0)
    assert oracle.ping(c1.name, "10.98.0.1")
    assert "10.98.0.50/24" in oracle.addresses(c3.name, "eth0")

    # the same attachment twice is refused, naming the way out
    r = cli("attach", "web", "--netns", c1.name, check=1)
    assert "attached to 'web' already" in r.err and "splice detach" in r.err

    # ipam ls: every address with its container and interface; --json
    r = cli("ipam", "ls", "web", check=0)
    for addr, ns in (("10.98.0.2/24", c1), ("10.98.0.3/24", c2), ("10.98.0.50/24", c3), ("10.98.0.4/24", c4)):
        line = next(ln for ln in r.out.splitlines() if ln.startswith(addr + " "))
        assert _cid(cli, ns.name) in line and "eth0" in line
    rows = cli("ipam", "ls", "web", "--json", check=0).json
    assert {x["address"] for x in rows} == {"10.98.0.2/24", "10.98.0.3/24", "10.98.0.50/24", "10.98.0.4/24"}
    assert all(x["ifname"] == "eth0" and x["ageSeconds"] >= 0 for x in rows)

    # net ls / inspect see the attachments and leases
    nets = cli("net", "ls", "--json", check=0).json
    assert [(n["name"], n["driver"], n["attachments"], n["leases"]) for n in nets] == [("web", "bridge", 4, 4)]
    ins = cli("net", "inspect", "web", check=0).json
    assert len(ins["attached"]) == 4 and ins["conflist"]["plugins"][1]["type"] == "splice-portmap"

    # check, status and doctor: all clean
    cli("check", "web", "--netns", c1.name, check=0)
    assert "ready" in cli("status", "web", check=0).out
    r = cli("doctor", check=0)
    assert r.out.startswith("ok")

    # break things by hand
    cid1, cid2, cid3, cid4 = (_cid(cli, ns.name) for ns in (c1, c2, c3, c4))
    host.sh("ip", "link", "del", host_veth_name("web", cid1, "eth0"))  # c1: host veth gone
    cli.drop_lease("web", cid2)  # c2: its lease dropped
    host.sh("nft", "delete", "element", "inet", "splice_nat", "src4", '{ "sptcli0" . 10.98.0.50 }')  # c3
    os.unlink(cli.cache_dir / "results" / f"web-{cid4}-eth0")  # c4: removed without DEL ...
    host.sh("ip", "link", "del", host_veth_name("web", cid4, "eth0"))  # ... and its link went with it

    # CHECK sees c1's breakage
    r = cli("check", "web", "--netns", c1.name, check=1)
    assert "FAILED" in r.out and "repair: splice detach" in r.out

    r = cli("doctor", "web", check=1)
    out = r.out
    assert f"{cid1}/eth0: host veth {host_veth_name('web', cid1, 'eth0')} is missing" in out
    assert f"{cid2}/eth0: its address 10.98.0.3 is not leased" in out
    assert f"{cid3}/eth0: no masquerade entry for 10.98.0.50 on sptcli0" in out
    assert f"{cid4}/eth0: leases 10.98.0.4 but has no cached result and no link" in out
    assert "4 problem(s)" in out
    # every problem has its repair command, and the unambiguous ones say --fix does it
    assert out.count("repair: splice ") == 4 and out.count("(--fix does this)") == 3
    js = cli("doctor", "web", "--json", check=1).json
    assert len(js["problems"]) == 4 and sum(p["fixable"] for p in js["problems"]) == 3

    r = cli("doctor", "web", "--fix", check=1)  # c3's masquerade entry is not for --fix
    assert r.out.count("FIXED") == 3 and "1 problem(s), 3 fixed" in r.out
    assert cid1 not in {c for c, _ in cli.lease_rows("web")}  # DEL released it
    assert not (cli.cache_dir / "results" / f"web-{cid1}-eth0").exists()
    assert oracle.link_names(c1.name) == {"lo"}
    assert (cid2, "eth0") in cli.lease_rows("web")  # leased again
    assert cid4 not in {c for c, _ in cli.lease_rows("web")}

    # the rest by the printed command (detach + attach with the same address)
    repair = next(ln for ln in r.out.splitlines() if "repair:" in ln).split("repair: ", 1)[1]
    assert "--ip 10.98.0.50" in repair
    for part in repair.split(" && "):
        argv = part.split()
        assert argv[0] == "splice"
        cli(*argv[1:], locations=False, check=0)
    assert cli("doctor", check=0).out.startswith("ok")
    assert "10.98.0.50/24" in oracle.addresses(c3.name, "eth0")

    # detach leaves nothing (the bridge stays, as CNI DEL leaves it)
    for ns in (c1, c2, c3, c4):
        cli("detach", "web", "--netns", ns.name, check=0)
        assert oracle.link_names(ns.name) == {"lo"}
    assert oracle.link_names(host.name) == {"lo", "sptcli0"}
    assert oracle.nft_map_elements(host.name) == []
    assert cli.lease_rows("web") == []
    assert os.listdir(cli.cache_dir / "results") == []
    assert cli("doctor", check=0).out.startswith("ok")
    assert "nothing to collect" in cli("gc", "web", "--dry-run", check=0).out
    cli("net", "rm", "web", check=0)
    assert cli("net", "ls", "--json", check=0).json == []


def test_runtime_and_cli_share_the_result_cache(cli, make_ns):
    """An attachment made by ``splice attach`` is DELeted by a libcni-like runtime reading
    the same cache directory, and one a runtime made is detached by ``splice detach``;
    ``splice gc`` keeps the cached ones and collects the rest."""
    cli.create_bridge("web", "10.98.1.0/24")
    a, b, c = make_ns(), make_ns(), make_ns()
    conflist = json.loads((cli.config_dir / "web.conflist").read_text())
    rt = Runtime(cni_path=[str(bin_dir())], cache_dir=str(cli.cache_dir),
                 prefix=["nsenter", f"--net={cli.host.path}"])

    cli("attach", "web", "--netns", a.name, "--container-id", "ctr-a", check=0)
    rec = json.loads((cli.cache_dir / "results" / "web-ctr-a-eth0").read_text())
    assert rec["kind"] == "cniCacheV1" and rec["netns"] == f"/run/netns/{a.name}"
    import base64

    assert json.loads(base64.b64decode(rec["config"]))["name"] == "web"  # libcni's config bytes
    rt.check(conflist, "ctr-a", f"/run/netns/{a.name}")  # the runtime's CHECK with our cached result
    rt.delete(conflist, "ctr-a", f"/run/netns/{a.name}")
    assert oracle.link_names(a.name) == {"lo"} and cli.lease_rows("web") == []

    rt.add(conflist, "ctr-b", f"/run/netns/{b.name}")
    cli("check", "web", "--netns", b.name, "--container-id", "ctr-b", check=0)
    cli("detach", "web", "--netns", b.name, "--container-id", "ctr-b", check=0)
    assert oracle.link_names(b.name) == {"lo"} and cli.lease_rows("web") == []

    # gc: a runtime without a cache made ctr-c (not valid), ctr-d is cached (valid)
    Runtime(cni_path=[str(bin_dir())], prefix=["nsenter", f"--net={cli.host.path}"]).add(
        conflist, "ctr-c", f"/run/netns/{c.name}")
    d = make_ns()
    cli("attach", "web", "--netns", d.name, "--container-id", "ctr-d", check=0)
    r = cli("gc", "web", "--dry-run", check=0)
    assert "ctr-c/eth0" in r.out and "ctr-d" not in r.out
    assert {x for x, _ in cli.lease_rows("web")} == {"ctr-c", "ctr-d"}  # dry run: nothing went
    cli("gc", "web", check=0)
    assert {x for x, _ in cli.lease_rows("web")} == {"ctr-d"}
    assert oracle.link_names(c.name) == {"lo"}
    assert cli("doctor", "web", check=0).out.startswith("ok")
    cli("detach", "web", "--netns", d.name, "--container-id", "ctr-d", check=0)
    assert oracle.nft_map_elements(cli.host.name) == []


def test_orphan_veth_and_nft_elements_are_named_and_fixed(cli, make_ns):
    """A crashed ADD's leftovers (a host veth and nft elements with no cached result and
    no lease) are named, and --fix DELs that attachment by owner."""
    cli.create_bridge("web", "10.98.2.0/24")
    a = make_ns()
    cli("attach", "web", "--netns", a.name, "--container-id", "ctr-x", "-p", "18081:80", check=0)
    os.unlink(cli.cache_dir / "results" / "web-ctr-x-eth0")
    cli.drop_lease("web", "ctr-x")
    r = cli("doctor", check=1)
    assert f"ctr-x/eth0: host veth {host_veth_name('web', 'ctr-x', 'eth0')} has no cached result and no lease" in r.out
    cli("doctor", "--fix", check=0)
    assert oracle.link_names(a.name) == {"lo"}
    assert oracle.nft_map_elements(cli.host.name) == []
    assert cli("doctor", check=0).out.startswith("ok")


def test_macvlan_network(cli, make_ns):
    """macvlan where cheap: create, attach, doctor clean; the container link deleted by
    hand is named and --fix DELs the attachment (lease released)."""
    make_switch(cli.host, make_ns, "sptm0", "10.98.3.254")  # the master: a veth wire to a "switch"
    cli("net", "create", "mv", "--driver", "macvlan", "--subnet", "10.98.3.0/24", "--gateway", "10.98.3.254",
        "-o", "master=sptm0", "-o", f"ipam.dataDir={cli.ipam_dir}", check=0)
    conf = json.loads((cli.config_dir / "mv.conflist").read_text())
    assert [p["type"] for p in conf["plugins"]] == ["splice-macvlan"]
    a = make_ns()
    cli("attach", "mv", "--netns", a.name, check=0)
    assert "10.98.3.1/24" in oracle.addresses(a.name, "eth0")
    assert oracle.ping(a.name, "10.98.3.254")
    assert cli("doctor", "mv", check=0).out.startswith("ok")
    a.sh("ip", "link", "del", "eth0")
    r = cli("doctor", "mv", check=1)
    assert "interface eth0 is missing" in r.out
    cli("doctor", "mv", "--fix", check=0)
    assert cli.lease_rows("mv") == []
    assert cli("doctor", "mv", check=0).out.startswith("ok")


def test_dual_stack(cli, make_ns):
    """Two subnets, one address of each family: listed, checked by doctor, released."""
    if not has_ipv6():
        return
    cli.create_bridge("ds", "10.98.4.0/24", "--subnet", "fd98:4::/64")
    a = make_ns()
    r = cli("attach", "ds", "--netns", a.name, "--json", check=0).json
    assert sorted(ip["address"] for ip in r["ips"]) == ["10.98.4.2/24", "fd98:4::2/64"]
    rows = cli("ipam", "ls", "ds", "--json", check=0).json
    assert sorted(x["address"] for x in rows) == ["10.98.4.2/24", "fd98:4::2/64"]
    assert cli("doctor", "ds", check=0).out.startswith("ok")
    cli.drop_lease("ds", _cid(cli, a.name))
    r = cli("doctor", "ds", "--fix", check=0)
    assert "its address fd98:4::2 is not leased" in r.out and r.out.count("FIXED") == 2
    assert len(cli.lease_rows("ds")) == 2
    cli("detach", "ds", "--netns", a.name, check=0)
    assert cli.lease_rows("ds") == [] and oracle.link_names(a.name) == {"lo"}
    # one of two leases lost: named, not for --fix (the allocator gives one address per
    # range set and call), repaired by the printed command
    b = make_ns()
    cli("attach", "ds", "--netns", b.name, check=0)
    import sqlite3

    con = sqlite3.connect(str(cli.ipam_dir / "ds" / "store.db"))
    con.execute("DELETE FROM lease WHERE container_id=? AND fam=6", (_cid(cli, b.name),))
    con.commit()
    con.close()
    r = cli("doctor", "ds", "--fix", check=1)
    assert "FIXED" not in r.out and "is not leased" in r.out and "(--fix does this)" not in r.out
    cli("detach", "ds", "--netns", b.name, check=0)
    assert cli("doctor", "ds", check=0).out.startswith("ok")


def test_ipam_release(cli, make_ns):
    """A stuck lease released by hand: refused while the attachment is cached (in use),
    by address with --force, by container id once the container went without DEL."""
    cli.create_bridge("rel", "10.98.5.0/24")
    a, b = make_ns(), make_ns()
    cli("attach", "rel", "--netns", a.name, "--container-id", "ctr-a", check=0)
    cli("attach", "rel", "--netns", b.name, "--container-id", "ctr-b", check=0)
    r = cli("ipam", "release", "rel", "--ip", "10.98.5.2", check=1)
    assert "ctr-a/eth0 is attached" in r.err and "splice detach rel" in r.err
    assert "released 10.98.5.2/24 (ctr-a/eth0)" in cli("ipam", "release", "rel", "--ip", "10.98.5.2", "--force",
                                                       check=0).out
    assert "is not leased" in cli("doctor", "rel", check=1).out
    cli("doctor", "rel", "--fix", check=0)
    assert ("ctr-a", "eth0") in cli.lease_rows("rel")
    assert "nothing to do" in cli("ipam", "release", "rel", "--ip", "10.98.5.99", check=0).out
    assert cli("ipam", "release", "rel", "--ip", "not-an-ip").rc == 2
    os.unlink(cli.cache_dir / "results" / "rel-ctr-b-eth0")  # gone without DEL
    assert "released 10.98.5.3/24 (ctr-b/eth0)" in cli("ipam", "release", "rel", "--container-id", "ctr-b",
                                                       check=0).out
    cli("detach", "rel", "--netns", a.name, "--container-id", "ctr-a", check=0)
    cli("doctor", "rel", "--fix", check=0)  # ctr-b's veth and nft elements: DEL by owner
    assert cli.lease_rows("rel") == [] and oracle.nft_map_elements(cli.host.name) == []
    assert oracle.link_names(b.name) == {"lo"}
