"""splice.libnet.rtnl's requests are pyroute2 messages: the lean import of pyroute2, the
pinned release range, and the bytes the messages encode to (no kernel needed)."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from splice.libnet import linkinfo, netlink, rtnl

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pyroute2.ndb", "pyroute2.iproute", "pyroute2.ipdb", "pyroute2.ipset", "pyroute2.nslink",
         "pyroute2.conntrack", "pyroute2.nftables", "pyroute2.netlink.nl80211", "pyroute2.netlink.generic")


def _py(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_lean_import_then_the_full_pyroute2_api():
    """Importing rtnl loads pyroute2's message classes, not its package __init__ (NDB,
    IPRoute, ...); the messages encode; afterwards the whole public API of pyroute2 is
    importable in the same process, from the same module object."""
    p = _py(
        "import sys, threading\n"
        f"HEAVY = {HEAVY!r}\n"
        "import splice.libnet.rtnl as r\n"
        "heavy = [m for m in sys.modules if m.startswith(HEAVY)]\n"
        "assert not heavy, heavy\n"
        "assert 'IPRoute' not in vars(sys.modules['pyroute2'])\n"
        "from splice.libnet import netlink as nl\n"
        "body = r._link_body(name='x0', kind='veth', data=r.Veth('x1'))\n"
        "assert nl.get_str(nl.attr_map(body, 16)[3]) == 'x0'\n"
        "import pyroute2\n"
        "pkg = pyroute2\n"
        "got = []\n"
        "ts = [threading.Thread(target=lambda: got.append(pyroute2.IPRoute)) for _ in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "from pyroute2 import IPRoute, NDB, NetlinkError\n"
        "from pyroute2.iproute import IPRoute as IPRoute2\n"
        "from pyroute2.config.version import __version__ as v\n"
        "assert set(got) == {IPRoute} and IPRoute is IPRoute2 and sys.modules['pyroute2'] is pkg\n"
        "assert pyroute2.__version__ == v and 'NDB' in dir(pyroute2) and IPRoute in pyroute2.__all__  # objects\n"
        "assert '__getattr__' not in vars(pyroute2)\n"
        "assert 'pyroute2.ndb' in sys.modules\n"
        "with IPRoute() as ipr:\n"
        "    assert ipr.link_lookup(ifname='lo') == [1]\n"
        "assert r._link_body(name='x0') == body[:len(r._link_body(name='x0'))]\n"
        "print('ok')\n"
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


@pytest.mark.parametrize("first", [
    "import pyroute2",
    "from pyroute2 import IPRoute",
    "import pyroute2.netlink.rtnl.ifinfmsg",
])
def test_pyroute2_imported_before_rtnl(first):
    """Whatever imported pyroute2 first, rtnl builds the same messages, and the full API is
    there afterwards."""
    p = _py(
        f"{first}\n"
        "import splice.libnet.rtnl as r\n"
        "import pyroute2\n"
        "from pyroute2 import NDB\n"
        "print(r._link_body(name='x0', kind='vlan', parent=2, data=r.Vlan(5)).hex())\n"
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == rtnl._link_body(name="x0", kind="vlan", parent=2, data=rtnl.Vlan(5)).hex()


def test_submodule_attributes_of_the_lean_package():
    """Before the full __init__ runs, a submodule attribute imports just that submodule."""
    p = _py(
        "import sys\n"
        "import splice.libnet.rtnl\n"
        "import pyroute2\n"
        "assert pyroute2.netlink.rtnl.ifinfmsg.ifinfmsg\n"
        "assert pyroute2.common.AF_MPLS == 28\n"
        "assert 'pyroute2.iproute' not in sys.modules and 'IPRoute' not in vars(pyroute2)\n"
        "print('ok')\n"
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_the_pin_is_the_lean_import_range():
    """pyproject.toml pins pyroute2 to the releases the lean import is checked against, and
    the installed one is among them."""
    text = (REPO / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*)\]", text, re.M).group(1)
    pin = re.search(r'"pyroute2>=([\d.]+),<([\d.]+)"', deps)
    assert pin, deps
    low, high = netlink.PYROUTE2_SUPPORTED
    assert (netlink._version(pin.group(1)), netlink._version(pin.group(2))) == (low, high)
    from pyroute2.config.version import __version__

    assert low <= netlink._version(__version__) < high


def test_versions():
    v = netlink._version
    assert v("0.9.7") == (0, 9, 7) and v("0.10.0rc1") == (0, 10, 0) and v("0.9.8.post1") == (0, 9, 8)
    assert v("unknown") == () and v("") == ()


# -- what the messages encode to ---------------------------------------------------------
def _nla_codes(cls) -> dict[str, int]:
    """name -> attribute type of a pyroute2 class's nla_map (its declared numbering)."""
    out = {}
    for i, entry in enumerate(cls.nla_map):
        if isinstance(entry[0], int):
            out[entry[1]] = entry[0]
        else:
            out[entry[0]] = i
    return out


