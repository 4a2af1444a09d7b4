"""podman 4.3 with the CNI backend, on a splice network (splice-bridge + splice-ipam, 1.0.0).

podman runs inside a throwaway host namespace (see conftest.py): the bridge and the host veths
must appear there and never in the machine's own namespace.
"""

from __future__ import annotations

import ipaddress

from . import hostenv
from .conftest import IMAGE, inet4, link_mac


def _in_subnet(pm, cidr: str) -> ipaddress.IPv4Interface:
    iface = ipaddress.ip_interface(cidr)
    net = ipaddress.ip_network(pm.subnet)
    assert iface.network == net, f"{cidr} is not an address of {net}"
    assert iface.ip != ipaddress.ip_address(pm.gateway), f"{cidr} is the gateway"
    return iface


def test_two_containers_get_addresses_reach_each_other_and_rm_releases(podman_clean):
    pm = podman_clean
    a = pm(*pm.run_args("-d", "--name", "spc-a", IMAGE, "sleep", "600")).stdout.strip()
    b = pm(*pm.run_args("-d", "--name", "spc-b", IMAGE, "sleep", "600")).stdout.strip()

    # each container sees one address of the subnet on eth0, the one splice-ipam reserved for it
    addr_a = inet4(pm("exec", "spc-a", "ip", "-o", "-4", "addr", "show", "eth0").stdout)
    addr_b = inet4(pm("exec", "spc-b", "ip", "-o", "-4", "addr", "show", "eth0").stdout)
    ip_a, ip_b = _in_subnet(pm, addr_a).ip, _in_subnet(pm, addr_b).ip
    assert ip_a != ip_b
    assert pm.lease_addresses(a) == [addr_a]
    assert pm.lease_addresses(b) == [addr_b]
    assert sorted(pm.leases()) == sorted([(a, "eth0"), (b, "eth0")])
    # podman understood splice's result
    assert pm("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "spc-a").stdout.strip() == str(ip_a)
    pm.assert_calls_ok([a, b])

    # the host side lives in the throwaway host namespace, not in the machine's
    links = pm.host_links()
    assert {pm.bridge, hostenv.host_veth_name(pm.network, a), hostenv.host_veth_name(pm.network, b)} <= links, links
    pm.assert_machine_untouched()

    # traffic: A -> B across the bridge, and the host (bridge gateway) -> A
    pm("exec", "spc-a", "ping", "-c", "1", "-W", "3", str(ip_b))
    pm("exec", "spc-b", "ping", "-c", "1", "-W", "3", str(ip_a))
    pm("exec", "spc-a", "ping", "-c", "1", "-W", "3", pm.gateway)

    # podman rm -f: DEL for both; no veth, no reservation left
    pm("rm", "-f", "-t", "0", "spc-a", "spc-b")
    assert pm.calls_for(a, "DEL") and pm.calls_for(b, "DEL")
    pm.assert_calls_ok([a, b])
    pm.assert_clean([a, b])


def test_static_ip_and_mac(podman_clean):
    pm = podman_clean
    ip = str(ipaddress.ip_network(pm.subnet)[50])
    mac = "02:00:0a:d5:00:32"
    cid = pm(*pm.run_args("-d", "--name", "spc-static", "--ip", ip, "--mac-address", mac,
                          IMAGE, "sleep", "600")).stdout.strip()

    prefix = ipaddress.ip_network(pm.subnet).prefixlen
    assert inet4(pm("exec", "spc-static", "ip", "-o", "-4", "addr", "show", "eth0").stdout) == f"{ip}/{prefix}"
    assert link_mac(pm("exec", "spc-static", "ip", "-o", "link", "show", "eth0").stdout) == mac
    assert pm.lease_addresses(cid) == [f"{ip}/{prefix}"]
    inspect = pm("inspect", "-f", "{{.NetworkSettings.IPAddress}} {{.NetworkSettings.MacAddress}}",
                  "spc-static").stdout.split()
    assert inspect == [ip, mac]
    pm("exec", "spc-static", "ping", "-c", "1", "-W", "3", pm.gateway)
    pm.assert_calls_ok([cid])

    pm("rm", "-f", "-t", "0", "spc-static")
    pm.assert_calls_ok([cid])
    pm.assert_clean([cid])


def test_run_rm_releases_through_the_cleanup_process(podman_clean):
    """``podman run --rm``: the DEL comes from ``podman container cleanup`` (spawned by conmon
    when the container exits, with its own environment), after ``podman run`` has returned."""
    pm = podman_clean
    out = pm(*pm.run_args("--rm", "--name", "spc-once", IMAGE, "ip", "-o", "-4", "addr", "show", "eth0")).stdout
    _in_subnet(pm, inet4(out))
    adds = [c for c in pm.calls() if c["env"].get("CNI_COMMAND") == "ADD"
            and "K8S_POD_NAME=spc-once" in c["env"].get("CNI_ARGS", "")]
    assert len(adds) == 1, pm.describe_calls()
    cid = adds[0]["env"]["CNI_CONTAINERID"]

    hostenv.wait_until(lambda: pm.calls_for(cid, "DEL") and not pm.leases()
                       and pm.host_links() <= {"lo", pm.bridge},
                       timeout=30, what=f"the cleanup DEL of {cid}")
    pm.assert_calls_ok([cid])
    pm.assert_clean([cid])


def test_static_address_survives_network_reload_and_restart(podman_clean):
    """``podman network reload`` is DEL + ADD in the same netns, the static IP now (also) in
    ``runtimeConfig.ips`` — twice; ``stop``/``start`` is DEL, then ADD in a new netns."""
    pm = podman_clean
    ip = str(ipaddress.ip_network(pm.subnet)[77])
    mac = "02:00:0a:d5:00:4d"
    prefix = ipaddress.ip_network(pm.subnet).prefixlen
    cid = pm(*pm.run_args("-d", "--name", "spc-reload", "--ip", ip, "--mac-address", mac,
                          IMAGE, "sleep", "600")).stdout.strip()

    pm("network", "reload", "spc-reload")
    assert len(pm.calls_for(cid, "ADD")) == 2 and len(pm.calls_for(cid, "DEL")) == 1, pm.describe_calls()
    assert inet4(pm("exec", "spc-reload", "ip", "-o", "-4", "addr", "show", "eth0").stdout) == f"{ip}/{prefix}"
    assert link_mac(pm("exec", "spc-reload", "ip", "-o", "link", "show", "eth0").stdout) == mac
    assert pm.lease_addresses(cid) == [f"{ip}/{prefix}"]

    pm("stop", "-t", "0", "spc-reload")
    hostenv.wait_until(lambda: not pm.leases(), timeout=30, what="stop to release the address")
    pm("start", "spc-reload")
    assert inet4(pm("exec", "spc-reload", "ip", "-o", "-4", "addr", "show", "eth0").stdout) == f"{ip}/{prefix}"
    pm("exec", "spc-reload", "ping", "-c", "1", "-W", "3", pm.gateway)
    assert pm.leases() == [(cid, "eth0")]
    pm.assert_calls_ok([cid])

    pm("rm", "-f", "-t", "0", "spc-reload")
    pm.assert_calls_ok([cid])
    pm.assert_clean([cid])
