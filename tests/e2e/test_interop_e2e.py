"""splice and the Go reference plugins mixed in one conflist (Debian containernetworking-plugins)."""

from __future__ import annotations

import pytest

from splice.conformance import oracle

from .conftest import bridge_conflist, count_leases

pytestmark = pytest.mark.root


def test_reference_bridge_with_splice_ipam(reference_plugins, runtime, host_ns, sandbox_ns, ipam_dir):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    conf["plugins"][0]["type"] = "bridge"  # the Go reference bridge
    conf["plugins"][0]["ipMasq"] = False
    result = runtime.add(conf, "ctr-go", sandbox_ns.path)
    addr = result["ips"][0]["address"]
    assert addr.startswith("10.77.0.")
    assert oracle.addresses(sandbox_ns.name, "eth0") == [addr]
    assert count_leases(ipam_dir, "spt-net") == 1
    assert oracle.ping(sandbox_ns.name, "10.77.0.1")
    runtime.check(conf, "ctr-go", sandbox_ns.path)
    runtime.delete(conf, "ctr-go", sandbox_ns.path)
    assert count_leases(ipam_dir, "spt-net") == 0
    assert oracle.link_names(sandbox_ns.name) == {"lo"}


def test_splice_bridge_with_host_local(reference_plugins, runtime, host_ns, sandbox_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0", ipam_type="host-local")
    result = runtime.add(conf, "ctr-hl", sandbox_ns.path)
    addr = result["ips"][0]["address"]
    assert oracle.addresses(sandbox_ns.name, "eth0") == [addr]
    assert (ipam_dir / "spt-net" / addr.split("/")[0]).exists()  # host-local's own file
    assert oracle.ping(sandbox_ns.name, "10.77.0.1")
    runtime.check(conf, "ctr-hl", sandbox_ns.path)
    runtime.delete(conf, "ctr-hl", sandbox_ns.path)
    assert not (ipam_dir / "spt-net" / addr.split("/")[0]).exists()
    leaks.assert_clean([sandbox_ns])


def test_splice_bridge_with_static_ipam(reference_plugins, runtime, host_ns, sandbox_ns, ipam_dir, leaks):
    conf = bridge_conflist(ipam_dir, "1.0.0")
    conf["plugins"][0]["ipam"] = {"type": "static", "addresses": [{"address": "10.77.0.9/24", "gateway": "10.77.0.1"}]}
    result = runtime.add(conf, "ctr-st", sandbox_ns.path)
    assert result["ips"][0]["address"] == "10.77.0.9/24"
    assert oracle.addresses(sandbox_ns.name, "eth0") == ["10.77.0.9/24"]
    runtime.delete(conf, "ctr-st", sandbox_ns.path)
    leaks.assert_clean([sandbox_ns])
