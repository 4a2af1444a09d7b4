"""What the kit knows about a class of plugins: how to write its config, what it needs in
each throwaway host namespace, which host objects may outlive an attachment, which checks do
not apply to it, and how to count an IPAM plugin's reservations.

A *plugin class* builds the plugin object of a conflist for a plugin type named on the
command line (``--plugin``); the class follows the type's name (:func:`class_for`) unless
``--class`` names one:

- ``bridge`` (the reference ``bridge`` and ``splice-bridge``): keys ``bridge``, ``isGateway``,
  ``ipMasq``, ``ipam``; the bridge may outlive every attachment.
- ``macvlan`` / ``ipvlan`` (the reference ``macvlan``/``ipvlan`` and ``splice-macvlan``/
  ``splice-ipvlan``): keys ``master``, ``ipam``. The kit makes the master (``--master``, default
  ``spcmaster0``) in every host namespace, a veth whose peer is in a throwaway "switch"
  namespace; the master is the only host link the leak check allows. DEL-07 and CHK-09 (the
  plugin's firewall/NAT state) do not apply; nor, for ipvlan, CHK-05 (an ipvlan link has its
  master's MAC, which the kernel refuses to change). A kernel without the class's link kind
  stops the run before the first check, saying so.

``--config FILE`` replaces the built-in template by a user conflist; the kit then only patches
``name``, ``cniVersion``, ``ipam.dataDir``, ``ipam.routes``, the first range (subnet, and the
bounds where a check needs them) and, for macvlan/ipvlan, ``master``: the checks rely on known
addresses and on the master the kit made.

An *IPAM profile* knows the IPAM section of a host-local-compatible plugin (``ranges``,
``routes``, ``dataDir``) and how to count its reservations from the outside:
``host-local`` keeps one file per address, ``splice-ipam`` a SQLite store, the kit's own
``spc-fake-ipam`` a JSON file; any other type gets the generic counter (both of the former).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from splice.conformance import harness

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


class PluginClass:
    """What every class shares: the user template (``--config``), kernel preparation of each
    host namespace, and the checks that do not apply to the class (skipped, with the reason)."""

    name = "?"
    kind: str | None = None  # a kernel link kind the class needs (probed before the first check)
    # check id -> why the check does not apply to this class (reported as the skip reason)
    not_applicable: dict[str, str] = {}

    def __init__(self, plugin_type: str, template: dict | None = None, options: dict | None = None) -> None:
        self.plugin_type = plugin_type
        self.template = template  # a user conflist (--config); None = the built-in one
        self.options = dict(options or {})

    def _template_plugin(self) -> dict:
        assert self.template is not None
        plugins = self.template.get("plugins") or [self.template]
        for p in plugins:
            if p.get("type") == self.plugin_type:
                return copy.deepcopy(p)
        return copy.deepcopy(plugins[0])

    def _from_template(self, ipam: dict | None) -> dict:
        p = self._template_plugin()
        p["type"] = self.plugin_type
        if ipam is not None:
            p["ipam"] = _merge_ipam(p.get("ipam"), ipam)
        return p

    def host_links(self, plugin: dict) -> set[str]:
        """Host links that may outlive every attachment of ``plugin`` (the leak check allows them)."""
        return set()

    def prepare_host(self, new_namespace: Callable[[], "harness.Namespace"], host: "harness.Namespace") -> set[str]:
        """Make what the class needs in a fresh host namespace before any plugin runs there;
        returns the host links it made (the leak check allows them)."""
        return set()

    def skip_reason(self, check_id: str) -> str | None:
        return self.not_applicable.get(check_id)


class BridgeClass(PluginClass):
    """Bridge-like main plugins: a host bridge, a veth into the sandbox, optional masquerade."""

    name = "bridge"

    def plugin(self, ipam: dict | None, *, bridge: str = BRIDGE, **opts) -> dict:
        if self.template is not None:
            p = self._from_template(ipam)
            if bridge != BRIDGE:
                p["bridge"] = bridge
        else:
            p = {"type": self.plugin_type, "bridge": bridge, "isGateway": True, "ipMasq": True,
                 "ipam": ipam if ipam is not None else {}}
        p.update(self.options)
        p.update(opts)
        return p

    def host_links(self, plugin: dict) -> set[str]:
        """The bridge is never deleted by DEL (in both implementations)."""
        return {plugin.get("bridge") or "cni0"}


DEFAULT_MASTER = "spcmaster0"


def ifname_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Linux interface name (the kernel's dev_valid_name), or None."""
    if not name:
        return "it is empty"
    if len(name.encode()) > 15:
        return "it is longer than 15 bytes"
    if name in (".", ".."):
        return "it is '.' or '..'"
    if any(c in name for c in "/:") or any(c.isspace() for c in name):
        return "it contains '/', ':' or whitespace"
    return None
