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
