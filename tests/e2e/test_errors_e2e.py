"""Bad input gets a CNI error JSON with the right code, no traceback, no kernel state."""

from __future__ import annotations

import json

import pytest

from splice.conformance import oracle

from .conftest import ALL_VERSIONS, bridge_conflist

pytestmark = pytest.mark.root


def plugin_conf(ipam_dir, version="1.0.0", **opts):
    c = bridge_conflist(ipam_dir, version, **opts)
    p = dict(c["plugins"][0])
    p["cniVersion"] = c["cniVersion"]
    p["name"] = c["name"]
    return p


def assert_error(res, code):
    assert res.rc != 0, res
    assert "Traceback" not in res.stdout + res.stderr
    err = json.loads(res.stdout)
    assert err["code"] == code, err
    assert err["msg"]
    return err


def assert_nothing_made(host_ns, sandbox_ns):
    assert oracle.link_names(host_ns.name) == {"lo"}
    assert oracle.link_names(sandbox_ns.name) == {"lo"}
    assert oracle.nft_ruleset(host_ns.name) == [] or not oracle.nft_objects(host_ns.name, "table")


@pytest.mark.parametrize("plugin", ["splice-bridge", "splice-ipam"])
def test_env_errors(plugin, cni, host_ns, sandbox_ns, ipam_dir):
    conf = plugin_conf(ipam_dir)
    if plugin == "splice-ipam":
        conf = {"cniVersion": "1.0.0", "name": "spt-net", "type": "splice-ipam",
                "ipam": conf["ipam"]}
    assert_error(cni.run(plugin, "BOGUS", conf, netns=sandbox_ns.path), 4)
    assert_error(cni.run(plugin, "", conf, netns=sandbox_ns.path), 4)
    assert_error(cni.run(plugin, "ADD", conf, container_id=None, netns=sandbox_ns.path), 4)
    assert_error(cni.run(plugin, "ADD", conf, container_id="-bad", netns=sandbox_ns.path), 4)
    assert_error(cni.run(plugin, "ADD", conf, ifname=None, netns=sandbox_ns.path), 4)
    for bad in ["a" * 16, "a/b", "a:b", "a b", ".", ".."]:
        assert_error(cni.run(plugin, "ADD", conf, ifname=bad, netns=sandbox_ns.path), 4)
    if plugin == "splice-bridge":
        err = assert_error(cni.run(plugin, "ADD", conf, netns=None), 4)
        assert "CNI_NETNS" in err["msg"]
    assert_error(cni.run(plugin, "ADD", conf, netns=sandbox_ns.path, args="FOO=bar"), 4)
    assert_error(cni.run(plugin, "ADD", conf, netns=sandbox_ns.path, args="garbage"), 4)
    assert_nothing_made(host_ns, sandbox_ns)