def test_reply_reader_numbers_are_pyroute2s():
    """The attribute numbers rtnl/linkinfo read replies with are the ones pyroute2 sends."""
    info = netlink.linkinfo
    tables = [  # longest prefix first
        ("IFLA_BRPORT_", info.data_map["bridge_slave"]),
        ("IFLA_BRIDGE_", netlink.linkmsg.af_spec_bridge),
        ("IFLA_INFO_", info),
        ("IFLA_BR_", info.data_map["bridge"]),
        ("IFLA_VLAN_", info.data_map["vlan"]),
        ("IFLA_VXLAN_", info.data_map["vxlan"]),
        ("IFLA_MACVLAN_", info.data_map["macvlan"]),
        ("IFLA_IPVLAN_", netlink.ipvlan_data),
        ("IFLA_", netlink.linkmsg),
        ("IFA_", netlink.ifaddrmsg),
        ("RTAX_", netlink.rtmsg.metrics),
        ("RTA_", netlink.rtmsg),
        ("NDA_", netlink.ndmsg),
    ]
    checked = 0
    for mod in (rtnl, linkinfo):
        for name, value in vars(mod).items():
            if not isinstance(value, int) or name.startswith("IFA_F_"):
                continue
            for prefix, cls in tables:
                if name.startswith(prefix):
                    assert _nla_codes(cls).get(name) == value, (mod.__name__, name, value)
                    checked += 1
                    break
    assert checked > 60


# Bodies (after the netlink header) of requests as the kernel reads them: the layout of
# the uapi headers; NLA_F_NESTED is masked (pyroute2 does not set it, the kernel accepts both).
GOLDEN = {  # as the stdlib implementation (checked against the kernel) encoded them
    "veth": (
        "000000000000000001000000010000000f00030076623030303030303031000008000400dc0500000a000100"
        "020000aa0001000008000a000500000054001200090001007665746800000000440002004000010000000000"
        "0000000000000000000000000f00030073703030303030303031000008001c000700000008000400dc050000"
        "0a000100020000aa00020000"),
    "brport": "0000000000000000000000000000000008000300766230001000140073706c6963653a613a623a63",
    "route": "02000000fe04000100000000080005000a4d00010800040003000000",
    "vlan range": "0700000005000000000000000000000014001a000800020008000a000800020010001400",
    "fdb": (
        "0700000005000000800002000a0002000000000000000000080001000a0000020600060012b5000008000700"
        "05000000"),
    "ipvlan": (
        "0000000000000000000000000000000007000300697600000800050003000000240012000b0001006970766c"
        "616e00001400020006000100020000000600020002000000"),
}


def _mask_nested(body: bytes, offset: int) -> bytes:
    b = bytearray(body)

    def walk(off: int, end: int) -> None:
        while off + 4 <= end:
            size = int.from_bytes(b[off:off + 2], "little")
            if size < 4 or off + size > end:
                return
            kind = int.from_bytes(b[off + 2:off + 4], "little")
            b[off + 2:off + 4] = (kind & ~netlink.NLA_F_NESTED).to_bytes(2, "little")
            walk(off + 4, off + size)  # harmless on a non-nested payload: no valid chain there
            off += (size + 3) & ~3

    walk(offset, len(b))
    return bytes(b)


def test_requests_encode_as_the_kernel_reads_them():
    rt = rtnl.Rtnl.__new__(rtnl.Rtnl)  # builders only: no socket
    built = {
        "veth": (rt._add_veth_op("vb00000001", "sp00000001", peer_netns_fd=7, master=5, mtu=1500,
                                 mac="02:00:00:aa:00:01", peer_mac="02:00:00:aa:00:02", up=True).req.body, 16),
        "brport": (rt._set_brport_op("vb0", alias="splice:a:b:c").req.body, 16),
        "route": (rt._add_route_op(ipaddress.ip_network("0.0.0.0/0"), gw=ipaddress.ip_address("10.77.0.1"),
                                   oif=3).req.body, 12),
        "vlan range": (rt._vlan_body(5, 10, 20), 16),
        "fdb": (rt._fdb_op("append", 5, "00:00:00:00:00:00", dst=ipaddress.ip_address("10.0.0.2"), port=4789,
                           vni=5).req.body, 12),
        "ipvlan": (rt._add_link_op("ipvlan", "iv", parent=3, data=rtnl.Ipvlan("l3s", "vepa")).req.body, 16),
    }
    for name, (body, offset) in built.items():
        assert _mask_nested(body, offset).hex() == GOLDEN[name], name


def test_kind_data_round_trip():
    """Each kind class decodes what it encodes (pyroute2 writes, splice reads)."""
    for data in (rtnl.Bridge(vlan_filtering=True, vlan_default_pvid=5), rtnl.Vlan(10, rtnl.ETH_P_8021AD),
                 rtnl.Macvlan("private"), rtnl.Ipvlan("l3", "private"),
                 rtnl.Vxlan(vni=42, port=4789, local="10.0.0.1", group="239.1.1.1", dev=2, learning=False, ttl=64,
                            ageing=300, udp_csum=True, gbp=True),
                 rtnl.Vxlan(vni=7, local="fd00::1", udp6_zero_csum_tx=True, udp6_zero_csum_rx=False)):
        assert type(data).decode(data.encode()) == data
    assert rtnl.Veth("p").encode() and not rtnl.Bridge().encode()
    with pytest.raises(ValueError):
        rtnl._link_body(name="x", mac="02:00:00")
