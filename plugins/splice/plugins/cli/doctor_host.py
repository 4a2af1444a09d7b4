"""``splice doctor``'s host-level checks (issue 13): sysctls, 802.1Q sub-interfaces and
VXLAN peers, read through libnet (``sysctl``, rtnetlink dumps) in the namespace doctor
runs in (the host's), never by running ``ip``/``sysctl``/``bridge``.

* sysctls: a bridge network with ``isGateway``/``ipMasq`` and cached attachments needs ``net.ipv4.ip_forward`` = 1
  (IPv6 subnets: ``net.ipv6.conf.all.forwarding``), what the bridge driver's ADD sets;
  ``--fix`` sets it (unambiguous: ADD would).
* VLAN sub-interfaces (macvlan/ipvlan master ``<parent>.<vid>`` or ``vlan``): it exists and
  is up while the network has cached attachments (named: ``ip link set … up``, or detach +
  attach). Once per run (without NAME): a splice-made one (``vlans.is_ours``) with no
  registered user, no master and no link on it → named, ``--fix`` runs ``vlans.release``
  (what ``vlans.gc`` does per link; never a sub-interface without splice's alias); one a
  network still names with cached attachments is only named (its registrations were lost);
  a registration of this namespace whose link is gone → named, ``--fix`` drops it.
* VXLAN (``splice-vxlan``): the device exists (when attachments are cached) and is a vxlan
  link; its entries agree with each other, as ``program_peer`` makes them: every remote
  route ``via GW onlink`` has a permanent neighbour GW with a MAC, and that MAC an FDB entry
  with a remote ``dst``; neighbours and FDB entries no route accounts for are named too.
  Never fixed: the underlay address of a peer is the registry's (the agent re-programs
  every peer when it starts).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket

IFF_UP = 0x1


def _rt(fn):
    from splice.libnet import rtnl
    from splice.libnet.netns import Netns

    return rtnl.run(Netns.current(), fn)


# -- sysctls ------------------------------------------------------------------------------
def sysctl_problems(doc, net, cfg, cached, Problem) -> list:
    from splice.libnet import sysctl
    from splice.libnet.errors import NotSupported

    if not cached or not (getattr(cfg, "is_gateway", False) or getattr(cfg, "ip_masq", False)):
        return []
    versions = set()
    for subnet, _gw in net.subnets():
        try:
            versions.add(ipaddress.ip_network(subnet, strict=False).version)
        except ValueError:
            pass
    versions = versions or {4}
    out = []
    for v, key in ((4, "ipv4/ip_forward"), (6, "ipv6/conf/all/forwarding")):
        if v not in versions:
            continue
        try:
            have = sysctl.read(key)
        except NotSupported:
            continue  # IPv6 disabled
        except Exception as e:  # noqa: BLE001
            out.append(Problem(net.name, "host", f"cannot read sysctl net.{key.replace('/', '.')}: {e}"))
            continue
        if have != "1":
            dotted = "net." + key.replace("/", ".")
            out.append(Problem(net.name, "host", f"sysctl {dotted} is {have}: the bridge's gateway does not "
                                                 f"forward (isGateway/ipMasq need 1)",
                               f"sysctl -w {dotted}=1", lambda k=key: sysctl.write(k, 1)))
    return out


# -- VLAN sub-interfaces ------------------------------------------------------------------
def vlan_name(cfg) -> str | None:
    vid = getattr(cfg, "vlan", None)
    if not vid:
        return None
    from splice.plugins import vlans

    return vlans.subif_name(getattr(cfg, "vlan_parent", None) or cfg.master, vid)


def vlan_problems(doc, net, cfg, cached, Problem) -> list:
    name = vlan_name(cfg)
    if name is None or not cached or getattr(cfg, "link_in_container", False):  # that master is the sandbox's
        return []
    link = doc.k.links().get(name)
    if link is None:
        return [Problem(net.name, "-", f"VLAN sub-interface {name} is missing ({len(cached)} attachment(s) are "
                                       f"cached on it: their links went with it)",
                        f"re-attach each container (splice detach/attach), or {doc.cmd('gc', net.name)} for "
                        f"containers that are gone")]
    if not link.flags & IFF_UP:
        return [Problem(net.name, "-", f"VLAN sub-interface {name} is down ({len(cached)} attachment(s) on it)",
                        f"ip link set {name} up")]
    return []


def vlan_orphans(doc, masters_in_use: dict[str, str], Problem) -> list:
    """splice-made sub-interfaces nothing uses, registrations whose link is gone."""
    from splice.plugins import vlans

    def body(rt):
        links = rt.dump_links()
        try:
            entries = vlans.registrations()
        except NotADirectoryError:
            entries = []
        stale = vlans.stale_registrations(entries, links)
        unused = []
        for lk in links:
            if not vlans.is_ours(lk) or lk.master is not None:
                continue
            if vlans.users(rt, lk.name):
                continue
            if any(u.parent_index == lk.index and u.index != lk.index and u.peer_netnsid is None
                   and u.kind in vlans.USER_KINDS for u in links):
                continue
            unused.append(lk.name)
        return stale, unused

    stale, unused = _rt(body)
    out = []
    for name in unused:
        net = masters_in_use.get(name)
        if net is not None:
            out.append(Problem("vlan", name, f"splice-made VLAN sub-interface {name} has no registered user, but "
                                             f"network {net} has cached attachments on it (registrations lost: "
                                             f"{vlans.registry_dir()} emptied?)",
                               f"{doc.cmd('detach', net, '--container-id', 'ID')} and attach again for each, "
                               f"which registers them"))
            continue
        out.append(Problem("vlan", name, f"splice-made VLAN sub-interface {name} has no user (left by a DEL that "
                                         f"did not run)",
                           f"ip link del {name}  (or {doc.cmd('gc', 'NETWORK')} of the network that made it)",
                           lambda n=name: _rt(lambda rt: vlans.release(rt, n))))
    for e in stale:
        path = os.path.join(vlans.registry_dir(), e)
        out.append(Problem("vlan", e, f"VLAN registration {path} names a link that is gone",
                           f"rm -r {path}", lambda p=path: shutil.rmtree(p)))
    return out


# -- VXLAN --------------------------------------------------------------------------------
def vxlan_problems(doc, net, cfg, cached, Problem) -> list:
    from splice.libnet import rtnl

    dev = doc.k.links().get(cfg.device)
    agent = "restart the splice agent (it programs every peer from the registry when it starts)"
    if dev is None:
        if cached:
            return [Problem(net.name, "-", f"VXLAN device {cfg.device} is missing ({len(cached)} attachment(s) are "
                                           f"cached: no traffic to other hosts)",
                            f"{doc.cmd('status', net.name)}  (the agent makes it again), or {agent}")]
        return []
    if dev.kind != "vxlan":
        return [Problem(net.name, "-", f"link {cfg.device} is a {dev.kind or 'link'}, not the VXLAN device",
                        f"ip link del {cfg.device}, then {agent}")]
    fam = socket.AF_INET6 if ipaddress.ip_network(cfg.cluster_cidr, strict=False).version == 6 else socket.AF_INET

    def body(rt):
        routes = [r for r in rt.routes(fam) if r.oif == dev.index and r.table == rtnl.RT_TABLE_MAIN
                  and r.gw is not None]
        neigh = {e.ip: e for e in rt.neigh_dump(dev.index) if e.permanent}
        fdb = {}
        for e in rt.fdb_dump(dev.index):
            if e.dst is not None and e.mac != "00:00:00:00:00:00":
                fdb.setdefault(e.mac.lower(), []).append(e.dst)
        return routes, neigh, fdb

    routes, neigh, fdb = _rt(body)
    out = []
    gws = set()
    macs = set()
    for r in sorted(routes, key=lambda r: str(r.dst)):
        gws.add(r.gw)
        n = neigh.get(r.gw)
        peer = f"peer {r.dst}"
        if n is None or not n.mac:
            out.append(Problem(net.name, peer, f"route {r.dst} via {r.gw} dev {cfg.device} has no permanent "
                                               f"neighbour entry for {r.gw}: the peer is unreachable", agent))
            continue
        macs.add(n.mac.lower())
        if n.mac.lower() not in fdb:
            out.append(Problem(net.name, peer, f"route {r.dst} via {r.gw} (VTEP MAC {n.mac}) has no FDB entry on "
                                               f"{cfg.device}: its frames have no underlay destination",
                               f"bridge fdb append {n.mac} dev {cfg.device} dst PEER-UNDERLAY-IP, or {agent}"))
    for ip, n in sorted(neigh.items(), key=lambda x: str(x[0])):
        if ip not in gws:
            out.append(Problem(net.name, f"neighbour {ip}", f"permanent neighbour {ip} on {cfg.device} has no route "
                                                            f"through it (a peer that left?)",
                               f"ip neigh del {ip} dev {cfg.device}, or {agent}"))
    for mac, dsts in sorted(fdb.items()):
        if mac not in macs and not any(n.mac and n.mac.lower() == mac for n in neigh.values()):
            out.append(Problem(net.name, f"fdb {mac}", f"FDB entry {mac} dst {', '.join(map(str, dsts))} on "
                                                       f"{cfg.device} belongs to no peer route",
                               f"bridge fdb del {mac} dev {cfg.device} dst {dsts[0]}, or {agent}"))
    return out
