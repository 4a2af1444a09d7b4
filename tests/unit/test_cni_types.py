"""CNI result conversion between all spec versions (golden), validation, Wiring mapping."""

from __future__ import annotations

import copy
import ipaddress

import pytest

from splice.plugins.cni import version as ver
from splice.plugins.cni.errors import CniError
from splice.plugins.cni.types import convert, parse_result, result_to_wiring, to_canonical, wiring_to_result
from splice.plugins.model import DNS, Interface, IPConfig, Route, Wiring

ALL = ver.ALL_VERSIONS
V04X = ("0.3.0", "0.3.1", "0.4.0")
V02X = ("0.1.0", "0.2.0")

# A bridge-like dual-stack result using every 1.1.0 field.
CANON = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "br0", "mac": "02:00:00:00:00:01"},
        {"name": "veth1234", "mac": "02:00:00:00:00:02", "mtu": 1400},
        {"name": "eth0", "mac": "02:00:00:00:00:03", "mtu": 1400, "sandbox": "/run/netns/sb",
         "socketPath": "/run/x.sock", "pciID": "0000:00:1f.6"},
    ],
    "ips": [
        {"interface": 2, "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
        {"interface": 2, "address": "10.0.1.2/24"},
        {"interface": 2, "address": "fd00::2/64", "gateway": "fd00::1"},
        {"address": "fd01::2/64"},
    ],
    "routes": [
        {"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1300, "advmss": 1260, "priority": 5, "table": 100, "scope": 0},
        {"dst": "::/0", "gw": "fd00::1"},
        {"dst": "192.168.0.0/16"},
    ],
    "dns": {"nameservers": ["10.0.0.53"], "domain": "example.org", "search": ["example.org"], "options": ["ndots:2"]},
}

IFACES_1_0 = [
    {"name": "br0", "mac": "02:00:00:00:00:01"},
    {"name": "veth1234", "mac": "02:00:00:00:00:02"},
    {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/run/netns/sb"},
]
ROUTES_1_0 = [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "::/0", "gw": "fd00::1"}, {"dst": "192.168.0.0/16"}]

GOLDEN = {
    "1.1.0": CANON,
    "1.0.0": {"cniVersion": "1.0.0", "interfaces": IFACES_1_0, "ips": CANON["ips"], "routes": ROUTES_1_0,
              "dns": CANON["dns"]},
    **{v: {"cniVersion": v, "interfaces": IFACES_1_0,
           "ips": [
               {"version": "4", "interface": 2, "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
               {"version": "4", "interface": 2, "address": "10.0.1.2/24"},
               {"version": "6", "interface": 2, "address": "fd00::2/64", "gateway": "fd00::1"},
               {"version": "6", "address": "fd01::2/64"},
           ],
           "routes": ROUTES_1_0, "dns": CANON["dns"]} for v in V04X},
    **{v: {"cniVersion": v,
           "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1",
                   "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "192.168.0.0/16"}]},
           "ip6": {"ip": "fd00::2/64", "gateway": "fd00::1", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
           "dns": CANON["dns"]} for v in V02X},
}


def strip_1_1(c: dict) -> dict:
    c = copy.deepcopy(c)
    for i in c["interfaces"]:
        for k in ("mtu", "socketPath", "pciID"):
            i.pop(k, None)
    for r in c["routes"]:
        for k in ("mtu", "advmss", "priority", "table", "scope"):
            r.pop(k, None)
    return c


@pytest.mark.parametrize("to", ALL)
def test_golden_down_conversion(to):
    out = convert(CANON, to)
    assert out == GOLDEN[to]
    assert list(out) == list(GOLDEN[to])  # key order too (cniVersion first)


@pytest.mark.parametrize("frm", ALL)
def test_golden_up_conversion(frm):
    got = to_canonical(GOLDEN[frm], frm)
    if frm == "1.1.0":
        assert got == CANON
    elif frm in V02X:
        assert got == {
            "cniVersion": "1.1.0", "interfaces": [],
            "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                    {"address": "fd00::2/64", "gateway": "fd00::1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "192.168.0.0/16"},
                       {"dst": "::/0", "gw": "fd00::1"}],
            "dns": CANON["dns"],
        }
    else:
        assert got == strip_1_1(CANON)


@pytest.mark.parametrize("frm", ALL)
@pytest.mark.parametrize("to", ALL)
def test_every_pair_round_trips_through_canonical(frm, to):
    """frm-shaped -> canonical -> to-shaped -> canonical -> frm-shaped is stable where lossless."""
    canon = to_canonical(GOLDEN[frm], frm)
    out = convert(canon, to)
    assert out["cniVersion"] == to
    back = convert(to_canonical(out, to), frm)
    lossless = (ver.has_multiple_ips(frm) == ver.has_multiple_ips(to)) and (
        frm != "1.1.0" or to == "1.1.0")
    if lossless:
        assert back == GOLDEN[frm]
    # converting twice is idempotent whatever is lost
    assert convert(to_canonical(back, frm), to) == out


def test_1_1_0_identity():
    assert convert(CANON, "1.1.0") == CANON
    assert convert(to_canonical(CANON, "1.1.0"), "1.1.0") == CANON


@pytest.mark.parametrize("to", [v for v in ALL if v != "1.1.0"])
def test_1_1_only_fields_dropped(to):
    out = convert(CANON, to)
    text = repr(out)
    for field in ("socketPath", "pciID", "advmss", "priority", "table", "scope", "'mtu'"):
        assert field not in text


@pytest.mark.parametrize("to", V02X)
def test_02x_keeps_first_ip_per_family(to):
    c = {"ips": [{"address": "fd00::9/64"}, {"address": "10.9.0.2/16"}, {"address": "10.8.0.2/16"},
                 {"address": "fd00::8/64"}], "routes": [], "interfaces": []}
    out = convert(c, to)
    assert out == {"cniVersion": to, "ip4": {"ip": "10.9.0.2/16"}, "ip6": {"ip": "fd00::9/64"}}


@pytest.mark.parametrize("to", V02X)
def test_02x_single_family_drops_other_routes(to):
    c = {"ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}],
         "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}]}
    assert convert(c, to) == {"cniVersion": to, "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1",
                                                        "routes": [{"dst": "0.0.0.0/0"}]}}
    c6 = {"ips": [{"address": "fd00::2/64"}], "routes": [{"dst": "0.0.0.0/0"}]}
    assert convert(c6, to) == {"cniVersion": to, "ip6": {"ip": "fd00::2/64"}}


@pytest.mark.parametrize("to", V02X)
@pytest.mark.parametrize("c", [{"interfaces": [{"name": "eth0"}], "ips": [], "routes": []}, {}])
def test_cannot_convert_without_ip(to, c):
    with pytest.raises(CniError) as exc:
        convert(c, to)
    assert exc.value.code == 1
    assert exc.value.msg == "cannot convert: no valid IP addresses"


@pytest.mark.parametrize("to", [v for v in ALL if v not in V02X])
def test_l2_only_converts_for_newer(to):
    out = convert({"interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}]}, to)
    assert out == {"cniVersion": to, "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}]}


@pytest.mark.parametrize("to", ALL)
def test_empty_dns_and_lists_omitted(to):
    out = convert({"ips": [{"address": "10.0.0.2/24"}], "dns": {"nameservers": [], "search": []},
                   "routes": [], "interfaces": []}, to)
    assert "dns" not in out and "routes" not in out and "interfaces" not in out


@pytest.mark.parametrize("frm", V04X)
def test_04x_version_field_ignored_on_parse(frm):
    c = to_canonical({"ips": [{"version": "4", "address": "10.0.0.2/24"}]}, frm)
    assert c["ips"] == [{"address": "10.0.0.2/24"}]


def test_0_3_0_misnamed_ip_field():
    r = {"cniVersion": "0.3.0", "ip": [{"version": "4", "address": "10.0.0.2/24"}]}
    assert to_canonical(r, "0.3.0")["ips"] == [{"address": "10.0.0.2/24"}]
    # "ips" wins when both exist; "ip" is not an alias for other versions
    assert to_canonical({"ips": [{"address": "10.0.0.3/24"}], "ip": [{"address": "10.0.0.2/24"}]},
                        "0.3.0")["ips"] == [{"address": "10.0.0.3/24"}]
    assert to_canonical({"ip": [{"address": "10.0.0.2/24"}]}, "0.3.1")["ips"] == []
    assert convert(to_canonical(r, "0.3.0"), "0.3.0") == {
        "cniVersion": "0.3.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]}


def test_ipam_abbreviated_result():
    r = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}],
         "routes": [{"dst": "0.0.0.0/0"}]}
    c = parse_result(r, "1.1.0")
    assert c["interfaces"] == [] and "interface" not in c["ips"][0]
    assert convert(c, "0.4.0")["ips"] == [{"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1"}]


def test_addresses_normalised_like_go():
    c = to_canonical({"ips": [{"address": "2001:DB8:0:0::1/64", "gateway": "2001:db8::0:FFFF"}],
                      "routes": [{"dst": "10.1.2.3/8"}]}, "1.0.0")
    assert c["ips"] == [{"address": "2001:db8::1/64", "gateway": "2001:db8::ffff"}]
    assert c["routes"] == [{"dst": "10.1.2.3/8"}]  # host bits kept, as Go's types.ParseCIDR


def test_unknown_keys_kept_only_for_1_1_0():
    r = {"cniVersion": "1.1.0", "x-top": 1, "interfaces": [{"name": "eth0", "x-if": 2}],
         "ips": [{"address": "10.0.0.2/24", "x-ip": 3}], "routes": [{"dst": "0.0.0.0/0", "x-rt": 4}]}
    c = parse_result(r, "1.1.0")
    assert convert(c, "1.1.0") == r
    for v in ALL:
        if v != "1.1.0":
            assert "x-" not in repr(convert(c, v))


def test_parse_result_uses_own_version():
    assert parse_result({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}}, "1.0.0")["ips"] == [
        {"address": "10.0.0.2/24"}]
    assert parse_result({"ip4": {"ip": "10.0.0.2/24"}}, "0.2.0")["ips"] == [{"address": "10.0.0.2/24"}]
    assert parse_result({"ips": [{"address": "10.0.0.2/24"}]}, "1.0.0")["ips"] == [{"address": "10.0.0.2/24"}]


@pytest.mark.parametrize("version,result,code", [
    ("1.0.0", [], 6),
    ("1.0.0", {"ips": {}}, 6),
    ("1.0.0", {"ips": [{"address": "10.0.0.2"}]}, 6),
    ("1.0.0", {"ips": [{"address": "10.0.0.256/24"}]}, 6),
    ("1.0.0", {"ips": [{"address": 167772162}]}, 6),
    ("1.0.0", {"ips": [{}]}, 6),
    ("1.0.0", {"ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.0/24"}]}, 6),
    ("1.0.0", {"ips": [{"address": "10.0.0.2/24", "interface": 0}]}, 7),
    ("1.0.0", {"interfaces": [{"name": "a"}], "ips": [{"address": "10.0.0.2/24", "interface": 1}]}, 7),
    ("1.0.0", {"interfaces": [{"name": "a"}], "ips": [{"address": "10.0.0.2/24", "interface": "0"}]}, 6),
    ("1.0.0", {"interfaces": [{"name": "a"}], "ips": [{"address": "10.0.0.2/24", "interface": True}]}, 6),
    ("1.0.0", {"interfaces": [{"mac": "x"}]}, 6),
    ("1.0.0", {"interfaces": ["eth0"]}, 6),
    ("1.1.0", {"interfaces": [{"name": "a", "mtu": -1}]}, 6),
    ("1.0.0", {"routes": [{"dst": "default"}]}, 6),
    ("1.0.0", {"routes": [{"dst": "0.0.0.0/0", "gw": "x"}]}, 6),
    ("1.1.0", {"routes": [{"dst": "0.0.0.0/0", "table": "main"}]}, 6),
    ("1.0.0", {"dns": {"nameservers": "8.8.8.8"}}, 6),
    ("1.0.0", {"dns": []}, 6),
    ("0.2.0", {"ip4": {"ip": "fd00::1/64"}}, 6),
    ("0.2.0", {"ip6": {"ip": "10.0.0.1/24"}}, 6),
    ("0.2.0", {"ip4": {"gateway": "10.0.0.1"}}, 6),
    ("0.2.0", {"ip4": "10.0.0.2/24"}, 6),
    ("2.0.0", {}, 1),
    ("1.0", {}, 1),
])
def test_rejects_nonsense(version, result, code):
    with pytest.raises(CniError) as exc:
        to_canonical(result, version)
    assert exc.value.code == code


