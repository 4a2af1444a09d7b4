"""containerd 1.6 ``ctr run --cni`` on a splice network (splice-bridge + splice-ipam, 1.0.0).

containerd and ctr run inside a throwaway host namespace; ctr sees our conflist and plugins
through a private mount namespace (see conftest.py). ctr 1.6 itself is the CNI runtime: ``ctr
run --cni`` (foreground) sends ADD with ``CNI_NETNS=/proc/<pid>/ns/net`` before it starts the
task, and once the task has exited it sends DEL with an empty ``CNI_NETNS`` (the task, and with
it the netns, is gone). ``ctr run -d`` followed by ``ctr task kill`` / ``ctr container rm``
sends no DEL at all in 1.6, so the test keeps ``ctr run`` in the foreground.
"""

from __future__ import annotations

import ipaddress
import subprocess

from splice.conformance import oracle

from . import hostenv
from .conftest import inet4


def _task_status(cd, name: str) -> str | None:
    for line in cd.ctr("task", "list", check=False).stdout.splitlines()[1:]:
        words = line.split()
        if words and words[0] == name:
            return words[-1]
    return None


def test_ctr_run_cni_add_traffic_and_del_without_netns(containerd_clean, tmp_path):
    cd = containerd_clean
    name = "spc-c1"
    cid = f"{cd.namespace}-{name}"  # the CNI_CONTAINERID ctr uses
    log = tmp_path / "ctr-run.log"
    proc = cd.run_cni(name, "sleep", "600", log=log)
    try:
        def running():
            if proc.poll() is not None:
                raise AssertionError(f"ctr run exited {proc.returncode}: {log.read_text()}\n{cd.describe_calls()}")
            return _task_status(cd, name) == "RUNNING"

        # ctr starts the task only after the ADD succeeded
        hostenv.wait_until(running, timeout=30, what="the task to run")

        # ADD: the container has the address splice-ipam reserved for it
        adds = cd.calls_for(cid, "ADD")
        assert len(adds) == 1, cd.describe_calls()
        assert adds[0]["env"]["CNI_NETNS"].startswith("/proc/"), adds[0]["env"]
        addr = inet4(cd.exec(name, "ip", "-o", "-4", "addr", "show", "eth0").stdout)
        iface = ipaddress.ip_interface(addr)
        assert iface.network == ipaddress.ip_network(cd.subnet)
        assert cd.lease_addresses(cid) == [addr]
        cd.assert_calls_ok([cid])

        # the host side is in the throwaway host namespace only
        veth = hostenv.host_veth_name(cd.network, cid)
        assert {cd.bridge, veth} <= cd.host_links()
        cd.assert_machine_untouched()

        # traffic both ways: host namespace -> container, container -> bridge gateway
        assert oracle.ping(cd.host.name, str(iface.ip), count=1, timeout=3)
        cd.exec(name, "ping", "-c", "1", "-W", "3", cd.gateway)

        # kill the task: ctr run sends DEL without a netns, then deletes the task and exits
        cd.ctr("task", "kill", "-s", "SIGKILL", name)
        proc.wait(timeout=60)
        dels = cd.calls_for(cid, "DEL")
        assert len(dels) == 1, cd.describe_calls(cid)
        assert dels[0]["env"].get("CNI_NETNS", "") == "", dels[0]["env"]
        assert dels[0]["rc"] == 0, cd.describe_calls(cid)
        cd.ctr("containers", "delete", name)

        cd.assert_calls_ok([cid])
        cd.assert_clean([cid])
    finally:
        if proc.poll() is None:
            cd.ctr("task", "kill", "-s", "SIGKILL", name, check=False)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()  # our own ctr process, by PID
                proc.wait(timeout=10)