def test_config_errors(cni, host_ns, sandbox_ns, ipam_dir):
    conf = plugin_conf(ipam_dir)
    assert_error(cni.run("splice-bridge", "ADD", "{not json", netns=sandbox_ns.path), 6)
    assert_error(cni.run("splice-bridge", "ADD", {**conf, "cniVersion": "9.9.9"}, netns=sandbox_ns.path), 1)
    bad_name = {**conf, "name": "bad name!"}
    assert_error(cni.run("splice-bridge", "ADD", bad_name, netns=sandbox_ns.path), 7)
    assert_error(cni.run("splice-bridge", "ADD", {**conf, "mtu": "big"}, netns=sandbox_ns.path), 7)
    assert_error(cni.run("splice-bridge", "ADD", {**conf, "vlan": 5000}, netns=sandbox_ns.path), 7)
    assert_error(cni.run("splice-bridge", "ADD", {**conf, "hairpinMode": True, "promiscMode": True},
                         netns=sandbox_ns.path), 7)
    bad_ipam = {**conf, "ipam": {**conf["ipam"], "ranges": [[{"subnet": "10.0.0.1/24"}]]}}
    assert_error(cni.run("splice-bridge", "ADD", bad_ipam, netns=sandbox_ns.path), 7)
    assert_error(cni.run("splice-bridge", "ADD", conf, netns="/run/netns/does-not-exist"), 3)
    assert_error(cni.run("splice-bridge", "CHECK", {**conf, "cniVersion": "0.3.1"}, netns=sandbox_ns.path), 1)
    assert_error(cni.run("splice-bridge", "STATUS", conf, netns=sandbox_ns.path), 1)
    assert_error(cni.run("splice-bridge", "GC", conf, netns=sandbox_ns.path), 1)
    missing_ipam_type = {**conf, "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}]]}}
    assert_error(cni.run("splice-bridge", "ADD", missing_ipam_type, netns=sandbox_ns.path), 7)
    assert_nothing_made(host_ns, sandbox_ns)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_version_command(version, cni, ipam_dir):
    for plugin in ("splice-bridge", "splice-ipam"):
        res = cni.run(plugin, "VERSION", {"cniVersion": version}, container_id=None, ifname=None)
        assert res.rc == 0, res
        out = json.loads(res.stdout)
        assert out["cniVersion"] == version
        assert out["supportedVersions"] == ALL_VERSIONS


def test_delegate_missing_ipam_binary(cni, host_ns, sandbox_ns, ipam_dir):
    conf = plugin_conf(ipam_dir)
    conf["ipam"] = {"type": "no-such-ipam"}
    err = assert_error(cni.run("splice-bridge", "ADD", conf, netns=sandbox_ns.path), 106)
    assert "no-such-ipam" in err["msg"]
    assert_nothing_made(host_ns, sandbox_ns)


# --- a failed ADD leaves nothing, and the same ADD with the config fixed succeeds --------------


def add_fails_then_fixed_add_succeeds(cni, plugin, bad, good, sandbox_ns, ipam_dir, leaks, code, *, cni_path=None):
    """ADD ``bad`` fails with ``code`` and leaves nothing (links, sandbox interface, nft
    elements, leases); ADD ``good`` (same container, same ifname) then succeeds (no 102:
    nothing of the failed ADD is in the way) and DEL cleans up."""
    err = assert_error(cni.run(plugin, "ADD", bad, netns=sandbox_ns.path), code)
    leaks.assert_clean([sandbox_ns], [ipam_dir])
    res = cni.run(plugin, "ADD", good, netns=sandbox_ns.path)
    assert res.rc == 0, res
    assert res.json["cniVersion"] == good["cniVersion"]
    prev = res.json
    res = cni.run(plugin, "DEL", {**good, "prevResult": prev}, netns=sandbox_ns.path)
    assert res.rc == 0, res
    leaks.assert_clean([sandbox_ns], [ipam_dir])
    return err


def ipam_conf(ipam_dir, version, **ipam):
    return {"cniVersion": version, "name": "spt-net", "type": "splice-ipam",
            "ipam": {"type": "splice-ipam", "ranges": [[{"subnet": "10.77.0.0/24"}]], "dataDir": str(ipam_dir), **ipam}}


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("plugin", ["splice-bridge", "splice-ipam"])
def test_bad_ipam_dns_leaves_nothing(plugin, version, cni, sandbox_ns, ipam_dir, leaks):
    """IPAM ``dns.nameservers: "x"``: splice-ipam puts its config's dns in its result; a
    malformed one is a config error (7) before anything is allocated, whether splice-ipam
    runs as its own executable or in-process under splice-bridge."""
    if plugin == "splice-ipam":
        good = ipam_conf(ipam_dir, version, dns={"nameservers": ["10.77.0.53"]})
    else:
        good = plugin_conf(ipam_dir, version)
        good["ipam"]["dns"] = {"nameservers": ["10.77.0.53"]}
    for bad_dns in ({"nameservers": "x"}, {"nameservers": [1]}, {"domain": 5}, {"search": {}}):
        bad = json.loads(json.dumps(good))
        bad["ipam"]["dns"] = bad_dns
        err = add_fails_then_fixed_add_succeeds(cni, plugin, bad, good, sandbox_ns, ipam_dir, leaks, 7)
        assert "dns" in err["msg"], err


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_bad_bridge_dns_leaves_nothing(version, cni, sandbox_ns, ipam_dir, leaks):
    good = plugin_conf(ipam_dir, version, dns={"nameservers": ["10.77.0.53"]})
    for bad_dns in ("string", {"nameservers": "x"}, [1]):
        err = add_fails_then_fixed_add_succeeds(cni, "splice-bridge", {**good, "dns": bad_dns}, good, sandbox_ns,
                                                ipam_dir, leaks, 6)
        assert "dns" in err["msg"] and "result" not in err["msg"], err


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_l2_only_result_an_old_version_cannot_carry_leaves_nothing(version, cni, sandbox_ns, ipam_dir, leaks):
    """A bridge without IPAM makes an interface without addresses: a 0.1.0/0.2.0 result
    cannot say so (it needs ip4 or ip6), ADD fails after the kernel work and undoes it."""
    good = plugin_conf(ipam_dir, version)
    bad = {k: v for k, v in good.items() if k != "ipam"}
    err = add_fails_then_fixed_add_succeeds(cni, "splice-bridge", bad, good, sandbox_ns, ipam_dir, leaks, 1)
    assert "cannot convert" in err["msg"], err


NO_IPS_IPAM = """#!/bin/sh
# A delegated IPAM that hands out no address (and records its calls).
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME" >> "$(dirname "$0")/calls"
cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion": "0.2.0", "dns": {}}'; fi
if [ "$CNI_COMMAND" = VERSION ]; then echo '{"cniVersion": "0.2.0", "supportedVersions": ["0.1.0", "0.2.0"]}'; fi
exit 0
"""


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_delegated_ipam_without_addresses_leaves_nothing(version, cni, sandbox_ns, ipam_dir, leaks, tmp_path):
    """A delegated IPAM answering no address: the 0.1.0/0.2.0 result does not convert
    after the kernel work; the interface is removed and the delegate's DEL is called."""
    d = tmp_path / "cni-bin"
    d.mkdir()
    exe = d / "spt-noips"
    exe.write_text(NO_IPS_IPAM)
    exe.chmod(0o755)
    cni.cni_path.append(str(d))
    good = plugin_conf(ipam_dir, version)
    bad = {**good, "ipam": {"type": "spt-noips"}}
    err = add_fails_then_fixed_add_succeeds(cni, "splice-bridge", bad, good, sandbox_ns, ipam_dir, leaks, 1)
    assert "cannot convert" in err["msg"], err
    assert (d / "calls").read_text().split("\n")[:2] == ["ADD c0ffee eth0", "DEL c0ffee eth0"]


@pytest.mark.parametrize("where", ["runtimeConfig", "args"])
def test_bad_mac_fails_before_ipam(where, cni, sandbox_ns, ipam_dir, leaks):
    good = plugin_conf(ipam_dir, "1.0.0")
    for mac in ("zz:00:00:00:00:01", "01:00:00:00:00:01", 5):
        bad = {**good, "runtimeConfig": {"mac": mac}} if where == "runtimeConfig" else {**good, "args": {"cni": {"mac": mac}}}
        err = add_fails_then_fixed_add_succeeds(cni, "splice-bridge", bad, good, sandbox_ns, ipam_dir, leaks, 7)
        assert "mac" in err["msg"].lower(), err
    bad_env = assert_error(cni.run("splice-bridge", "ADD", good, netns=sandbox_ns.path, args="MAC=01:00:00:00:00:01"), 4)
    assert "CNI_ARGS MAC" in bad_env["msg"], bad_env
    leaks.assert_clean([sandbox_ns], [ipam_dir])


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_route_the_kernel_refuses_leaves_nothing(version, cni, sandbox_ns, ipam_dir, leaks):
    """``ipam.routes`` via a gateway that is not on-link: valid config, refused by the kernel
    in the sandbox after the veth, the masquerade entry and the lease exist; all undone."""
    good = plugin_conf(ipam_dir, version)
    good["ipam"]["routes"] = [{"dst": "192.168.0.0/16", "gw": "10.77.0.254"}]
    bad = json.loads(json.dumps(good))
    bad["ipam"]["routes"] = [{"dst": "192.168.0.0/16", "gw": "10.99.0.1"}]
    err = add_fails_then_fixed_add_succeeds(cni, "splice-bridge", bad, good, sandbox_ns, ipam_dir, leaks, 103)
    assert "192.168.0.0/16" in err["msg"], err


def test_bridge_name_taken_by_another_kind_leaves_nothing(cni, host_ns, sandbox_ns, ipam_dir, leaks):
    host_ns.sh("ip", "link", "add", "sptnb0", "type", "veth", "peer", "name", "sptnb1")
    leaks.allow |= {"sptnb0", "sptnb1"}
    good = plugin_conf(ipam_dir, "1.1.0")
    err = add_fails_then_fixed_add_succeeds(cni, "splice-bridge", {**good, "bridge": "sptnb0"}, good, sandbox_ns,
                                            ipam_dir, leaks, 103)
    assert "not a bridge" in err["msg"], err
    assert {"sptnb0", "sptnb1"} <= oracle.link_names(host_ns.name)  # someone else's link is left alone


BAD_RESULT_IPAM = """#!/bin/sh
# A delegated IPAM whose ADD succeeds (exit 0) with an answer that is no valid result.
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME" >> "$(dirname "$0")/calls"
cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then printf '%s' "$(cat "$(dirname "$0")/answer")"; fi
exit 0
"""


@pytest.mark.parametrize("answer,code", [
    ('{"cniVersion": "1.0.0", "ips": "x"}', 6),
    ('{"cniVersion": "1.0.0", "ips": [{"address": "10.77.0.9"}]}', 6),
    ('{"cniVersion": "1.0.0", "ips": [{"address": "10.77.0.9/24", "interface": 4}]}', 7),
    ('{"cniVersion": "9.0.0"}', 1),
    ('[1]', 6),
    ('not json', 106),
    ('', 106),
])
def test_delegated_ipam_with_a_malformed_result_is_released(answer, code, cni, sandbox_ns, ipam_dir, leaks, tmp_path):
    """As the reference bridge (its deferred ipam.ExecDel once ExecAdd succeeded): a
    delegate that allocated (exit 0) but answered no valid result gets its DEL."""
    d = tmp_path / "cni-bin"
    d.mkdir()
    exe = d / "spt-badres"
    exe.write_text(BAD_RESULT_IPAM)
    exe.chmod(0o755)
    (d / "answer").write_text(answer)
    cni.cni_path.append(str(d))
    good = plugin_conf(ipam_dir, "1.0.0")
    bad = {**good, "ipam": {"type": "spt-badres"}}
    add_fails_then_fixed_add_succeeds(cni, "splice-bridge", bad, good, sandbox_ns, ipam_dir, leaks, code)
    assert (d / "calls").read_text().split("\n")[:2] == ["ADD c0ffee eth0", "DEL c0ffee eth0"]


FAILING_IPAM = """#!/bin/sh
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME" >> "$(dirname "$0")/calls"
cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion": "1.0.0", "code": 102, "msg": "taken"}'; exit 1; fi
exit 0
"""


def test_delegated_ipam_whose_add_fails_gets_no_del(cni, sandbox_ns, ipam_dir, leaks, tmp_path):
    """A delegate whose ADD failed cleaned up itself (or holds someone else's lease): as the
    reference, no DEL is sent."""
    d = tmp_path / "cni-bin"
    d.mkdir()
    exe = d / "spt-fails"
    exe.write_text(FAILING_IPAM)
    exe.chmod(0o755)
    cni.cni_path.append(str(d))
    bad = {**plugin_conf(ipam_dir, "1.0.0"), "ipam": {"type": "spt-fails"}}
    err = assert_error(cni.run("splice-bridge", "ADD", bad, netns=sandbox_ns.path), 102)
    assert err["msg"] == "taken"
    assert (d / "calls").read_text().split("\n")[:-1] == ["ADD c0ffee eth0"]
    leaks.assert_clean([sandbox_ns], [ipam_dir])


@pytest.mark.parametrize("plugin", ["splice-bridge", "splice-ipam", "splice-portmap"])
def test_oversized_and_deep_requests_through_the_executables(plugin, cni, sandbox_ns, ipam_dir, leaks):
    """Issue 9 item 8: a 70 MB request and one nested 100k deep answered code 6 (they were
    code 100), quickly, without reading the whole request."""
    import time

    head = b'{"cniVersion": "1.0.0", "name": "spt-net", "type": "' + plugin.encode() + b'", "pad": "'
    for body, needle in ((head + b"x" * (70 << 20) + b'"}', "too large"),
                         (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested")):
        t0 = time.monotonic()
        err = assert_error(cni.run(plugin, "ADD", body, netns=sandbox_ns.path), 6)
        assert needle in err["msg"], err
        assert time.monotonic() - t0 < 5
    leaks.assert_clean([sandbox_ns], [ipam_dir])
