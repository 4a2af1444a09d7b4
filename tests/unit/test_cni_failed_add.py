"""A failed ADD leaves nothing (issue 9 item 1), in-process parts: splice-ipam validates the
dns it will answer before allocating and releases a result it cannot render; the main-plugin
adapter rejects a bad container MAC before IPAM."""

from __future__ import annotations

import io
import json

import pytest

from splice.plugins.cni import ipam_plugin as ip
from splice.plugins.cni.errors import from_exception
from splice.plugins.cni.main_plugin import check_mac, container_mac
from splice.plugins.cni.skel import run_plugin

from .test_ipam_plugin import cmd, conf


def leases(tmp_path) -> list:
    with ip._open(cmd(conf(tmp_path)), ranges=False) as ipam:
        return ipam.get("c1", "eth0")


@pytest.mark.parametrize("dns", [{"nameservers": "x"}, {"nameservers": [1]}, {"domain": 5}, {"search": {}},
                                 {"options": "rotate"}])
def test_bad_ipam_dns_allocates_nothing(tmp_path, dns):
    with pytest.raises(Exception) as e:
        ip.SpliceIpam().add(cmd(conf(tmp_path, dns=dns)))
    err = from_exception(e.value)
    assert err.code == 7 and "ipam.dns" in err.msg and "result" not in err.msg, err.msg
    assert leases(tmp_path) == []


def test_bad_ipam_dns_is_a_status_error_too(tmp_path):
    with pytest.raises(Exception) as e:
        ip.SpliceIpam().status(cmd(conf(tmp_path, dns={"nameservers": "x"}), "STATUS"))
    assert from_exception(e.value).code == 7


def test_bad_ipam_dns_does_not_block_del(tmp_path):
    ip.SpliceIpam().add(cmd(conf(tmp_path)))
    ip.SpliceIpam().delete(cmd(conf(tmp_path, dns={"nameservers": "x"}), "DEL"))
    assert leases(tmp_path) == []


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.4.0", "1.1.0"])
def test_executable_bad_dns_exits_1_without_a_lease(tmp_path, version):
    c = conf(tmp_path, dns={"nameservers": "x"})
    c["cniVersion"] = version
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/spt-none", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/nonexistent"}
    out = io.StringIO()
    rc = run_plugin(ip.SpliceIpam(), env=env, stdin=io.BytesIO(json.dumps(c).encode()), stdout=out)
    err = json.loads(out.getvalue())
    assert rc == 1 and err["code"] == 7 and err["cniVersion"] == version, err
    assert leases(tmp_path) == []


def test_a_result_that_does_not_render_is_released(tmp_path, monkeypatch):
    """Safety net: whatever makes splice-ipam's result unprintable, the lease goes."""
    real = ip.lease_result
    monkeypatch.setattr(ip, "lease_result", lambda cfg, ls: {**real(cfg, ls), "routes": [{"dst": "nope"}]})
    with pytest.raises(Exception) as e:
        ip.SpliceIpam().add(cmd(conf(tmp_path)))
    assert from_exception(e.value).code == 6
    assert leases(tmp_path) == []


def test_release_failure_of_the_safety_net_is_reported(tmp_path, monkeypatch):
    real = ip.lease_result
    monkeypatch.setattr(ip, "lease_result", lambda cfg, ls: {**real(cfg, ls), "routes": [{"dst": "nope"}]})

    def broken(a):
        raise OSError("store is read-only")

    monkeypatch.setattr(ip, "ipam_del", broken)
    with pytest.raises(Exception) as e:
        ip.SpliceIpam().add(cmd(conf(tmp_path)))
    assert "rollback: IPAM release: store is read-only" in from_exception(e.value).details


@pytest.mark.parametrize("config,args,code,needle", [
    ({"runtimeConfig": {"mac": 5}}, {}, 7, "runtimeConfig.mac must be a MAC address string"),
    ({"args": {"cni": {"mac": ["02:00:00:00:00:01"]}}}, {}, 7, "args.cni.mac must be a MAC address string"),
    ({"runtimeConfig": {"mac": "zz:00:00:00:00:01"}}, {}, 7, "runtimeConfig.mac: invalid MAC"),
    ({"args": {"cni": {"mac": "01:00:00:00:00:01"}}}, {}, 7, "multicast"),
    ({}, {"MAC": "00:00:00:00:00:00"}, 4, "CNI_ARGS MAC"),
])
def test_bad_container_mac(tmp_path, config, args, code, needle):
    a = cmd({**conf(tmp_path), **config}, args=args)
    with pytest.raises(Exception) as e:
        check_mac(a)
    err = from_exception(e.value)
    assert err.code == code and needle in err.msg, err.msg


