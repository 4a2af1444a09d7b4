"""``splice driver``: the Docker remote-driver daemon (foreground, logs on stderr).

Start-up, in order: take ``<state dir>/driver.lock`` (one daemon per state), load the
state, collect what containers removed while no daemon ran left behind
(:meth:`~splice.plugins.cnm.service.Service.collect`; before the sockets exist, so no call
races it: dockerd retries a missing plugin socket for 30 s), then serve one socket per
driver kind (``<plugins dir>/splice-bridge.sock``, ``splice-macvlan.sock``, ... for the
kinds the framework registry knows) and ``splice.sock`` (IPAM only, for
``--ipam-driver splice`` with any network driver). SIGTERM/SIGINT: stop accepting, remove
the sockets, exit 0 (calls in flight finish on their threads; state is on disk after
every call anyway).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time

log = logging.getLogger("splice.driver")

DEFAULT_PLUGINS_DIR = "/run/docker/plugins"
DEFAULT_STATE_DIR = "/var/lib/splice/cnm"
DEFAULT_IPAM_DIR = "/var/lib/splice/ipam"
IPAM_PLUGIN = "splice"
JANITOR_S = 0.5  # the watchdog's tick (request deadlines)
NFT_IDLE_S = 30.0
GRACE_S = 20.0  # SIGTERM: how long calls in flight may take to finish


def _socket_in_use(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _prepare(path: str) -> None:
    """Remove a stale socket file; refuse to take over one somebody listens on."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    import stat

    if not stat.S_ISSOCK(st.st_mode):
        raise SystemExit(f"splice driver: {path} exists and is not a socket: not touching it")
    if _socket_in_use(path):
        raise SystemExit(f"splice driver: a plugin already listens on {path}")
    os.unlink(path)


def _lock(state_dir: str) -> int:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, "driver.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SystemExit(f"splice driver: another splice driver runs with the state directory {state_dir}")
        raise
    return fd


def _has_net_admin() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 12 & 1)  # CAP_NET_ADMIN = 12
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def parse_pool(text: str) -> tuple[str, int]:
    """``base=10.200.0.0/16,size=24`` (dockerd's --default-address-pool form)."""
    fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    if set(fields) != {"base", "size"}:
        raise ValueError(f"expected base=<CIDR>,size=<prefix length>, got {text!r}")
    return fields["base"], int(fields["size"])


def serve(plugins_dir: str = DEFAULT_PLUGINS_DIR, state_dir: str = DEFAULT_STATE_DIR,
          ipam_dir: str = DEFAULT_IPAM_DIR, *, verbose: bool = False,
          default_pools: list[tuple[str, int]] | None = None, kinds: list[str] | None = None,
          node: str | None = None) -> int:
    if not _has_net_admin():
        raise SystemExit("splice driver: it needs CAP_NET_ADMIN (run it as root): it makes links, addresses and "
                         "nftables objects, and serves root-only sockets")
    try:
        return _serve(plugins_dir, state_dir, ipam_dir, verbose=verbose, default_pools=default_pools, kinds=kinds,
                      node=node)
    except PermissionError as e:
        raise SystemExit(f"splice driver: {e.filename or ''}: {e.strerror} (it runs as root: it makes links, "
                         "addresses and nftables objects, and serves root-only sockets)") from None


def _serve(plugins_dir: str, state_dir: str, ipam_dir: str, *, verbose: bool,
           default_pools: list[tuple[str, int]] | None, kinds: list[str] | None, node: str | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s splice-driver %(levelname)s %(message)s")
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    from splice.ipam.pools import PoolIpam
    from splice.libnet import conntrack, nft
    from splice.libnet.netns import Netns
    from splice.plugins.cnm.service import Service, served_kinds
    from splice.plugins.cnm.transport import PluginServer

    t0 = time.monotonic()
    lock_fd = _lock(state_dir)
    available = served_kinds()
    if kinds:
        unknown = [k for k in kinds if k not in available]
        if unknown:
            raise SystemExit(f"splice driver: unknown driver kind(s) {', '.join(unknown)} "
                             f"(known: {', '.join(available)})")
        available = {k: available[k] for k in kinds}
    nft.share_contexts()
    ipam = PoolIpam(ipam_dir, default_pools=default_pools)
    svc = Service(Netns.current(), state_dir, ipam, available, node=node)
    for kind in available.values():  # import the drivers before the first call
        from splice.plugins import driver as framework

        framework.driver_class(kind.kind)
    try:
        stats = svc.collect()
        log.info("collected at start: %d endpoint(s) of removed containers, %d address(es), %d error(s) (%.0f ms)",
                 stats["endpoints"], stats["addresses"], stats["errors"], (time.monotonic() - t0) * 1000)
    except Exception as e:  # noqa: BLE001 - serving matters more than collecting
        log.error("collect at start failed: %s", e)
    svc.start_overlays()  # splice-overlay networks: lease renewed, VTEP, watch (calls wait for them)

    os.makedirs(plugins_dir, mode=0o755, exist_ok=True)
    servers: list[PluginServer] = []
    entries = [(k.plugin, k) for k in available.values()] + [(IPAM_PLUGIN, None)]
    try:
        for name, kind in entries:
            path = os.path.join(plugins_dir, name + ".sock")
            _prepare(path)
            servers.append(PluginServer(path, name, svc.handler(kind), verbose=verbose))
    except BaseException:
        for s in servers:
            _close(s)
        raise
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.5}, name=f"serve-{s.name}",
                                daemon=True) for s in servers]
    for t in threads:
        t.start()
    log.info("serving %s in %s (state %s, IPAM %s); ready in %.0f ms",
             ", ".join(s.name for s in servers), plugins_dir, state_dir, ipam_dir, (time.monotonic() - t0) * 1000)
    last_prune = time.monotonic()
    while not stop.wait(JANITOR_S):
        for s in servers:
            s.reap()
        if time.monotonic() - last_prune > NFT_IDLE_S:
            nft.prune_contexts(NFT_IDLE_S)
            conntrack.prune_sockets(NFT_IDLE_S)  # kept per namespace while nft contexts are shared
            last_prune = time.monotonic()
    log.info("stopping")
    for s in servers:  # no new connections, no new calls from here on
        s.stop_calls()
        try:
            os.unlink(s.server_address)
        except OSError:
            pass
    deadline = time.monotonic() + GRACE_S
    while any(s.in_flight for s in servers) and time.monotonic() < deadline:
        time.sleep(0.02)  # calls in flight finish: their kernel work and their state file
    closers = [threading.Thread(target=_close, args=(s, True)) for s in servers]
    for t in closers:
        t.start()
    for t in closers:
        t.join()
    svc.close()  # overlays stop; leases not revoked (a restart keeps the subnets)
    ipam.close()
    os.close(lock_fd)
    return 0


def _close(server: object, started: bool = False) -> None:
    path = getattr(server, "server_address", None)
    if isinstance(path, str):  # no new connections from here on
        try:
            os.unlink(path)
        except OSError:
            pass
    if started:
        server.shutdown()  # type: ignore[attr-defined]  # waits for serve_forever to return
    server.server_close()  # type: ignore[attr-defined]
