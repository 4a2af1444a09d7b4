"""splice-overlay under a real dockerd 20.10 (the tests/docker harness: a private dockerd and
``splice driver`` in a throwaway host namespace), that namespace joined to the etcd harness's
underlay bridge, against a second host whose ``splice driver`` is driven by the replayed calls
(test_overlay_cnm.py): ``docker network create -d splice-overlay --ipam-driver
splice-overlay``, ``docker run``, ping across VXLAN both ways, ``docker rm -f``, ``docker
network rm`` (the other host drops the route)."""

from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest

from splice.conformance import oracle

from ..cnm.conftest import wait_until
from ..docker.conftest import dk, docker_env, driver_session  # noqa: F401 - fixtures
from .conftest import CIDR, VNI
from .test_overlay_cnm import ETCD_NAME, DockerHost, host_entries
from .test_overlay import ping

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

UNDERLAY_IP = "10.231.0.40"


def test_dockerd_overlay(overlay, dk):
    env = dk
    port = "dku0"
    subprocess.run(["ip", "-n", overlay.cluster.underlay, "link", "add", port, "type", "veth", "peer", "name",
                    "ul0", "netns", env.host.name], check=True)
    try:
        subprocess.run(["ip", "-n", overlay.cluster.underlay, "link", "set", port, "master", "br0", "up"], check=True)
        env.host.sh("ip", "addr", "add", f"{UNDERLAY_IP}/24", "dev", "ul0")
        env.host.sh("ip", "link", "set", "ul0", "up")
        h2 = DockerHost(overlay, overlay.host(start=False)).start()
        try:
            h2.create_network()
            s2 = h2.subnet()
            e2, sb2, a2 = h2.run_container()
            etcd = json.dumps({"endpoints": overlay.cluster.endpoints, "prefix": overlay.prefix})
            env.network_create("ovl", "--subnet", CIDR, "-o", f"splice.vni={VNI}", "-o", f"splice.name={ETCD_NAME}",
                               "-o", "splice.leaseTTL=3", "-o", "splice.vtepInterface=ul0", "-o",
                               f"splice.etcd={etcd}", driver="splice-overlay", ipam="splice-overlay")
            env.run("c1", "ovl")
            a1 = env.container_ip("c1", "ovl")
            net = env.inspect("c1")["NetworkSettings"]["Networks"]["ovl"]
            s1 = ipaddress.ip_network(f"{a1}/{net['IPPrefixLen']}", strict=False)
            assert s1 != s2 and s1.subnet_of(ipaddress.ip_network(CIDR)) and net["IPPrefixLen"] == 24, net
            assert net["Gateway"] == str(s1.network_address + 1), net
            assert env.ping("c1", a2, count=2), env.driver_log()
            assert ping(sb2, a1)
            assert env.exec("c1", "cat", "/sys/class/net/eth0/mtu").stdout.strip() == "1450"
            env("rm", "-f", "c1")
            env("network", "rm", "ovl")
            assert not {f"spvx{VNI}", f"spvxbr{VNI}"} & oracle.link_names(env.host.name)
            wait_until(lambda: not host_entries(h2.h)[0], 5, "host 2 drops the route to the dockerd host's subnet")
            h2.remove_container(e2)
            h2.remove_network()
        finally:
            h2.d.stop()
    finally:
        subprocess.run(["ip", "-n", env.host.name, "link", "del", "ul0"], capture_output=True)
