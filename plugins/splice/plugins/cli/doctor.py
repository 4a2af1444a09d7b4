"""``splice doctor [NAME] [--fix]``: what should exist against what does.

Should exist (per network of the config directory): the cached results (libcni's cache:
the attachments a runtime or ``splice attach`` made) and the leases of the network's
splice-ipam store. Does exist: the host's links (one dump), each cached sandbox's
interface and addresses (one visit per attachment), the masquerade and port-map elements
(one listing of each table). Everything is read through splice's own libnet (rtnetlink,
libnftables), never by running ``ip``/``nft``. Each difference is printed with the command
that repairs it; exit 1 when something is wrong.

``--fix`` repairs what is unambiguous:

* a cached result whose namespace or host veth is gone: DEL of the chain with the cached
  result (what ``splice detach`` runs), which cleans the rest (nft elements, the lease);
* a lease with neither a cached result nor a link: DEL of that attachment without
  prevResult (releases it, and removes nft elements left with it);
* a host veth or nft element of the network with neither a cached result nor a lease (a
  crashed ADD's leftover): DEL of that attachment without prevResult (by owner);
* the addresses of a cached result that the store does not hold (its leases dropped by
  hand): leased again to the same attachment, when they are free and it holds none (the
  allocator takes one request per range set and call).

Everything else (an address leased to someone else, a missing masquerade entry, a veth off
its bridge, a lease with a link but no cached result: a runtime with another cache
directory?) is printed with the commands to repair it by hand.

Host-level (doctor_host.py): the forwarding sysctls of gateway bridges (``--fix`` sets
them), 802.1Q sub-interfaces of macvlan/ipvlan networks (a splice-made one nothing uses and
registrations of links that are gone: ``--fix`` removes them) and the VXLAN device's routes,
neighbours and FDB entries of splice-vxlan networks (named only).

Drivers: bridge fully (links, sandbox, masquerade, port map, leases); macvlan/ipvlan the
cache, the sandbox link (kind and owner alias) and the leases (their link lives only in
the sandbox, so a lease without a cached result is reported, not released).
"""

from __future__ import annotations

import argparse
import os
import time

from splice.plugins.cli import common
from splice.plugins.cli.output import PROBLEM, CliError, dump_json, paint

CNM_STATE_DIR = "/var/lib/splice/cnm"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default=None, metavar="NAME", help="one network (default: every network)")
    p.add_argument("--fix", action="store_true", help="repair what is unambiguous")
    p.add_argument("--json", action="store_true", help="the problems as JSON")
    common.add_location_args(p, cache=True, cni_path=True)
    p.add_argument("--cnm-state-dir", default=None, metavar="DIR",
                   help=f"the Docker driver's state (default {CNM_STATE_DIR}, read when it exists and no NAME is "
                        f"given); its endpoints are compared with the kernel, never repaired (dockerd owns them)")


class Problem:
    __slots__ = ("network", "owner", "what", "repair", "fix", "fixed", "error")

    def __init__(self, network: str, owner: str, what: str, repair: str | None = None, fix=None) -> None:
        self.network, self.owner, self.what, self.repair, self.fix = network, owner, what, repair, fix
        self.fixed = False
        self.error: str | None = None

    def as_dict(self) -> dict:
        return {"network": self.network, "owner": self.owner, "problem": self.what, "repair": self.repair,
                "fixable": self.fix is not None, "fixed": self.fixed, "fixError": self.error}