SWITCH_PORT = "spcsw0"  # the master's veth peer, in the check's "switch" namespace
NO_FIREWALL = "the {cls} class keeps no firewall/NAT state (no ipMasq): nothing to flush"


class MasterClass(PluginClass):
    """Plugins that stack a link on a host master and move it into the sandbox (macvlan, ipvlan):
    no host object of their own. The kit makes the master in every host namespace: a veth pair,
    ``master`` (up) in the host, its peer (up) in a "switch" namespace of the check; both go with
    the check's namespaces."""

    def __init__(self, plugin_type: str, template: dict | None = None, options: dict | None = None,
                 master: str | None = None) -> None:
        super().__init__(plugin_type, template, options)
        tmpl_master = self._template_plugin().get("master") if template is not None else None
        self.master = master or (tmpl_master if isinstance(tmpl_master, str) and tmpl_master else DEFAULT_MASTER)
        problem = ifname_problem(self.master)
        if problem:
            raise ValueError(f"master {self.master!r} is not a usable interface name: {problem}")
        self.not_applicable = {"DEL-07": NO_FIREWALL.format(cls=self.name),
                               "CHK-09": NO_FIREWALL.format(cls=self.name)}

    def plugin(self, ipam: dict | None, *, bridge: str = BRIDGE, **opts) -> dict:
        """``bridge`` (the bridge class's second network) has no meaning here: every network of a
        check shares the master."""
        if self.template is not None:
            p = self._from_template(ipam)
        else:
            p = {"type": self.plugin_type, "ipam": ipam if ipam is not None else {}}
        p["master"] = self.master
        p.update(self.options)
        p.update(opts)
        return p

    def host_links(self, plugin: dict) -> set[str]:
        return {self.master}

    def prepare_host(self, new_namespace, host) -> set[str]:
        switch = new_namespace()
        host.sh("ip", "link", "add", self.master, "type", "veth", "peer", "name", SWITCH_PORT,
                "netns", switch.name)
        host.sh("ip", "link", "set", self.master, "up")
        switch.sh("ip", "link", "set", SWITCH_PORT, "up")
        return {self.master}

    def kernel_problem(self, new_namespace) -> str | None:
        """Why this kernel cannot run the class (its link kind is missing), or None."""
        host = new_namespace()
        self.prepare_host(new_namespace, host)
        p = host.sh("ip", "link", "add", "spcprobe0", "link", self.master, "type", self.kind, check=False)
        if p.returncode == 0:
            return None
        return (f"this kernel ({os.uname().release}) lacks {self.kind}: `ip link add ... type {self.kind}` "
                f"failed ({(p.stderr or p.stdout).strip()}); the {self.name} class needs CONFIG_"
                f"{self.kind.upper()} (in the splice repository: scripts/vm-run.sh -- splice-conformance ...)")


class MacvlanClass(MasterClass):
    """``macvlan`` (Go reference) and ``splice-macvlan``: keys ``master``, ``mode`` (default
    bridge), ``ipam``."""

    name = "macvlan"
    kind = "macvlan"


class IpvlanClass(MasterClass):
    """``ipvlan`` (Go reference) and ``splice-ipvlan``: keys ``master``, ``mode`` (default l2),
    ``ipam``. An ipvlan link has its master's MAC and the kernel refuses to change it."""

    name = "ipvlan"
    kind = "ipvlan"

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.not_applicable["CHK-05"] = ("an ipvlan link shares its master's MAC address and the kernel refuses "
                                         "to change it: the breakage cannot be made")


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


PLUGIN_CLASSES: dict[str, type[PluginClass]] = {"bridge": BridgeClass, "macvlan": MacvlanClass,
                                                 "ipvlan": IpvlanClass}


def class_for(plugin_type: str) -> str:
    """The class of a plugin type by its name: ``*ipvlan*`` -> ipvlan, ``*macvlan*`` -> macvlan,
    anything else -> bridge (``--class`` overrides)."""
    base = plugin_type.rsplit("/", 1)[-1].lower()
    for name in ("ipvlan", "macvlan"):
        if name in base:
            return name
    return "bridge"


def make_class(name: str, plugin_type: str, template: dict | None = None, master: str | None = None) -> PluginClass:
    cls = PLUGIN_CLASSES[name]
    if issubclass(cls, MasterClass):
        return cls(plugin_type, template, master=master)
    return cls(plugin_type, template)
