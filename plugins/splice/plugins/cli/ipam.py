"""``splice ipam ls|release``: a network's splice-ipam store, read and repaired by hand.

The store is found from the network's conflist (``ipam.dataDir``, default
``/var/lib/cni/splice``, then ``<dataDir>/<network>/store.db``); listing is one read
transaction (``Txn.all_leases``), releasing goes through :class:`splice.ipam.allocator.Ipam`.
"""

from __future__ import annotations

import argparse
import os
import time

from splice.plugins.cli import common
from splice.plugins.cli.output import USAGE, CliError, UsageError, age, dump_json, table


def add_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="ipam_command", metavar="ACTION")
    ls = sub.add_parser("ls", help="every address of a network with its container, interface and age",
                        aliases=["list"])
    ls.add_argument("name", metavar="NAME")
    ls.add_argument("--json", action="store_true")
    common.add_location_args(ls, cache=False, cni_path=False)
    r = sub.add_parser("release", help="release a stuck lease (by address, or every address of a container)")
    r.add_argument("name", metavar="NAME")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--ip", default=None, metavar="IP")
    g.add_argument("--container-id", default=None, metavar="ID")
    r.add_argument("--ifname", default=None, help="with --container-id: only this interface's addresses")
    r.add_argument("--force", action="store_true", help="even when the attachment is still cached (in use)")
    common.add_location_args(r, cni_path=False)
    p.set_defaults(_ipam_parser=p)


def run(args) -> int:
    if args.ipam_command is None:
        args._ipam_parser.print_help()
        return USAGE
    return {"ls": ls, "list": ls, "release": release}[args.ipam_command](args)


def fmt_addr(fam: int, addr: int) -> str:
    if fam == 4:
        return f"{addr >> 24}.{(addr >> 16) & 255}.{(addr >> 8) & 255}.{addr & 255}"
    import socket

    return socket.inet_ntop(socket.AF_INET6, addr.to_bytes(16, "big"))


def store_of(net: common.Network):
    """The network's Store (not opened), or None when it has none yet."""
    from splice.ipam.store import Store

    store = Store(net.store_dir(), busy_timeout=5.0)
    try:
        if not store.exists():
            return None
    except Exception as e:  # noqa: BLE001 - StoreError: deleted under use; the message says what to do
        raise CliError(str(e)) from None
    return store


def rows(net: common.Network) -> list:
    """``Txn.all_leases`` of the network's store: ``(fam, addr, prefix, gateway,
    range_set, container_id, ifname, created)`` tuples ([] when it has no store)."""
    from splice.ipam.errors import IpamError

    store = store_of(net)
    if store is None:
        return []
    try:
        with store.read() as tx:
            return tx.all_leases()
    except IpamError as e:
        raise CliError(f"network {net.name!r}: {e}") from None
    finally:
        store.close()


def ls(args) -> int:
    net = common.find_network(args, args.name)
    now = time.time()
    data = rows(net)
    if args.json:
        dump_json([{"address": f"{fmt_addr(f, a)}/{p}", "gateway": g, "containerId": c, "ifname": i,
                    "created": t, "ageSeconds": int(now - t)} for f, a, p, g, _r, c, i, t in data])
        return 0
    table(["ADDRESS", "CONTAINER", "IFNAME", "AGE"],
          [(f"{fmt_addr(f, a)}/{p}", c, i, age(now - t)) for f, a, p, _g, _r, c, i, t in data], strings=True)
    return 0


def release(args) -> int:
    from splice.ipam.allocator import Ipam
    from splice.ipam.errors import IpamError

    net = common.find_network(args, args.name)
    cfg = net.ipam_config()
    ipam = Ipam(cfg, busy_timeout=5.0)
    try:
        if args.ip:
            try:
                lease = ipam.lookup(args.ip)
            except IpamError as e:
                raise UsageError(f"--ip {args.ip!r}: {e}") from None
            if lease is None:
                print(f"{args.ip} is not leased in {net.name} (nothing to do)")
                return 0
            owners = [(lease.container_id, lease.ifname)]
        else:
            owners = sorted({(c, i) for _f, _a, _p, _g, _r, c, i, _t in rows(net)
                             if c == args.container_id and (args.ifname is None or i == args.ifname)})
            if not owners:
                print(f"container {args.container_id} holds no address in {net.name} (nothing to do)")
                return 0
        if not args.force:
            for cid, ifname in owners:
                cached = common.cache_file(args, net.name, cid, ifname)
                if os.path.exists(cached):
                    raise CliError(f"{cid}/{ifname} is attached (result cached in {cached}): its address is in use. "
                                   f"Detach it (splice detach {net.name} --container-id {cid} --ifname {ifname}), "
                                   f"or pass --force if the container is really gone")
        released = []
        if args.ip:
            got = ipam.release_address(args.ip, owners[0][0], owners[0][1])
            released += [got] if got else []
        else:
            for cid, ifname in owners:
                released += ipam.release(cid, ifname)
        for lease in released:
            print(f"released {lease.address} ({lease.container_id}/{lease.ifname}) in {net.name}")
        return 0
    except IpamError as e:
        raise CliError(f"network {net.name!r}: {e}") from None
    finally:
        ipam.close()