def test_mac_precedence_unchanged(tmp_path):
    a = cmd({**conf(tmp_path), "runtimeConfig": {"mac": "02:00:00:00:00:01"},
             "args": {"cni": {"mac": "02:00:00:00:00:02"}}}, args={"MAC": "02:00:00:00:00:03"})
    assert container_mac(a) == "02:00:00:00:00:01"
    a.config["runtimeConfig"] = {"mac": ""}
    assert container_mac(a) == "02:00:00:00:00:02"
    a.config["args"] = {}
    assert container_mac(a) == "02:00:00:00:00:03"
    check_mac(a)


@pytest.mark.parametrize("raw", ["x", "10.1.0.5/99", "10.1.0.5,nope"])
def test_bad_cni_args_ip_is_an_environment_error(tmp_path, raw):
    from splice.ipam.errors import IpamConfigError

    with pytest.raises(IpamConfigError) as e:  # still an IPAM request error for its callers
        ip.SpliceIpam().add(cmd(conf(tmp_path), args={"IP": raw}))
    err = from_exception(e.value)
    assert err.code == 4 and "CNI_ARGS IP" in err.msg, err.msg
    assert leases(tmp_path) == []


def test_bad_config_ips_stay_config_errors(tmp_path):
    with pytest.raises(Exception) as e:
        ip.SpliceIpam().add(cmd({**conf(tmp_path), "runtimeConfig": {"ips": ["x"]}}))
    assert from_exception(e.value).code == 7


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "STATUS", "GC"])
def test_network_name_longer_than_a_file_name_is_a_config_error(tmp_path, command):
    c = {**conf(tmp_path), "name": "n" * 256, "cni.dev/valid-attachments": []}
    verb = {"ADD": "add", "DEL": "delete", "CHECK": "check", "STATUS": "status", "GC": "gc"}[command]
    with pytest.raises(Exception) as e:
        getattr(ip.SpliceIpam(), verb)(cmd(c, command, prev={"ips": []}))
    err = from_exception(e.value)
    assert err.code == 7 and "255" in err.msg, err.msg
    assert list(tmp_path.iterdir()) == []


def test_network_name_of_255_bytes_works(tmp_path):
    c = {**conf(tmp_path), "name": "n" * 255}
    assert ip.SpliceIpam().add(cmd(c))["ips"]
    ip.SpliceIpam().delete(cmd(c, "DEL"))


def _many_ranges(n: int) -> list:
    import ipaddress

    base = ipaddress.ip_address("10.0.0.0")
    return [[{"subnet": f"{base + 8 * i}/29"}] for i in range(n)]


@pytest.mark.parametrize("where", ["ipam.ranges", "runtimeConfig.ipRanges"])
def test_too_many_ranges_are_refused_before_parsing(tmp_path, where):
    import time

    c = conf(tmp_path)
    if where == "ipam.ranges":
        c["ipam"]["ranges"] = _many_ranges(8000)
    else:
        c["runtimeConfig"] = {"ipRanges": _many_ranges(8000)}
    t0 = time.perf_counter()
    with pytest.raises(Exception) as e:
        ip.SpliceIpam().add(cmd(c))
    assert time.perf_counter() - t0 < 1.0
    err = from_exception(e.value)
    assert err.code == 7 and where in err.msg and "256" in err.msg, err.msg
    assert leases(tmp_path) == []
    ip.SpliceIpam().delete(cmd(c, "DEL"))  # DEL still finds the store


def test_256_ranges_are_fine(tmp_path):
    c = conf(tmp_path, ranges=[sum(_many_ranges(256), [])])
    assert ip.SpliceIpam().add(cmd(c))["ips"]


@pytest.mark.parametrize("rc,answer,allocated", [
    (0, '{"cniVersion": "1.0.0", "ips": "x"}', True),
    (0, "[1]", True),
    (0, "not json", True),
    (0, '{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "interface": 3}]}', True),
    (1, '{"cniVersion": "1.0.0", "code": 102, "msg": "taken"}', False),
    (1, '{"cniVersion": "1.0.0", "code": 6, "msg": "delegate spt-x result: mimicry"}', False),  # failed: no DEL
    (2, "", False),
])
def test_delegate_allocated_pins_the_delegate_errors(tmp_path, rc, answer, allocated):
    """The adapter tells 'the delegate's ADD succeeded but answered no result' (send DEL)
    from 'the delegate's ADD failed' (do not) by the error's type (BadDelegateResult), never
    by its words: a failing delegate that prints the same words gets no DEL."""
    from splice.plugins.cni.delegate import delegate
    from splice.plugins.cni.main_plugin import _delegate_allocated

    exe = tmp_path / "spt-x"
    exe.write_text(f"#!/bin/sh\ncat >/dev/null\nprintf '%s' '{answer}'\nexit {rc}\n")
    exe.chmod(0o755)
    a = cmd({**conf(tmp_path), "ipam": {"type": "spt-x"}})
    a.path = [str(tmp_path)]
    with pytest.raises(Exception) as e:
        delegate("ADD", "spt-x", a)
    assert _delegate_allocated(e.value) is allocated
