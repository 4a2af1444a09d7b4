"""What the kit knows about a class of plugins: how to write its config, which host
objects may outlive an attachment, and how to count an IPAM plugin's reservations.

A *plugin class* builds the plugin object of a conflist for a plugin type named on the
command line (``--plugin``). Only the "bridge" class exists today (the reference ``bridge``
and ``splice-bridge``: keys ``bridge``, ``isGateway``, ``ipMasq``, ``ipam``). ``--config FILE``
replaces the built-in template by a user conflist; the kit then only patches ``name``,
``cniVersion``, ``ipam.dataDir``, ``ipam.routes`` and the first range (subnet, and the bounds
where a check needs them): the checks rely on known addresses.

An *IPAM profile* knows the IPAM section of a host-local-compatible plugin (``ranges``,
``routes``, ``dataDir``) and how to count its reservations from the outside:
``host-local`` keeps one file per address, ``splice-ipam`` a SQLite store, the kit's own
``spc-fake-ipam`` a JSON file; any other type gets the generic counter (both of the former).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

SUBNET = "10.247.0.0/24"
SUBNET2 = "10.247.1.0/24"
BRIDGE = "spcbr0"
BRIDGE2 = "spcbr1"
NETWORK = "spc-net"
NETWORK2 = "spc-net2"
ROUTE_DST = "192.0.2.0/24"  # TEST-NET-1: a route the IPAM hands out, installed only in sandboxes
FAKE_IPAM = "spc-fake-ipam"
PREV_PLUGIN = "spc-prev"


# -- reservation counters ------------------------------------------------------------------


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.replace("_", ":"))
        return True
    except ValueError:
        return False


def count_ip_files(data_dir: Path, network: str) -> int:
    """host-local: one file per reserved address, named by the address."""
    d = Path(data_dir) / network
    if not d.is_dir():
        return 0
    return sum(1 for f in d.iterdir() if f.is_file() and _is_ip(f.name))


def count_sqlite_leases(data_dir: Path, network: str) -> int:
    """splice-ipam: rows of every ``*lease*`` table in the network's SQLite files."""
    d = Path(data_dir) / network
    if not d.is_dir():
        return 0
    total = 0
    for db in d.glob("*.db"):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
            for t in tables:
                if "lease" in t.lower():
                    total += con.execute(f'select count(*) from "{t}"').fetchone()[0]
        finally:
            con.close()
    return total


def count_fake_ipam(data_dir: Path, network: str) -> int:
    f = Path(data_dir) / network / "state.json"
    if not f.exists():
        return 0
    try:
        return len(json.loads(f.read_text() or "{}"))
    except ValueError:
        return 0


def count_generic(data_dir: Path, network: str) -> int:
    return count_ip_files(data_dir, network) + count_sqlite_leases(data_dir, network)


COUNTERS: dict[str, Callable[[Path, str], int]] = {
    "host-local": count_ip_files,
    "splice-ipam": count_sqlite_leases,
    FAKE_IPAM: count_fake_ipam,
}


@dataclass
class IpamProfile:
    """A host-local-compatible IPAM type."""

    type: str
    counter: Callable[[Path, str], int] = count_generic
    supports_ranges: bool = True  # rangeStart/rangeEnd (pool exhaustion checks)
    supports_ip_args: bool = True  # args.cni.ips / CNI_ARGS IP= (CNI CONVENTIONS.md)

    def section(self, data_dir: Path, subnet: str = SUBNET, *, range_start: str | None = None,
                range_end: str | None = None, routes: bool | str = True, **extra) -> dict:
        """``routes``: True = one route with an explicit ``gw`` (the subnet's first host),
        "nogw" = the same route without ``gw`` (the SPEC's own example form), False = none."""
        rng: dict = {"subnet": subnet}
        if range_start:
            rng["rangeStart"] = range_start
        if range_end:
            rng["rangeEnd"] = range_end
        sec: dict = {"type": self.type, "ranges": [[rng]], "dataDir": str(data_dir)}
        if routes:
            route = {"dst": ROUTE_DST}
            if routes != "nogw":
                route["gw"] = str(next(ipaddress.ip_network(subnet).hosts()))
            sec["routes"] = [route]
        sec.update(extra)
        return sec

    def reservations(self, data_dir: Path, network: str) -> int:
        return self.counter(Path(data_dir), network)


def ipam_profile(ipam_type: str | None) -> IpamProfile | None:
    if not ipam_type:
        return None
    if ipam_type == FAKE_IPAM:
        return IpamProfile(ipam_type, count_fake_ipam, supports_ranges=False, supports_ip_args=False)
    return IpamProfile(ipam_type, COUNTERS.get(ipam_type, count_generic))


def fake_ipam_section(data_dir: Path, subnet: str = SUBNET, fail_on: tuple[str, ...] = ()) -> dict:
    sec: dict = {"type": FAKE_IPAM, "subnet": subnet, "dataDir": str(data_dir)}
    if fail_on:
        sec["failOn"] = list(fail_on)
    return sec


# -- plugin classes ------------------------------------------------------------------------


@dataclass
class BridgeClass:
    """Bridge-like main plugins: a host bridge, a veth into the sandbox, optional masquerade."""

    plugin_type: str
    template: dict | None = None  # a user conflist (--config); None = the built-in one
    name: str = "bridge"
    options: dict = field(default_factory=dict)

    def _template_plugin(self) -> dict:
        assert self.template is not None
        plugins = self.template.get("plugins") or [self.template]
        for p in plugins:
            if p.get("type") == self.plugin_type:
                return copy.deepcopy(p)
        return copy.deepcopy(plugins[0])

    def plugin(self, ipam: dict | None, *, bridge: str = BRIDGE, **opts) -> dict:
        if self.template is not None:
            p = self._template_plugin()
            p["type"] = self.plugin_type
            if ipam is not None:
                p["ipam"] = _merge_ipam(p.get("ipam"), ipam)
            if bridge != BRIDGE:
                p["bridge"] = bridge
        else:
            p = {"type": self.plugin_type, "bridge": bridge, "isGateway": True, "ipMasq": True,
                 "ipam": ipam if ipam is not None else {}}
        p.update(self.options)
        p.update(opts)
        return p

    def host_links(self, plugin: dict) -> set[str]:
        """Host links that may outlive every attachment (the bridge is never deleted by DEL)."""
        return {plugin.get("bridge") or "cni0"}


def _merge_ipam(template_ipam: dict | None, kit_ipam: dict) -> dict:
    """The template's IPAM section with the kit's dataDir (and, when the kit set them, its
    range bounds) patched in; a different IPAM type (the kit's fake IPAM) replaces it."""
    if not isinstance(template_ipam, dict) or template_ipam.get("type") != kit_ipam.get("type"):
        return kit_ipam
    out = copy.deepcopy(template_ipam)
    for key in ("dataDir", "routes"):
        if key in kit_ipam:
            out[key] = kit_ipam[key]
    kit_rng = (kit_ipam.get("ranges") or [[{}]])[0][0]
    if out.get("ranges"):
        rng = out["ranges"][0][0]
    elif "subnet" in out:
        rng = out
    else:
        return out
    for key in ("subnet", "rangeStart", "rangeEnd"):
        if key in kit_rng:
            rng[key] = kit_rng[key]
    return out


PLUGIN_CLASSES = {"bridge": BridgeClass}