def test_convert_rejects_unknown_target_and_invalid_input():
    with pytest.raises(CniError) as exc:
        convert(CANON, "2.0.0")
    assert exc.value.code == 1
    with pytest.raises(CniError) as exc:
        convert({"ips": [{"address": "nope"}]}, "1.0.0")
    assert exc.value.code == 6


def test_convert_does_not_mutate_input():
    c = copy.deepcopy(CANON)
    for v in ALL:
        convert(c, v)
    assert c == CANON


# --- Wiring -------------------------------------------------------------------------------

WIRING = Wiring(
    interfaces=[Interface("br0", "02:00:00:00:00:01"), Interface("veth1", "02:00:00:00:00:02"),
                Interface("eth0", "02:00:00:00:00:03", "/run/netns/sb", mtu=1400)],
    ips=[IPConfig(ipaddress.ip_interface("10.0.0.2/24"), ipaddress.ip_address("10.0.0.1"), 2),
         IPConfig(ipaddress.ip_interface("fd00::2/64"), None, 2)],
    routes=[Route(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.0.0.1"), table=100, scope=0),
            Route(ipaddress.ip_network("fd00:1::/64"))],
    dns=DNS(nameservers=["10.0.0.53"], search=["a.example"]),
)


def test_wiring_to_result():
    assert wiring_to_result(WIRING) == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "br0", "mac": "02:00:00:00:00:01"}, {"name": "veth1", "mac": "02:00:00:00:00:02"},
                       {"name": "eth0", "mac": "02:00:00:00:00:03", "mtu": 1400, "sandbox": "/run/netns/sb"}],
        "ips": [{"interface": 2, "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                {"interface": 2, "address": "fd00::2/64"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "table": 100, "scope": 0}, {"dst": "fd00:1::/64"}],
        "dns": {"nameservers": ["10.0.0.53"], "search": ["a.example"]},
    }


def test_wiring_round_trip():
    assert result_to_wiring(wiring_to_result(WIRING)) == WIRING
    assert result_to_wiring(wiring_to_result(Wiring())) == Wiring()


def test_wiring_bad_interface_index():
    w = Wiring(ips=[IPConfig(ipaddress.ip_interface("10.0.0.2/24"), interface=0)])
    with pytest.raises(CniError) as exc:
        wiring_to_result(w)
    assert exc.value.code == 7


@pytest.mark.parametrize("version", ALL)
def test_result_to_wiring_from_any_version(version):
    w = result_to_wiring(GOLDEN[version])
    assert w.ips[0].address == ipaddress.ip_interface("10.0.0.2/24")
    assert w.ips[0].gateway == ipaddress.ip_address("10.0.0.1")
    assert ipaddress.ip_network("0.0.0.0/0") in [r.dst for r in w.routes]
    assert w.dns.nameservers == ["10.0.0.53"]


def test_result_to_wiring_route_with_host_bits():
    w = result_to_wiring({"cniVersion": "1.0.0", "routes": [{"dst": "10.1.2.3/8"}]})
    assert w.routes[0].dst == ipaddress.ip_network("10.0.0.0/8")
