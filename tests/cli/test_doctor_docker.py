"""``splice doctor --cnm-state-dir``: the Docker driver's records against the kernel, with a
real ``splice driver`` in a throwaway host (the tests/cnm harness, imported): clean after
a network and an endpoint are made; a deleted host veth is named, with the Docker-side
repair, and nothing is "fixed" (dockerd owns endpoints)."""

from __future__ import annotations

import pytest

from splice.plugins.owners import host_veth_name

from ..cnm.conftest import NID, EID1, DriverProcess, create_network

pytestmark = pytest.mark.root


def test_doctor_reads_the_docker_driver_state(cli, tmp_path):
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="spt-cli-"))  # short: unix socket paths
    d = DriverProcess(cli.host, root).start()
    try:
        c = d.client()
        net = create_network(c, NID, "10.251.9.0/24")
        a = c.ok("IpamDriver.RequestAddress", {"Address": "", "Options": None, "PoolID": net["pools"][0]})
        c.ok("NetworkDriver.CreateEndpoint", {"EndpointID": EID1, "NetworkID": NID, "Interface": {
            "Address": a["Address"], "AddressIPv6": "", "MacAddress": ""}, "Options": {}})
        state = str(d.state_dir)
        r = cli("doctor", "--cnm-state-dir", state, "--json", check=0)
        assert [n["network"] for n in r.json["networks"]] == ["docker"] and r.json["problems"] == []
        cli.host.sh("ip", "link", "del", host_veth_name(NID, EID1, "eth"))
        r = cli("doctor", "--cnm-state-dir", state, "--fix", check=1)
        assert f"endpoint {EID1[:12]}: host veth {host_veth_name(NID, EID1, 'eth')} of network {NID[:12]} is missing" \
            in r.out
        assert "docker network disconnect -f" in r.out and "FIXED" not in r.out
        r = cli("doctor", "--cnm-state-dir", str(tmp_path), check=1)
        assert "is not the Docker driver's state directory" in r.err
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)