# -- what the kernel has ------------------------------------------------------------------
class Kernel:
    """The host's links, nft elements and sandbox visits, each read once, on demand."""

    def __init__(self) -> None:
        self._links = None
        self._masq = None
        self._ports = None
        self._cur_fd: int | None = None

    def links(self) -> dict:
        if self._links is None:
            from splice.libnet import rtnl
            from splice.libnet.netns import Netns

            self._links = {lk.name: lk for lk in rtnl.run(Netns.current(), lambda rt: rt.dump_links())}
        return self._links

    def masq(self) -> dict[str, list]:
        """owner tag -> [(iface, address)] of table inet splice_nat."""
        if self._masq is None:
            from splice.libnet.masq import Masquerade

            try:
                self._masq = Masquerade().entries()
            except Exception as e:  # noqa: BLE001 - no nftables: say so once
                raise CliError(f"cannot read the masquerade table (nftables): {e}") from None
        return self._masq

    def ports(self) -> dict[str, list]:
        """owner tag -> published DNAT elements of table inet splice_portmap."""
        if self._ports is None:
            from splice.libnet.portmap.publisher import PortPublisher

            try:
                self._ports = PortPublisher().owners()
            except Exception as e:  # noqa: BLE001
                raise CliError(f"cannot read the port-map table (nftables): {e}") from None
        return self._ports

    def sandbox(self, path: str, ifname: str):
        """(link or None, [address strings]) of ``ifname`` in the namespace at ``path``;
        entered inline (setns there and back, no thread per visit)."""
        from splice.libnet import rtnl
        from splice.libnet.netns import Netns, inline_switching

        if self._cur_fd is None:
            self._cur_fd = os.open(f"/proc/self/task/{_tid()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)

        def body(rt):
            link = rt.get_link(ifname)
            if link is None:
                return None, []
            return link, [str(a.iface) for a in rt.addresses(link.index)]

        with Netns.open(path) as ns, inline_switching(self._cur_fd):
            return rtnl.run(ns, body)


class _Progress:
    """``doctor NAME 400/1000`` on stderr, redrawn in place: only on a terminal and for
    long work (more than 200 items), at most ~10 times a second."""

    def __init__(self, what: str, total: int) -> None:
        import sys

        self.what, self.total, self.n, self.last = what, total, 0, 0.0
        try:
            self.on = total > 200 and sys.stderr.isatty()
        except (AttributeError, ValueError):
            self.on = False

    def step(self) -> None:
        self.n += 1
        if self.on:
            now = time.monotonic()
            if now - self.last >= 0.1:
                import sys

                self.last = now
                sys.stderr.write(f"\r{self.what} {self.n}/{self.total}")
                sys.stderr.flush()

    def done(self) -> None:
        if self.on:
            import sys

            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _tid() -> int:
    import threading

    return threading.get_native_id()


# -- one network ------------------------------------------------------------------------
def _leases(net: common.Network) -> dict[tuple[str, str], list[str]]:
    from splice.plugins.cli import ipam as ipam_cli

    if not net.ipam_is_splice:
        return {}
    out: dict[tuple[str, str], list[str]] = {}
    for fam, addr, _p, _g, _r, cid, ifname, _t in ipam_cli.rows(net):
        out.setdefault((cid, ifname), []).append(ipam_cli.fmt_addr(fam, addr))
    return out


def _container_ips(result: dict | None, ifname: str, netns: str | None) -> list[str]:
    """The result's addresses on the container interface (address/len strings)."""
    if not result:
        return []
    ifs = result.get("interfaces") or []
    idx = {n for n, i in enumerate(ifs) if i.get("name") == ifname and (i.get("sandbox") or None) is not None}
    return [ip["address"] for ip in result.get("ips") or []
            if isinstance(ip.get("address"), str) and (ip.get("interface") in idx or ip.get("interface") is None)]


def _driver_cfg(net: common.Network):
    from splice.plugins import driver as framework

    try:
        return framework.driver_class(net.kind).parse_config({**net.main, "name": net.name,
                                                             "cniVersion": net.conf.get("cniVersion")})
    except Exception as e:  # noqa: BLE001 - a broken config: the operator must fix the file first
        raise CliError(f"network {net.name!r}: its config in {net.path} does not parse: {e}") from None


class Doctor:
    def __init__(self, args, kernel: Kernel) -> None:
        self.args = args
        self.k = kernel
        self.flags = common.location_flags(args)
        self.vlan_masters: dict[str, str] = {}  # sub-interface -> a network with cached attachments on it

    def cmd(self, *argv: str) -> str:
        return common.quote(["splice", *argv, *self.flags])

    def examine(self, net: common.Network) -> tuple[list[Problem], dict]:
        from splice.plugins import owners

        args = self.args
        probs: list[Problem] = []
        cached = common.cached_attachments(args, net.name)
        leases = _leases(net)
        stats = {"network": net.name, "driver": net.driver_label, "cached": len(cached), "leases": len(leases)}
        kind = net.kind
        if kind is None and net.main.get("type") == "splice-vxlan":  # its leases are the cluster's (etcd)
            from splice.plugins.cli import doctor_host
            from splice.plugins.vxlan.config import parse_vxlan_config

            try:
                vcfg = parse_vxlan_config({**net.main, "name": net.name, "cniVersion": net.conf.get("cniVersion")})
            except Exception as e:  # noqa: BLE001
                probs.append(Problem(net.name, "-", f"network {net.name!r}: its config in {net.path} does not parse: "
                                                    f"{e}", f"fix {net.path}"))
                return probs, stats
            stats["driver"] = "vxlan"
            probs += doctor_host.vxlan_problems(self, net, vcfg, cached, Problem)
            return probs, stats
        if kind is None:
            probs.append(Problem(net.name, "-", f"not a splice network (first plugin {net.main.get('type')!r}): "
                                               f"only its cache and leases are compared"))
        try:
            cfg = _driver_cfg(net) if kind else None
        except CliError as e:  # this network cannot be examined; the others still are
            probs.append(Problem(net.name, "-", str(e), f"fix {net.path} (splice net create --dry-run shows a valid "
                                                        f"one)"))
            return probs, stats
        from splice.plugins.cli import doctor_host

        if kind == "bridge":
            probs += doctor_host.sysctl_problems(self, net, cfg, cached, Problem)
        elif kind in ("macvlan", "ipvlan"):
            probs += doctor_host.vlan_problems(self, net, cfg, cached, Problem)
            name = doctor_host.vlan_name(cfg)
            if name and cached:
                self.vlan_masters[name] = net.name
        bridge = links = None
        if kind == "bridge":
            links = self.k.links()
            bridge = links.get(cfg.bridge)
            if cached and (bridge is None or bridge.kind != "bridge"):
                probs.append(Problem(net.name, "-", f"bridge {cfg.bridge} is missing ({len(cached)} attachment(s) are "
                                                    f"cached on it)",
                                     f"re-attach each container (splice detach/attach), or {self.cmd('gc', net.name)} "
                                     f"for containers that are gone"))
        masq_on = kind == "bridge" and cfg.ip_masq
        has_portmap = any(p.get("type") == "splice-portmap" for p in net.plugins)
        masq_iface = (cfg.vlan_gateway_ifname or cfg.bridge) if masq_on else None
        owner_of = {owners.owner_tag(net.name, c, i): (c, i) for c, i in set(cached) | set(leases)}
        leased_by: dict[str, tuple[str, str]] = {}
        for o, addrs in leases.items():
            for a in addrs:
                leased_by[a] = o

        # 1. every cached attachment: namespace, links, addresses, leases, nft
        progress = _Progress(f"doctor {net.name}", len(cached))
        for (cid, ifn), rec in sorted(cached.items()):
            progress.step()
            who = f"{cid}/{ifn}"
            netns = rec.get("netns")
            result = rec.get("result")
            detach = self.cmd("detach", net.name, "--container-id", cid, "--ifname", ifn)
            again = ["attach", net.name, "--netns", netns or "NETNS", "--container-id", cid, "--ifname", ifn]
            ips = _container_ips(result, ifn, netns)
            for a in ips:  # the same addresses and ports again
                again += ["--ip", a.split("/")[0]]
            for m in (rec.get("capabilityArgs") or {}).get("portMappings") or []:
                hip = f"{m['hostIP']}:" if m.get("hostIP") else ""
                again += ["-p", f"{hip}{m.get('hostPort')}:{m.get('containerPort')}/{m.get('protocol') or 'tcp'}"]
            reattach = f"{detach} && " + self.cmd(*again)
            fix_del = (lambda c=cid, i=ifn, r=rec: self._del(net, c, i, r))
            if netns and not os.path.exists(netns):
                probs.append(Problem(net.name, who, f"its namespace {netns} is gone (the container is gone) but "
                                                    f"the attachment is still cached", detach, fix_del))
                continue
            veth_name = owners.host_veth_name(net.name, cid, ifn)
            if kind == "bridge" and not cfg.disable_container_interface:
                veth = links.get(veth_name)
                if veth is None:
                    probs.append(Problem(net.name, who, f"host veth {veth_name} is missing (the cached result says "
                                                        f"it was made)", detach, fix_del))
                    continue
                if bridge is not None and veth.master != bridge.index:
                    probs.append(Problem(net.name, who, f"host veth {veth_name} is not a port of bridge {cfg.bridge}",
                                         reattach))
            if netns and kind:
                try:
                    link, have = self.k.sandbox(netns, ifn)
                except Exception as e:  # noqa: BLE001 - a namespace we cannot enter: say it
                    probs.append(Problem(net.name, who, f"cannot read namespace {netns}: {e}"))
                    link, have = None, None
                if have is not None:
                    if link is None:
                        probs.append(Problem(net.name, who, f"interface {ifn} is missing in {netns}", reattach,
                                             fix_del if kind in ("macvlan", "ipvlan") else None))
                    else:
                        if kind in ("macvlan", "ipvlan") and link.alias != owners.link_alias(net.name, cid, ifn):
                            probs.append(Problem(net.name, who, f"{ifn} in {netns} is not the {kind} link splice "
                                                                f"made (alias {link.alias!r})", reattach))
                        missing = [a for a in ips if a not in have]
                        if missing:
                            probs.append(Problem(net.name, who, f"{ifn} in {netns} lacks {', '.join(missing)}",
                                                 reattach))
            if net.ipam_is_splice:
                mine = set(leases.get((cid, ifn), []))
                lost = [a.split("/")[0] for a in ips if a.split("/")[0] not in mine
                        and a.split("/")[0] not in leased_by]  # leased again together (one per range set)
                for a in ips:
                    ip = a.split("/")[0]
                    if ip in mine:
                        continue
                    holder = leased_by.get(ip)
                    if holder is not None:
                        probs.append(Problem(net.name, who, f"its address {ip} is leased to {holder[0]}/{holder[1]}: "
                                                            f"two containers with one address", reattach))
                    else:
                        probs.append(Problem(net.name, who, f"its address {ip} is not leased in the IPAM store (the "
                                                            f"next ADD may hand it out again)",
                                             reattach,
                                             # Ipam.allocate gives one address per range set
                                             # and call: only an owner that lost them all
                                             None if mine else
                                             (lambda c=cid, i=ifn, x=tuple(lost): self._relase(net, c, i, x))))
            if masq_on and ips:
                have = {str(a) for _i, a in self.k.masq().get(owners.owner_tag(net.name, cid, ifn), [])}
                for a in ips:
                    ip = a.split("/")[0]
                    if ip not in have:
                        probs.append(Problem(net.name, who, f"no masquerade entry for {ip} on {masq_iface} (table inet "
                                                            f"splice_nat): its traffic leaves unmasqueraded",
                                             reattach))
            pm = (rec.get("capabilityArgs") or {}).get("portMappings")
            if has_portmap and pm:
                if not self.k.ports().get(owners.owner_tag(net.name, cid, ifn)):
                    probs.append(Problem(net.name, who, f"its {len(pm)} port mapping(s) are not published (table "
                                                        f"inet splice_portmap)", reattach))

        progress.done()

        # 2. leases without a cached result
        for (cid, ifn), addrs in sorted(leases.items()):
            if (cid, ifn) in cached:
                continue
            who = f"{cid}/{ifn}"
            release = self.cmd("ipam", "release", net.name, "--container-id", cid, "--ifname", ifn)
            if kind == "bridge":
                if owners.host_veth_name(net.name, cid, ifn) in links:
                    probs.append(Problem(net.name, who, f"leases {', '.join(addrs)} and has host veth "
                                                        f"{owners.host_veth_name(net.name, cid, ifn)}, but no result is "
                                                        f"cached (a runtime with another cache directory?)",
                                         f"{self.cmd('gc', net.name)}  (removes every attachment not cached here)"))
                else:
                    # DEL by owner: releases the lease and removes any nft element left with it
                    probs.append(Problem(net.name, who, f"leases {', '.join(addrs)} but has no cached result and no "
                                                        f"link (a container removed without DEL)",
                                         self.cmd("detach", net.name, "--container-id", cid, "--ifname", ifn),
                                         lambda c=cid, i=ifn: self._del(net, c, i, {})))
            else:
                probs.append(Problem(net.name, who, f"leases {', '.join(addrs)} but has no cached result (its link, "
                                                    f"if any, is in a namespace splice cannot name)", release))

        # 3. kernel objects of the network that nothing accounts for
        if kind == "bridge":
            prefix = owners.alias_prefix(net.name)
            for lk in links.values():
                if lk.kind != "veth" or not (lk.alias or "").startswith(prefix):
                    continue
                cid, _, ifn = lk.alias[len(prefix):].rpartition(":")
                if (cid, ifn) in cached or (cid, ifn) in leases or not cid:
                    continue
                probs.append(Problem(net.name, f"{cid}/{ifn}", f"host veth {lk.name} has no cached result and no "
                                                               f"lease (left by a crashed ADD)",
                                     self.cmd("detach", net.name, "--container-id", cid, "--ifname", ifn),
                                     lambda c=cid, i=ifn: self._del(net, c, i, {})))
            gcp = owners.gc_prefix(net.name)
            tables = []
            if masq_on:
                tables.append(("masquerade entries", self.k.masq()))
            if has_portmap:
                tables.append(("port mappings", self.k.ports()))
            reported = set()
            for what, table_ in tables:
                for tag in table_:
                    if not tag.startswith(gcp) or tag in reported:
                        continue
                    pair = owner_of.get(tag)
                    if pair is not None:
                        continue  # cached or leased: checked above
                    parts = tag.split(" ")
                    if len(parts) != 3:
                        continue
                    _n8, cid, ifn = parts
                    if owners.host_veth_name(net.name, cid, ifn) in links:
                        continue  # reported with its veth
                    reported.add(tag)
                    probs.append(Problem(net.name, f"{cid}/{ifn}", f"{what} owned by {cid}/{ifn}, which has no cached "
                                                                   f"result, lease or link",
                                         self.cmd("detach", net.name, "--container-id", cid, "--ifname", ifn),
                                         lambda c=cid, i=ifn: self._del(net, c, i, {})))
        return probs, stats

    # -- repairs ------------------------------------------------------------------------
    def _del(self, net: common.Network, cid: str, ifn: str, rec: dict) -> None:
        """DEL of the chain for one attachment; without a cached record (an orphan), the
        port mappings published for its owner are given as the capability argument, since
        splice-portmap's DEL (as the reference's) does nothing without them."""
        from splice.plugins import owners
        from splice.plugins.cli.attach import del_attachment

        if not rec and any(p.get("type") == "splice-portmap" for p in net.plugins):
            published = self.k.ports().get(owners.owner_tag(net.name, cid, ifn)) or []
            pm = [{"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol,
                   **({"hostIP": str(p.host_ip)} if p.host_ip is not None else {})} for p in published]
            if pm:
                rec = {"capabilityArgs": {"portMappings": pm}}
        del_attachment(self.args, net, cid, ifn, None, rec)

    def _release(self, net: common.Network, cid: str, ifn: str) -> None:
        from splice.ipam.allocator import Ipam

        with Ipam(net.ipam_config(), busy_timeout=5.0) as ipam:
            ipam.release(cid, ifn)

    def _relase(self, net: common.Network, cid: str, ifn: str, ips: tuple[str, ...]) -> None:
        """Lease the attachment's lost addresses again, all in one allocation (the store
        takes one request per range set and call); those leased meanwhile are left."""
        from splice.ipam.allocator import Ipam

        with Ipam(net.ipam_config(), busy_timeout=5.0) as ipam:
            todo = [x for x in ips if ipam.lookup(x) is None]
            if todo:
                ipam.allocate(cid, ifn, requested=todo)


def examine_docker(args, k: Kernel, state_dir: str) -> tuple[list[Problem], dict]:
    """The Docker driver's records (``<state dir>/networks``, ``endpoints``: cnm/state.py)
    against the kernel: a network left pending by a killed create, a bridge network's
    bridge, each endpoint's network record, host veth (bridge), sandbox file (joined) and
    masquerade entries; host veths of a Docker network that no endpoint record names.
    Named with their repair, never fixed here: dockerd owns these objects, and the
    driver's start-up collection (restart ``splice driver``) removes what dockerd let go."""
    import json

    from splice.plugins import owners

    def load(kind: str) -> dict[str, dict]:
        out = {}
        d = os.path.join(state_dir, kind)
        try:
            names = sorted(os.listdir(d))
        except OSError:
            return out
        for n in names:
            if n.endswith(".json"):
                try:
                    with open(os.path.join(d, n), "rb") as f:
                        rec = json.loads(f.read())
                except (OSError, ValueError):
                    continue
                if isinstance(rec, dict):
                    out[n[:-5]] = rec
        return out

    nets, eps = load("networks"), load("endpoints")
    probs: list[Problem] = []
    restart = "systemctl restart splice-driver (its start-up collection)"
    label = "docker"
    links = k.links() if any(n.get("kind") == "bridge" for n in nets.values()) else {}
    by_net: dict[str, list[str]] = {}
    for eid, ep in eps.items():
        by_net.setdefault(str(ep.get("network")), []).append(eid)
    for nid, net in sorted(nets.items()):
        short = nid[:12]
        if net.get("pending"):
            probs.append(Problem(label, f"network {short}", "its creation was interrupted (record left pending)",
                                 restart))
        cfg = net.get("config") or {}
        if net.get("kind") != "bridge":
            continue
        br = links.get(cfg.get("bridge") or "")
        if by_net.get(nid) and (br is None or br.kind != "bridge"):
            probs.append(Problem(label, f"network {short}", f"bridge {cfg.get('bridge')} is missing "
                                                            f"({len(by_net[nid])} endpoint(s) on it)",
                                 f"docker restart the containers of network {short}"))
        masq = k.masq() if cfg.get("ipMasq") else {}
        for eid in by_net.get(nid, []):
            ep = eps[eid]
            who = f"endpoint {eid[:12]}"
            veth = owners.host_veth_name(nid, eid, "eth")
            if veth not in links:
                probs.append(Problem(label, who, f"host veth {veth} of network {short} is missing",
                                     f"docker network disconnect -f {short} CONTAINER && docker network connect "
                                     f"{short} CONTAINER (or restart the container)"))
                continue
            if ep.get("joined") and ep.get("sandbox") and not os.path.exists(ep["sandbox"]):
                probs.append(Problem(label, who, f"joined, but its sandbox {ep['sandbox']} is gone", restart))
            if cfg.get("ipMasq"):
                have = {str(a) for _i, a in masq.get(owners.owner_tag(nid, eid, "eth"), [])}
                for a in ep.get("addresses") or []:
                    ip = str(a).split("/")[0]
                    if ":" not in ip and ip not in have:
                        probs.append(Problem(label, who, f"no masquerade entry for {ip}",
                                             "docker restart the endpoint's container"))
        prefix = owners.alias_prefix(nid)
        known = {owners.host_veth_name(nid, e, "eth") for e in by_net.get(nid, [])}
        for lk in links.values():
            if lk.kind == "veth" and (lk.alias or "").startswith(prefix) and lk.name not in known:
                probs.append(Problem(label, f"network {short}", f"host veth {lk.name} has no endpoint record", restart))
    for eid, ep in sorted(eps.items()):
        if str(ep.get("network")) not in nets:
            probs.append(Problem(label, f"endpoint {eid[:12]}", f"its network {str(ep.get('network'))[:12]} has no "
                                                                f"record", restart))
    return probs, {"network": "docker", "driver": "splice driver", "cached": len(eps), "leases": 0}


def gc_preview(args, net: common.Network, valid: set[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """What ``splice gc NAME`` would remove: leases, host veths and nft elements of the
    network whose attachment is not in ``valid`` (the cached ones)."""
    from splice.plugins import owners

    k = Kernel()
    out = []
    for (cid, ifn), addrs in sorted(_leases(net).items()):
        if (cid, ifn) not in valid:
            out.append(("lease", f"{cid}/{ifn}", ", ".join(addrs)))
    if net.kind == "bridge":
        cfg = _driver_cfg(net)
        prefix = owners.alias_prefix(net.name)
        keep = {owners.host_veth_name(net.name, c, i) for c, i in valid}
        for lk in k.links().values():
            if lk.kind == "veth" and (lk.alias or "").startswith(prefix) and lk.name not in keep:
                out.append(("link", lk.alias[len(prefix):].replace(":", "/"), f"host veth {lk.name}"))
        tags = {owners.owner_tag(net.name, c, i) for c, i in valid}
        gcp = owners.gc_prefix(net.name)
        sources = []
        if cfg.ip_masq:
            sources.append(("masquerade", k.masq()))
        if any(p.get("type") == "splice-portmap" for p in net.plugins):
            sources.append(("port map", k.ports()))
        for what, entries in sources:
            for tag, items in sorted(entries.items()):
                if tag.startswith(gcp) and tag not in tags:
                    out.append(("nft", "/".join(tag.split(" ")[1:]), f"{len(items)} {what} element(s)"))
    return out


def run(args) -> int:
    t0 = time.perf_counter()
    if args.name:
        nets = [common.find_network(args, args.name)]
    else:
        nets = common.networks(common.config_dir(args))
        if not nets and not (args.cnm_state_dir or os.path.isdir(os.path.join(CNM_STATE_DIR, "endpoints"))):
            print(f"no networks in {common.config_dir(args)} (--config-dir)")
            return 0
    k = Kernel()
    doc = Doctor(args, k)
    problems: list[Problem] = []
    stats = []
    for net in nets:
        ps, st = doc.examine(net)
        problems += ps
        stats.append(st)
    if not args.name:  # sub-interfaces and registrations of the whole host: only without NAME
        from splice.plugins.cli import doctor_host

        problems += doctor_host.vlan_orphans(doc, doc.vlan_masters, Problem)
    # the system's Docker state only with the system's locations (not with --config-dir)
    cnm = args.cnm_state_dir or (CNM_STATE_DIR if not (args.name or args.config_dir
                                                        or os.environ.get("SPLICE_CONFIG_DIR")) else None)
    if cnm and os.path.isdir(os.path.join(cnm, "endpoints")):
        ps, st = examine_docker(args, k, cnm)
        problems += ps
        stats.append(st)
    elif args.cnm_state_dir:
        raise CliError(f"{args.cnm_state_dir} is not the Docker driver's state directory (no endpoints/ in it)")
    if args.fix:
        for p in problems:
            if p.fix is None:
                continue
            try:
                p.fix()
                p.fixed = True
            except Exception as e:  # noqa: BLE001 - reported with the problem
                p.error = str(e)
    if args.json:
        dump_json({"networks": stats, "problems": [p.as_dict() for p in problems]})
    else:
        for p in problems:
            tag = paint("FIXED  ", "green") if p.fixed else paint("PROBLEM", "red")
            print(f"{tag} {p.network} {p.owner}: {p.what}")
            if p.error:
                print(f"        the repair failed: {p.error}")
            if p.repair and not p.fixed:
                fixable = "  (--fix does this)" if p.fix is not None and not args.fix else ""
                print(f"        repair: {p.repair}{fixable}")
        left = [p for p in problems if not p.fixed]
        fixed = len(problems) - len(left)
        summary = ", ".join(f"{s['network']} ({s['driver']}): {s['cached']} cached, {s['leases']} leased"
                            for s in stats)
        verdict = paint("ok", "green") if not left else paint(f"{len(left)} problem(s)", "red")
        extra = f", {fixed} fixed" if fixed else ""
        print(f"{verdict}{extra} — {summary} ({time.perf_counter() - t0:.2f} s)")
    return PROBLEM if any(not p.fixed for p in problems) else 0
