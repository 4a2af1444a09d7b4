"""Pure parts of the kit: result shapes, nft reference search, error parsing, counters."""

from __future__ import annotations

import json
import sqlite3

from splice.conformance import kit, oracle, profiles, report
from splice.conformance.runtime import Call, Runtime, parse_error


def test_result_shapes_per_version():
    r010 = {"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1"}}
    assert kit.result_problems(r010, "0.2.0") == []
    assert kit.result_problems(r010, "0.1.0") == ["cniVersion '0.2.0' != config's '0.1.0'"]
    ips = [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}]
    r100 = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}], "ips": ips}
    assert kit.result_problems(r100, "1.0.0") == []
    r040 = {**r100, "cniVersion": "0.4.0"}
    assert "ips[0].version is None, 0.4.0 needs '4'" in kit.result_problems(r040, "0.4.0")
    r040["ips"] = [{**ips[0], "version": "4"}]
    assert kit.result_problems(r040, "0.4.0") == []
    assert "ips[0] has 'version' (removed in 1.0.0)" in kit.result_problems({**r040, "cniVersion": "1.0.0"}, "1.0.0")
    ipam = {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}]}
    assert kit.result_problems(ipam, "1.1.0", ipam_only=True) == []
    assert kit.result_problems(r100 | {"cniVersion": "1.1.0"}, "1.1.0", ipam_only=True) == [
        "IPAM result has 'interfaces'", "IPAM result ips[0] has 'interface'"]


RULESET = [
    {"metainfo": {"json_schema_version": 1}},
    {"table": {"family": "inet", "name": "t"}},
    {"chain": {"family": "inet", "table": "t", "name": "masq-10.0.0.0/24"}},
    {"rule": {"family": "ip", "table": "nat", "chain": "POSTROUTING", "handle": 5,
              "expr": [{"match": {"op": "==", "left": {"payload": {"field": "saddr"}}, "right": "10.0.0.2"}},
                       {"jump": {"target": "CNI-abc"}}]}},
    {"rule": {"family": "ip", "table": "nat", "chain": "CNI-abc", "comment": 'name: "n" id: "ctr-12345678"',
              "expr": [{"match": {"right": {"prefix": {"addr": "10.0.0.0", "len": 24}}}}]}},
    {"map": {"family": "inet", "table": "t", "name": "masq4", "elem": [["10.0.0.3", {"jump": {"target": "x"}}]]}},
]


def test_nft_references_finds_ips_and_ids_not_subnets():
    refs = oracle.nft_references(None, {"10.0.0.2"}, RULESET)
    assert refs == ["rule in ip nat chain POSTROUTING referencing 10.0.0.2 (jump CNI-abc)"]
    assert oracle.nft_references(None, {"ctr-12345678"}, RULESET) == [
        "rule in ip nat chain CNI-abc referencing ctr-12345678"]
    assert oracle.nft_references(None, {"10.0.0.3"}, RULESET) == ["map inet t masq4 element referencing 10.0.0.3"]
    assert oracle.nft_references(None, {"10.0.0.20"}, RULESET) == []


def test_errors_parsed_from_stdout_first():
    assert parse_error('{"code": 4, "msg": "x"}', '{"code": 7}') == {"code": 4, "msg": "x"}
    assert parse_error("log line\n", '{"code": 7, "msg": "y"}')["code"] == 7
    assert parse_error("nope", "nope") is None
    c = Call(1, '{"code": 1, "msg": "bad"}', "")
    assert c.error["code"] == 1 and not c.ok
    assert kit.describe_call(c) == "exit 1, code 1: bad"


def test_plugin_conf_strips_capabilities_and_keeps_declared_args():
    netlist = {"cniVersion": "1.1.0", "name": "n", "plugins": [{"type": "x", "capabilities": {"mac": True}}]}
    conf = Runtime.plugin_conf(netlist, netlist["plugins"][0], cap_args={"mac": "02:00:00:00:00:01", "ips": ["1"]})
    assert conf == {"type": "x", "cniVersion": "1.1.0", "name": "n", "runtimeConfig": {"mac": "02:00:00:00:00:01"}}


def test_reservation_counters(tmp_path):
    net = tmp_path / "n"
    net.mkdir()
    for name in ("10.0.0.2", "10.0.0.3", "last_reserved_ip.0", "lock", "fd00__5"):
        (net / name).write_text("x")
    assert profiles.count_ip_files(tmp_path, "n") == 3
    con = sqlite3.connect(net / "store.db")
    con.execute("create table lease (a)")
    con.execute("insert into lease values (1)")
    con.commit()
    con.close()
    assert profiles.count_sqlite_leases(tmp_path, "n") == 1
    assert profiles.count_generic(tmp_path, "n") == 4
    (net / "state.json").write_text(json.dumps({"a\teth0": "10.0.0.2/24"}))
    assert profiles.count_fake_ipam(tmp_path, "n") == 1
    assert profiles.count_ip_files(tmp_path, "missing") == 0


def test_template_merge_keeps_user_options_and_patches_the_kit_keys():
    tmpl = {"cniVersion": "0.4.0", "name": "x", "plugins": [{"type": "b", "bridge": "br9", "mtu": 1400, "ipam": {
        "type": "host-local", "subnet": "10.1.0.0/16", "dataDir": "/var/lib/x"}}]}
    cls = profiles.BridgeClass("b", tmpl)
    ipam = profiles.ipam_profile("host-local").section("/tmp/d", range_start="10.247.0.10", range_end="10.247.0.10")
    p = cls.plugin(ipam)
    assert p["mtu"] == 1400 and p["bridge"] == "br9"
    assert p["ipam"]["dataDir"] == "/tmp/d" and p["ipam"]["subnet"] == profiles.SUBNET
    assert p["ipam"]["rangeStart"] == "10.247.0.10" and p["ipam"]["routes"][0]["gw"] == "10.247.0.1"
    assert cls.host_links(p) == {"br9"}


def test_report_table():
    rep = {"plugin": "p", "ipam": None, "summary": {"passed": 1, "failed": 1, "skipped": 0}, "results": [
        {"id": "A-01", "spec": "3", "level": "MUST", "title": "t", "result": "pass", "reason": ""},
        {"id": "A-02", "spec": "4", "level": "SHOULD", "title": "u", "result": "fail", "reason": "why"}]}
    text = report.table([rep, rep])
    assert "| A-02 | 4 | SHOULD | u | **FAIL** | **FAIL** |" in text
    assert "- A-02 (fail): why" in report.reasons(rep)


def test_every_check_has_an_id_statements_and_a_quote():
    checks = kit.select(None)
    ids = [c.id for c in checks]
    assert len(ids) == len(set(ids))
    for c in checks:
        assert c.statements and all(1 <= s <= 54 for s in c.statements), c.id
        assert c.quote and c.title and c.level in ("MUST", "SHOULD", "lib", "MUST/SHOULD")
    covered = {s for c in checks for s in c.statements}
    # 54 is the runtime's contract (runtime.py), not a plugin property
    assert set(range(1, 54)) - covered == set(), sorted(set(range(1, 54)) - covered)


def test_plugin_class_by_name_and_override():
    assert profiles.class_for("splice-macvlan") == "macvlan" and profiles.class_for("macvlan") == "macvlan"
    assert profiles.class_for("splice-ipvlan") == "ipvlan" and profiles.class_for("/opt/cni/bin/ipvlan") == "ipvlan"
    assert profiles.class_for("bridge") == profiles.class_for("splice-bridge") == "bridge"
    assert kit.KitConfig(cni_path=[], plugin="broken-macvlan-leaky").plugin_class == "macvlan"
    assert kit.KitConfig(cni_path=[], plugin="my-macvlan", plugin_class="bridge").plugin_class == "bridge"


def test_master_classes_config_and_not_applicable_checks():
    mv = profiles.make_class("macvlan", "splice-macvlan", master="spcm9")
    ipam = profiles.ipam_profile("splice-ipam").section("/tmp/d")
    p = mv.plugin(ipam, bridge=profiles.BRIDGE2)  # the bridge class's second-network key means nothing here
    assert p == {"type": "splice-macvlan", "master": "spcm9", "ipam": ipam}
    assert mv.host_links(p) == {"spcm9"} and mv.kind == "macvlan"
    assert mv.skip_reason("CHK-09") and mv.skip_reason("DEL-07") and mv.skip_reason("CHK-05") is None
    iv = profiles.make_class("ipvlan", "ipvlan")
    assert iv.master == profiles.DEFAULT_MASTER and "MAC" in iv.skip_reason("CHK-05")
    assert profiles.make_class("bridge", "bridge").skip_reason("CHK-09") is None
    # a template's master is the one the kit makes, unless --master names another; its options stay
    tmpl = {"plugins": [{"type": "macvlan", "master": "eth7", "mode": "private", "ipam": {"type": "host-local"}}]}
    t = profiles.make_class("macvlan", "macvlan", tmpl)
    assert t.master == "eth7" and t.plugin(ipam)["mode"] == "private"
    assert profiles.make_class("macvlan", "macvlan", tmpl, "spcm1").plugin(ipam)["master"] == "spcm1"
    for bad in ("a" * 16, "a/b", "a b", "..", ""):
        assert profiles.ifname_problem(bad), bad
    try:
        profiles.make_class("ipvlan", "ipvlan", master="x" * 16)
    except ValueError as e:
        assert "longer than 15" in str(e)
    else:
        raise AssertionError("a 16-byte master was accepted")
