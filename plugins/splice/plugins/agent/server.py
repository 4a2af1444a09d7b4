"""The splice agent: a resident process that runs CNI calls for the thin executables.

A CNI call is a process start. In-process, a splice plugin pays the interpreter and its own
imports, which cost more than the kernel work of the call (figures: docs/perf.md). The agent
pays the imports once; the executables (``client.py``) become stdlib-only clients that send
the call over a unix socket and print the answer.

Socket. ``/run/splice/agent.sock`` by default (``--socket``, ``$SPLICE_AGENT_SOCKET`` for the
clients), created 0600 in a 0700 directory it creates: root only (an existing directory
must be root's and not group/other-writable, else the agent refuses to start). Each connection's peer
is checked with ``SO_PEERCRED`` (uid 0 or the agent's own); others get a CNI error. A call
that would give its caller a privilege (capabilities the caller lacks: :meth:`Agent._decline`)
is declined: the client runs it in-process, where the kernel decides. One
agent per socket (an ``flock`` on ``<socket>.lock``, removed on a clean exit; a stale one
left by a killed agent is taken over; a live listener is never unlinked).
Under systemd socket activation (``LISTEN_FDS``) the agent serves fd 3 and leaves the
socket alone (see contrib/).

Namespaces. The client sends its own network namespace fd (``SCM_RIGHTS``). The worker
thread serving the call ``setns()``-es into it, runs ``run_plugin`` with
``host=Netns.current()`` (= the caller's namespace: the host-side netlink, sysctl and
nftables work runs inline on that thread), and returns to the agent's namespace after
the call. Any delegate the plugin executes inherits the forking thread's namespace, so it
runs in the caller's namespace too. Only that thread moves, and every call enters its
caller's namespace first, so no call can run in a namespace left over from another; a
worker that cannot return is retired and replaced. The agent's other threads never move.
(The alternative, a fresh ``Netns.run`` thread per call with ``host=Netns.from_fd(fd)``,
costs one or two more thread wake-ups per call, which a busy machine makes expensive.)

Concurrency. One reader thread accepts every connection and reads requests without
blocking (a selector), with a total deadline per connection (``REQUEST_DEADLINE_S``) and a
cap on open connections (``--max-connections``); only complete requests are queued for the
``workers`` threads (default 16), which serve one call at a time. A connection with no
complete request by its deadline, one over the cap, and a request that waited
``QUEUE_DEADLINE_S`` for a worker are declined: the client runs the call in-process. So
idle or slow clients hold no worker and cannot starve real calls (the hand-off costs a
thread wake-up per call). A caller that hung up (its runtime gave up) before a worker took
its request is not started; an ADD that succeeded after its caller left is undone by the
plugin's DEL (same env and config): nobody would ever DEL a result nobody received. Calls are as independent as separate processes: IPAM allocations
are SQLite ``BEGIN IMMEDIATE`` transactions (serialised per store, across the
agent's threads and any in-process plugin alike), netlink sockets are per call, nftables
changes are kernel transactions checked by the ownership pairs of masq.py. The agent
holds no state that matters: the IPAM store and the kernel (owner-tagged objects) hold
it, so a killed or restarted agent loses nothing; a client whose agent dies mid-call
prints error 11 (try again later) and the runtime's DEL or GC cleans up, in-process or
through the next agent. Failure injection (``SPLICE_FAILPOINT``) in the *agent's*
environment applies to every call it serves (tests kill the agent mid-ADD with it).

Warm handles. Start-up imports every plugin, driver, the netlink library and libnftables
(dlopen) before accepting (paid once). nftables contexts are shared per host namespace
and kept open between calls (``nft.share_contexts``): freeing a context that committed a
deletion waits for the kernel's deferred destruction, which a context per call paid on
every DEL. IPAM stores stay open per store directory (``ipam_plugin.share_stores``: no
connect, PRAGMAs and WAL checkpoint per call). A janitor thread closes contexts and stores
idle for ``IDLE_S`` (a kept nftables context holds its namespace alive). Netlink sockets
stay per call: they are cheap to open and bound to the namespace of the thread that made
them. Figures (round trip, thin-client start-up, time an ADD spends in the agent):
docs/perf.md and ``bench/startup.py``.

stderr. ``sys.stderr`` is replaced by a router that sends what a call's thread writes
(skel's one-line errors, ``SPLICE_DEBUG`` tracebacks, delegates' stderr) back to the
client, and everything else to the agent's own stderr (its log).
"""

from __future__ import annotations

import array
import collections
import errno
import io
import json
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import time
from typing import Any

from splice.plugins.agent import client as wire

DEFAULT_WORKERS = 16
IDLE_S = 30.0  # close a shared nftables context / IPAM store after this long unused
REQUEST_DEADLINE_S = 5.0  # from accept to a complete request (else declined: the client runs in-process)
HELD_MAX = 64 << 20  # bytes of requests held at once (being read, queued, served); more are declined
QUEUE_DEADLINE_S = 5.0  # a complete request waiting for a worker (else declined the same way)
REPLY_TIMEOUT_S = 10.0  # to hand a reply to a client that does not read it
DEFAULT_MAX_CONNECTIONS = 256  # open connections (being read, queued, served); more are declined
MAX_FDS = 4
PING = b"_ping"


class _StderrRouter(io.TextIOBase):
    """``sys.stderr`` replacement: a per-thread buffer when one is set, else the real one."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.local = threading.local()

    def _target(self) -> Any:
        return getattr(self.local, "buf", None) or self.real

    def write(self, s: str) -> int:  # type: ignore[override]
        return self._target().write(s)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.real, "encoding", "utf-8")

    def fileno(self) -> int:
        return self.real.fileno()


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux >= 6.5
CAP_NAMES = ("chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
             "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
             "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
             "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
             "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
             "checkpoint_restore")


def _cap_eff(status: str) -> int:
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise ValueError("no CapEff line")


def cap_names(mask: int) -> str:
    return ",".join(f"cap_{CAP_NAMES[i]}" if i < len(CAP_NAMES) else f"cap_{i}"
                    for i in range(mask.bit_length()) if mask >> i & 1)


class PeerGone(Exception):
    """The process at the other end is gone (or cannot be told apart from a new one)."""


def _pidfd_pid(pidfd: int) -> int:
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        for line in f:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    raise PeerGone("no Pid in the pidfd's fdinfo")


def peer_facts(conn: socket.socket) -> dict:
    """What the agent needs to know about the process at the other end of ``conn``: its
    pid, effective capabilities, mount namespace and root directory.

    Race-free against pid reuse: the process is pinned by a pidfd, from the connection
    itself when the kernel offers it (``SO_PEERPIDFD``, Linux 6.5), else ``pidfd_open``
    of ``SO_PEERCRED``'s pid; the /proc reads count only if the pidfd still names that
    pid afterwards (a reaped process shows ``Pid: -1``, so its pid cannot have been
    reused in between). A connection whose peer has already hung up is refused as well.
    """
    pidfd = -1
    try:
        try:
            pidfd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
            pid = _pidfd_pid(pidfd)
        except OSError:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid = struct.unpack("3i", creds)[0]
            try:
                pidfd = os.pidfd_open(pid)
            except OSError as e:
                raise PeerGone(f"pid {pid}: {e.strerror}") from None
            if _caller_gone(conn):  # its pid may name another process by now
                raise PeerGone(f"pid {pid} hung up")
        if pid <= 0:
            raise PeerGone("the caller has exited")
        try:
            with open(f"/proc/{pid}/status") as f:
                cap_eff = _cap_eff(f.read())
            mnt = os.stat(f"/proc/{pid}/ns/mnt")
            root = os.stat(f"/proc/{pid}/root")
            root_path = os.readlink(f"/proc/{pid}/root")  # a chroot into a bind mount of / has its inode
        except (OSError, ValueError) as e:
            raise PeerGone(f"pid {pid}: {e}") from None
        if _pidfd_pid(pidfd) != pid:
            raise PeerGone(f"pid {pid} exited while it was being checked")
        return {"pid": pid, "cap_eff": cap_eff, "mnt": (mnt.st_dev, mnt.st_ino),
                "root": (root.st_dev, root.st_ino, root_path)}
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def own_facts() -> dict:
    with open("/proc/self/status") as f:
        cap_eff = _cap_eff(f.read())
    mnt, root = os.stat("/proc/self/ns/mnt"), os.stat("/proc/self/root")
    return {"pid": os.getpid(), "cap_eff": cap_eff, "mnt": (mnt.st_dev, mnt.st_ino),
            "root": (root.st_dev, root.st_ino, os.readlink("/proc/self/root"))}


def _config_version(stdin: bytes) -> str:
    try:
        v = json.loads(stdin).get("cniVersion")
        if v in wire.ALL_VERSIONS:
            return v
    except Exception:
        pass
    return "1.1.0"


def _error_reply(code: int, msg: str, details: str = "", stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    err: dict = {"cniVersion": _config_version(stdin), "code": code, "msg": msg}
    if details:
        err["details"] = details
    return 1, (json.dumps(err, indent=4) + "\n").encode(), f"splice agent: error {code}: {msg}\n".encode()


def _env_value(env_blob: bytes, key: bytes) -> bytes | None:
    prefix = key + b"="
    for item in env_blob.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):]
    return None


def _relative_path(env_blob: bytes, stdin: bytes) -> str | None:
    """Which of the caller's paths the agent would resolve against its own cwd (so not as
    the caller would): a relative CNI_NETNS, CNI_PATH entry or IPAM dataDir; else None."""
    netns = _env_value(env_blob, b"CNI_NETNS")
    if netns and not netns.startswith(b"/"):
        return "CNI_NETNS"
    path = _env_value(env_blob, b"CNI_PATH")
    if path and any(p and not p.startswith(b"/") for p in path.split(b":")):
        return "CNI_PATH"
    if b"dataDir" in stdin:
        try:
            conf = json.loads(stdin)
        except (ValueError, RecursionError):
            return None  # the plugin reports the config (too deep: code 6)
        if isinstance(conf, dict):
            for section in (conf, conf.get("ipam")):
                d = section.get("dataDir") if isinstance(section, dict) else None
                if isinstance(d, str) and d and not d.startswith("/"):
                    return "dataDir"
    return None


def _caller_gone(conn: socket.socket) -> bool:
    """Has the client closed its end (hung up: its runtime gave up and killed it)?"""
    import select

    p = select.poll()
    p.register(conn.fileno(), select.POLLHUP | select.POLLERR)
    return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in p.poll(0))


def _in_process_reply(kind: bytes, why: str) -> tuple[int, bytes, bytes]:
    """Decline a call: the client runs it in-process after printing this one line."""
    name = "splice-" + kind.decode(errors="replace") if kind else "splice"
    return -1, b"", f"{name}: the splice agent does not serve this call ({why}): running in-process\n".encode()


def _is_netns_fd(fd: int) -> bool:
    from splice.libnet.netns import _is_netns_fd as check

    return check(fd)


def _check_directory(directory: str) -> None:
    """The socket's directory must be root's (or ours) and writable by nobody else: anyone
    who can write there could replace the socket or plant its lock file."""
    st = os.stat(directory)
    if st.st_uid not in (0, os.geteuid()):
        raise SystemExit(f"splice agent: {directory} is owned by uid {st.st_uid}, not root; refusing to serve there")
    if st.st_mode & 0o022:
        raise SystemExit(f"splice agent: {directory} is writable by group or others "
                         f"(mode {stat.S_IMODE(st.st_mode):o}); refusing to serve there")


def listen_fds() -> list[int]:
    """fds passed by systemd socket activation (sd_listen_fds), from 3 on."""
    try:
        if int(os.environ.get("LISTEN_PID", "0")) != os.getpid():
            return []
        n = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    return list(range(3, 3 + n))


class Agent:
    """Serve CNI calls on a unix socket until :meth:`stop` (or SIGTERM/SIGINT in :func:`serve`)."""

    def __init__(self, path: str, *, workers: int = DEFAULT_WORKERS, verbose: bool = False,
                 log: Any = None, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.path = path
        self.workers = max(1, workers)
        self.max_connections = max(1, max_connections)
        self._queue: collections.deque[_Request] = collections.deque()
        self._queue_cond = threading.Condition()
        self._reader: _Reader | None = None
        self.verbose = verbose
        self.log_stream = log if log is not None else sys.stderr
        self._sock: socket.socket | None = None
        self._own_socket = False  # we bound it (unlink it at the end), not systemd
        self._sock_ino: tuple[int, int] | None = None
        self._lock_fd: int | None = None
        self._own_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._own = own_facts()
        self._stopping = threading.Event()
        self._inflight = 0
        self._served = 0
        self._failed = 0
        self._count_lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self.started = time.time()
        self.warm_s = 0.0

    # -- logging --------------------------------------------------------------------
    def log(self, msg: str) -> None:
        try:
            self.log_stream.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} splice-agent[{os.getpid()}]: {msg}\n")
            self.log_stream.flush()
        except Exception:
            pass

    # -- socket ---------------------------------------------------------------------
    def bind(self) -> None:
        """Take the socket: systemd's (socket activation) or our own at ``self.path``."""
        activated = listen_fds()
        if activated:
            self._sock = socket.socket(fileno=activated[0])
            self._own_socket = False
            try:
                name = self._sock.getsockname()
                if isinstance(name, str) and name:
                    self.path = name
            except OSError:
                pass
            for extra in activated[1:]:
                os.close(extra)
            self.log(f"serving the socket passed by systemd (fd {activated[0]})")
            return
        directory = os.path.dirname(self.path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)
        _check_directory(directory)
        self._take_lock()
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise SystemExit(f"splice agent: {self.path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
                raise SystemExit(f"splice agent: another agent is listening on {self.path}")
            except OSError:
                os.unlink(self.path)  # stale: nobody listens
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is born 0600: no window for another uid to connect
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        st2 = os.stat(self.path)
        self._sock_ino = (st2.st_dev, st2.st_ino)
        sock.listen(socket.SOMAXCONN)
        self._sock = sock
        self._own_socket = True

    def _take_lock(self) -> None:
        """flock ``<socket>.lock`` (one agent per socket). A lock file left by an agent that
        died is stale (the kernel dropped its flock) and simply taken over. A clean exit
        unlinks it (:meth:`close`), so after taking the lock we check that the path still
        names the file we locked: if an exiting agent unlinked it meanwhile, start again
        on the new file (else two agents could each hold a lock on a different file)."""
        import fcntl

        lock = self.path + ".lock"
        for _ in range(100):
            try:  # O_NOFOLLOW: a symlink planted at the lock path is refused, not followed
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise SystemExit(f"splice agent: {lock} is a symbolic link; refusing to use it") from None
                raise SystemExit(f"splice agent: cannot open {lock}: {e.strerror}") from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise SystemExit(f"splice agent: {lock} exists and is not a regular file")
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                st, now = os.fstat(fd), os.stat(lock)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    raise SystemExit(f"splice agent: another agent holds {lock}") from None
                if e.errno == errno.ENOENT:
                    continue  # unlinked by an agent exiting right now: lock the next one
                raise
            except BaseException:
                os.close(fd)
                raise
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                self._lock_fd = fd
                return
            os.close(fd)  # we locked a file that is gone from the path: try again
        raise SystemExit(f"splice agent: cannot take {lock}: it keeps changing")

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        if self._own_socket and self._sock_ino is not None:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._sock_ino:
                    os.unlink(self.path)
            except OSError:
                pass
            self._own_socket = False
        if self._lock_fd is not None:
            try:  # still holding the lock: nobody else can be using this file
                os.unlink(self.path + ".lock")
            except OSError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- warm-up ----------------------------------------------------------------------
    def warm(self) -> None:
        """Pay every import (and libnftables' dlopen) once, before the first call; share
        nftables contexts per namespace, with a janitor closing idle ones."""
        t0 = time.perf_counter()
        _warm()
        from splice.libnet import nft
        from splice.plugins.cni import ipam_plugin

        nft.share_contexts(True)
        ipam_plugin.share_stores(True)
        threading.Thread(target=self._janitor, name="splice-janitor", daemon=True).start()
        self.warm_s = time.perf_counter() - t0
        self.log(f"warm in {self.warm_s * 1000:.0f} ms")

    def _janitor(self) -> None:
        from splice.libnet import conntrack, nft
        from splice.plugins.cni import ipam_plugin

        while not self._stopping.wait(min(5.0, IDLE_S / 2)):
            try:
                nft.prune_contexts(IDLE_S)
                ipam_plugin.prune_stores(IDLE_S)
                conntrack.prune_sockets(IDLE_S)  # a kept netfilter socket pins its namespace
            except Exception as e:  # noqa: BLE001 - keep serving
                self.log(f"janitor: {e}")

    # -- serving --------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Start the reader and the workers and supervise them until :meth:`stop`.

        One reader thread (:class:`_Reader`, a selector) accepts every connection and
        reads requests with deadlines, holding no worker: only complete requests go to
        the queue the ``workers`` threads serve. Idle or slow clients therefore cannot
        starve real calls; they are declined after ``REQUEST_DEADLINE_S``, and so is a
        request still queued after ``QUEUE_DEADLINE_S`` (all workers busy) or one
        arriving while ``max_connections`` are open: the client runs it in-process.
        """
        assert self._sock is not None, "bind() first"
        self._reader = _Reader(self)
        reader = threading.Thread(target=self._reader.run, name="splice-reader", daemon=True)
        reader.start()
        self.log(f"listening on {self.path} (workers {self.workers}, connections {self.max_connections})")
        while not self._stopping.is_set():
            with self._count_lock:
                missing = self.workers - len(self._threads)
            for _ in range(missing):
                t = threading.Thread(target=self._worker, name="splice-worker", daemon=True)
                with self._count_lock:
                    self._threads.add(t)
                t.start()
            self._stopping.wait(0.5)
        reader.join(timeout=5)
        with self._queue_cond:
            self._queue_cond.notify_all()

    def _next_request(self) -> "_Request | None":
        """The oldest queued request; None when stopping and nothing is left."""
        with self._queue_cond:
            while not self._queue:
                if self._stopping.is_set():
                    return None
                self._queue_cond.wait(0.5)
            return self._queue.popleft()

    def _worker(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                req = self._next_request()
                if req is None:
                    return
                if not self._connection(req):
                    return  # this thread could not leave a caller's namespace: replace it
        finally:
            with self._count_lock:
                self._threads.discard(me)

    def stop(self) -> None:
        self._stopping.set()

    def drain(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds for the workers (calls in flight); True when all ended."""
        deadline = time.monotonic() + grace
        while True:
            with self._count_lock:
                threads = list(self._threads)
            if not threads:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            threads[0].join(timeout=min(left, 0.5))

    def status(self) -> dict:
        with self._count_lock:
            inflight, served, failed = self._inflight, self._served, self._failed
        return {"agent": "splice", "pid": os.getpid(), "socket": self.path, "uptime_s": round(time.time() - self.started, 3),
                "warm_ms": round(self.warm_s * 1000, 1), "workers": self.workers, "inflight": inflight,
                "served": served, "failed": failed, "python": sys.version.split()[0]}

    # -- one connection ---------------------------------------------------------------
    def _connection(self, req: "_Request") -> bool:
        """Serve one complete request; False when this thread must end (namespace not restored)."""
        conn, fields, fds = req.conn, req.fields, req.fds
        healthy = True
        try:
            conn.setblocking(True)
            conn.settimeout(REPLY_TIMEOUT_S)  # for the reply: the call itself runs without a deadline
            if _caller_gone(conn):  # gave up while its request was queued: do not start it
                kind = fields[1].decode(errors="replace") if len(fields) > 1 else "?"
                self.log(f"{kind}: the caller left before its call started; not started")
                return True
            declined = self._decline(conn, fields)
            if declined is not None:
                self.log(declined[2].decode(errors="replace").rstrip("\n"))
                self._reply(conn, declined)
                return True
            reply, healthy = self._dispatch(fields, fds, conn)
            if reply is not None:
                self._reply(conn, reply)
        except Exception as e:  # never let one connection take the agent down
            self.log(f"connection failed: {e.__class__.__name__}: {e}")
        finally:
            req.close()
            self._reader.done(req)
        return healthy

    def _decline(self, conn: socket.socket, fields: list[bytes]) -> tuple[int, bytes, bytes] | None:
        """A reply declining the call (the client runs it in-process), or None to serve it.

        The agent serves a call only if serving it gives the caller nothing it could not do
        itself: the caller's effective capabilities must include the agent's own (the
        agent would otherwise act, and exec delegates from the caller's CNI_PATH, with
        capabilities the caller lacks). In-process, the kernel decides.
        """
        if len(fields) < 3 or fields[1] == PING or _env_value(fields[2], b"CNI_COMMAND") == b"VERSION":
            return None  # no work, no paths
        kind = fields[1]
        try:
            peer = peer_facts(conn)
        except PeerGone as e:
            return _in_process_reply(kind, f"cannot identify the caller: {e}")
        missing = self._own["cap_eff"] & ~peer["cap_eff"]
        if missing:
            return _in_process_reply(kind, f"pid {peer['pid']} lacks capabilities the agent has: {cap_names(missing)}")
        # paths: the agent must resolve them as the caller would
        if peer["mnt"] != self._own["mnt"]:
            return _in_process_reply(kind, f"pid {peer['pid']} is in another mount namespace")
        if peer["root"] != self._own["root"]:
            return _in_process_reply(kind, f"pid {peer['pid']} has another root directory")
        if len(fields) == 4:
            relative = _relative_path(fields[2], fields[3])
            if relative:
                return _in_process_reply(kind, f"relative path in {relative}")
        return None

    def _reply(self, conn: socket.socket, reply: tuple[int, bytes, bytes]) -> bool:
        """Send the reply; False when the client is gone (killed by its runtime's timeout)."""
        rc, out, err = reply
        try:
            wire.send_message(conn, [wire.PROTOCOL, wire.IN_PROCESS if rc == -1 else str(rc).encode(), out, err])
            return True
        except OSError:
            return False

    def _dispatch(self, fields: list[bytes], fds: list[int],
                  conn: socket.socket | None = None) -> tuple[tuple[int, bytes, bytes] | None, bool]:
        """Run the request; the reply to send, or None when it is sent already (a successful
        ADD, answered here) or nobody is left to send it to (the ADD is then undone)."""
        if len(fields) != 4 or fields[0] != wire.PROTOCOL:
            return _error_reply(wire.INTERNAL, "splice agent: unsupported request",
                                f"protocol {fields[0][:16]!r}, {len(fields)} fields" if fields else "empty request"), True
        _, kind_b, env_blob, stdin = fields
        kind = kind_b.decode(errors="replace")
        if kind_b == PING:
            return (0, (json.dumps(self.status()) + "\n").encode(), b""), True
        if len(fds) not in (1, 2) or not _is_netns_fd(fds[0]):
            return _error_reply(wire.INTERNAL, "splice agent: the request carries no network namespace",
                                "the client must pass its network namespace fd (SCM_RIGHTS)", stdin), True
        try:
            env = dict(item.decode("utf-8", "surrogateescape").split("=", 1)
                       for item in env_blob.split(b"\0") if item)
        except ValueError:
            return _error_reply(wire.INTERNAL, "splice agent: malformed environment in the request", stdin=stdin), True
        t0 = time.perf_counter()
        with self._count_lock:
            self._inflight += 1
        healthy = True
        sandbox_fd = fds[1] if len(fds) > 1 else None
        done = False  # answered here, or nobody to answer
        try:
            reply, healthy = self._call(kind, env, stdin, fds[0], sandbox_fd)
            if conn is not None and env.get("CNI_COMMAND") == "ADD" and reply[0] == 0:
                done = True
                if _caller_gone(conn) or not self._reply(conn, reply):
                    # nobody will get this result, so nobody will DEL it: undo it now (the
                    # same env and config, as the runtime's DEL would), and answer nobody
                    undo, ok = self._call(kind, {**env, "CNI_COMMAND": "DEL"}, stdin, fds[0], sandbox_fd)
                    healthy = healthy and ok
                    self.log(f"{kind} ADD {env.get('CNI_CONTAINERID', '-')}/{env.get('CNI_IFNAME', '-')}: the caller "
                             f"left before the result; undone by DEL (rc={undo[0]})"
                             + (f": {undo[2].decode(errors='replace').strip()}" if undo[0] else ""))
        finally:
            with self._count_lock:
                self._inflight -= 1
                self._served += 1
        if reply[0] != 0:
            with self._count_lock:
                self._failed += 1
        if self.verbose or reply[0] != 0:
            cmd = env.get("CNI_COMMAND", "?")
            self.log(f"{kind} {cmd} {env.get('CNI_CONTAINERID', '-')}/{env.get('CNI_IFNAME', '-')} "
                     f"rc={reply[0]} {(time.perf_counter() - t0) * 1000:.1f} ms")
        return (None if done else reply), healthy

    def _call(self, kind: str, env: dict[str, str], stdin: bytes, nsfd: int,
              sandbox_fd: int | None = None) -> tuple[tuple[int, bytes, bytes], bool]:
        """Run one CNI call on this thread, inside the caller's namespace ``nsfd``.

        The thread enters the namespace for the call and returns to the agent's own
        afterwards (so an idle worker pins no caller's namespace); the next call enters
        its caller's namespace first anyway, so a thread that failed to return could not
        act in a wrong namespace, but it is retired all the same (False).
        """
        from splice.libnet.netns import Netns, inline_switching, thread_broken
        from splice.plugins.cni import main as cni_main

        if kind not in cni_main.PLUGINS:
            return _error_reply(wire.INTERNAL, f"splice agent: unknown plugin kind {kind!r}",
                                f"known: {', '.join(sorted(cni_main.PLUGINS))}", stdin), True
        try:
            plugin = cni_main.load(kind)
        except Exception as exc:
            out, err = cni_main.load_error(*cni_main.PLUGINS[kind], exc)
            return (1, out.encode(), err.encode()), True
        router = sys.stderr if isinstance(sys.stderr, _StderrRouter) else None
        try:
            _setns(nsfd)
        except OSError as e:
            return _error_reply(wire.INTERNAL, "splice agent: cannot enter the caller's network namespace",
                                e.strerror or str(e), stdin), True
        from splice.plugins.cni.skel import run_plugin

        sandbox = _SandboxPath(env.get("CNI_NETNS"), sandbox_fd)
        out, err = io.StringIO(), io.StringIO()
        if router is not None:
            router.local.buf = err
        try:
            # host = this thread's namespace, i.e. the caller's: host-side work runs inline,
            # and so do visits to the sandbox (setns there and back on this worker thread)
            with inline_switching(nsfd):
                rc = run_plugin(plugin, env=sandbox.env(env), stdin=io.BytesIO(sandbox.stdin(stdin)), stdout=out,
                                host=Netns.current())
        finally:
            if router is not None:
                router.local.buf = None
            healthy = self._leave_namespace() and not thread_broken()
        return (rc, sandbox.output(out.getvalue().encode("utf-8", "surrogateescape"), json_text=True),
                sandbox.output(err.getvalue().encode("utf-8", "replace"))), healthy

    def _leave_namespace(self) -> bool:
        try:
            _setns(self._own_ns)
            return True
        except OSError as e:
            self.log(f"cannot return a worker to the agent's namespace ({e.strerror}); retiring it")
            return False


class _Request:
    """A connection and, once read, its request (fields and passed fds)."""

    __slots__ = ("conn", "buf", "fds", "fields", "deadline", "queued_at", "draining", "drained", "held")

    def __init__(self, conn: socket.socket, deadline: float) -> None:
        self.conn = conn
        self.buf = bytearray()
        self.fds: list[int] = []
        self.fields: list[bytes] = []
        self.deadline = deadline
        self.queued_at = 0.0
        self.held = 0  # bytes of this request counted in the reader's budget
        self.draining = False  # answered already: reading what the client still sends, then closing
        self.drained = 0

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
        try:
            self.conn.close()
        except OSError:
            pass


class _Reader:
    """The agent's one reading thread: accepts, reads requests without blocking (a
    selector), enforces the deadlines and the connection cap, queues complete requests for
    the workers. It answers on its own only refusals and declines (small replies, sent
    without blocking), then reads what the client still sends before closing, so that the
    client reads the answer instead of a reset."""

    DRAIN_S = 1.0

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self.sel = selectors.DefaultSelector()
        self.reading: dict[int, _Request] = {}  # fileno -> connection being read or drained
        self.open = 0  # connections accepted and not closed yet (reading, queued, being served)
        self.held = 0  # bytes of their requests (HELD_MAX): the agent's memory stays bounded
        self.lock = threading.Lock()

    def done(self, req: "_Request") -> None:
        with self.lock:
            self.open -= 1
            self.held -= req.held
            req.held = 0

    def _hold(self, req: "_Request", n: int) -> bool:
        """Count ``n`` more bytes of ``req``; False (nothing counted) past :data:`HELD_MAX`."""
        with self.lock:
            if self.held + n > HELD_MAX:
                return False
            self.held += n
            req.held += n
            return True

    def run(self) -> None:
        agent = self.agent
        listener = agent._sock
        assert listener is not None
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, None)
        try:
            while not agent._stopping.is_set():
                for key, _ in self.sel.select(timeout=0.25):
                    if key.data is None:
                        self._accept(listener)
                    else:
                        self._readable(key.data)
                self._expire()
        except Exception as e:  # noqa: BLE001 - the agent cannot serve without its reader
            agent.log(f"reader failed: {e.__class__.__name__}: {e}; stopping")
            agent.stop()
        finally:
            try:
                self.sel.unregister(listener)
            except (KeyError, ValueError, OSError):
                pass
            for req in list(self.reading.values()):
                self._close(req)
            self.sel.close()

    def _accept(self, listener: socket.socket) -> None:
        agent = self.agent
        for _ in range(64):  # a burst at a time, then look at the others again
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    agent.log(f"accept: {e.strerror or e}; backing off")
                    time.sleep(0.05)
                return
            conn.setblocking(False)
            req = _Request(conn, time.monotonic() + REQUEST_DEADLINE_S)
            with self.lock:
                self.open += 1
                full = self.open > agent.max_connections
            self.reading[conn.fileno()] = req
            self.sel.register(conn, selectors.EVENT_READ, req)
            try:
                uid = _peer_uid(conn)
            except OSError:
                uid = -1
            if uid not in (0, os.geteuid()):
                agent.log(f"refused a client with uid {uid}")
                # answer without reading the request: a non-root client learns nothing else
                self._answer(req, _error_reply(wire.INTERNAL, "splice agent: permission denied",
                                               f"peer uid {uid} is not root"))
            elif full:
                agent.log(f"{agent.max_connections} connections open: declining one")
                self._answer(req, _in_process_reply(b"", f"the agent has {agent.max_connections} connections open"))

    def _readable(self, req: _Request) -> None:
        while True:
            try:
                msg, anc, flags, _ = req.conn.recvmsg(1 << 16, socket.CMSG_SPACE(MAX_FDS * 4))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(req)
                return
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    arr = array.array("i")
                    arr.frombytes(data[: len(data) - len(data) % arr.itemsize])
                    req.fds.extend(arr)
            if req.draining:
                req.drained += len(msg)
                if not msg or req.drained > (1 << 20):
                    self._close(req)
                    return
                continue  # dropped (and any fds with it, on close)
            if flags & socket.MSG_CTRUNC:
                self._answer(req, _error_reply(wire.INTERNAL, "splice agent: unreadable request",
                                               "too many file descriptors in the request"))
                return
            if not msg:
                self._close(req)  # closed before a whole request: nobody to answer
                return
            if not self._hold(req, len(msg)):
                self.agent.log(f"requests of {HELD_MAX >> 20} MiB held already: declining one")
                self._answer(req, _in_process_reply(b"", "the agent holds too many large requests"))
                return
            req.buf += msg
            problem = self._complete(req)
            if problem:
                self._answer(req, _error_reply(wire.INTERNAL, "splice agent: unreadable request", problem))
                return
            if req.fields:
                self._queue(req)
                return

    @staticmethod
    def _complete(req: _Request) -> str | None:
        """Parse ``req.buf`` into ``req.fields`` once it holds a whole message; a problem, or None."""
        if len(req.buf) < 4:
            return None
        size = int.from_bytes(req.buf[:4], "big")
        if size > wire.MAX_MESSAGE:
            return f"message of {size} bytes is too large"
        if len(req.buf) < 4 + size:
            return None
        if len(req.buf) > 4 + size:
            return "more data than announced"
        try:
            req.fields = wire.decode(bytes(req.buf[4:]))
        except ValueError as e:
            return str(e)
        if not req.fields:
            return "empty request"
        req.buf = bytearray()
        return None

    def _queue(self, req: _Request) -> None:
        self._forget(req)
        req.queued_at = time.monotonic()
        agent = self.agent
        with agent._queue_cond:
            agent._queue.append(req)
            agent._queue_cond.notify()

    def _expire(self) -> None:
        now = time.monotonic()
        for req in [r for r in self.reading.values() if r.deadline <= now]:
            if req.draining:
                self._close(req)
            else:
                self.agent.log(f"no complete request within {REQUEST_DEADLINE_S:g} s: declining the connection")
                self._answer(req, _in_process_reply(b"", f"no complete request within {REQUEST_DEADLINE_S:g} s"))
        agent = self.agent
        stale: list[_Request] = []
        with agent._queue_cond:
            while agent._queue and now - agent._queue[0].queued_at >= QUEUE_DEADLINE_S:
                stale.append(agent._queue.popleft())
        for req in stale:
            kind = req.fields[1] if len(req.fields) > 1 else b""
            agent.log(f"a request waited {QUEUE_DEADLINE_S:g} s for a worker: declining it")
            for fd in req.fds:
                os.close(fd)
            req.fds = []
            self.reading[req.conn.fileno()] = req
            self.sel.register(req.conn, selectors.EVENT_READ, req)
            self._answer(req, _in_process_reply(kind, f"all {agent.workers} workers busy for {QUEUE_DEADLINE_S:g} s"))

    def _answer(self, req: _Request, reply: tuple[int, bytes, bytes]) -> None:
        """Send a small reply without blocking, then drain the connection briefly."""
        rc, out, err = reply
        data = wire.encode([wire.PROTOCOL, wire.IN_PROCESS if rc == -1 else str(rc).encode(), out, err])
        try:
            sent = req.conn.send(data)
            if sent < len(data):
                raise BlockingIOError
            req.conn.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(req)
            return
        req.draining = True
        req.buf = bytearray()
        req.deadline = time.monotonic() + self.DRAIN_S

    def _forget(self, req: _Request) -> None:
        self.reading.pop(req.conn.fileno(), None)
        try:
            self.sel.unregister(req.conn)
        except (KeyError, ValueError, OSError):
            pass

    def _close(self, req: _Request) -> None:
        self._forget(req)
        req.close()
        self.done(req)


class _SandboxPath:
    """CNI_NETNS as the agent hands it to the plugin: never the caller's path (which names
    something else in the agent's context, e.g. ``/proc/self/ns/net``) but the sandbox the
    client opened, as ``/proc/<agent pid>/fd/<n>``: valid on the worker thread and in
    the delegates it executes, for the duration of the call. A sandbox the client could
    not open becomes ``/proc/<agent pid>/fd/-1`` (does not exist, as for the caller).

    The plugin's view is made consistent: the caller's path in a ``prevResult``
    (``interfaces[].sandbox``) reads as the fd path, and the fd path in the answer
    (results, error messages) reads as the caller's path again. The "plugin's netns is
    CNI_NETNS" check (code 8) compares the fd's namespace with the caller's, as in-process.
    """

    def __init__(self, original: str | None, fd: int | None) -> None:
        self.original = original or None
        self.path = f"/proc/{os.getpid()}/fd/{fd if fd is not None else -1}"

    def env(self, env: dict[str, str]) -> dict[str, str]:
        return env if self.original is None else {**env, "CNI_NETNS": self.path}

    def stdin(self, data: bytes) -> bytes:
        if self.original is None:
            return data
        for quoted in {json.dumps(self.original), json.dumps(self.original, ensure_ascii=False)}:
            data = data.replace(quoted.encode("utf-8", "surrogateescape"), json.dumps(self.path).encode())
        return data

    def output(self, data: bytes, json_text: bool = False) -> bytes:
        if self.original is None:
            return data
        import re

        back = (json.dumps(self.original)[1:-1] if json_text else self.original).encode("utf-8", "surrogateescape")
        return re.sub(re.escape(self.path.encode()) + rb"(?![0-9])", lambda _m: back, data)


def _setns(fd: int) -> None:
    """setns(fd, CLONE_NEWNET) for the calling thread only."""
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


CLONE_NEWNET = 0x40000000
_libc: Any = None


def _warm() -> None:
    """Import everything a call can need, and load libnftables once (the imports are the
    whole start-up cost of a call; bench/agent_calls.py)."""
    import importlib

    for mod in ("splice.plugins.cni.skel", "splice.plugins.cni.types", "splice.plugins.cni.errors",
                "splice.plugins.cni.ipam", "splice.plugins.cni.delegate", "splice.plugins.cni.bridge_plugin",
                "splice.plugins.cni.ipam_plugin", "splice.plugins.bridge.config", "splice.plugins.bridge.driver",
                "splice.plugins.model", "splice.plugins.failpoint", "splice.libnet.rtnl", "splice.libnet.sysctl",
                "splice.plugins.cni.main_plugin", "splice.plugins.driver", "splice.plugins.owners",
                "splice.plugins.errors", "splice.libnet.sandbox", "splice.libnet.locks", "splice.libnet.nftowned",
                "splice.libnet.nft", "splice.libnet.masq", "splice.libnet.spoofchk", "splice.ipam.allocator",
                "splice.ipam.config", "splice.ipam.store", "sqlite3", "subprocess", "traceback"):
        importlib.import_module(mod)
    for mod in ("splice.plugins.cni.portmap_plugin", "splice.plugins.portmap.config", "splice.plugins.portmap.driver",
                "splice.libnet.portmap", "splice.libnet.conntrack", "splice.plugins.cni.macvlan_plugin",
                "splice.plugins.macvlan.config", "splice.plugins.macvlan.driver", "splice.plugins.lowerdev",
                "splice.plugins.cni.ipvlan_plugin", "splice.plugins.ipvlan.config",
                "splice.plugins.ipvlan.driver"):  # optional plugins
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
    try:
        from nftables import Nftables

        Nftables()  # dlopen libnftables now, not in the first call
    except Exception:
        pass


OVERLAY: dict | None = None  # {"node", "state_dir", "log"}: read by splice.plugins.vxlan.overlay (imported on use)


def serve(path: str, *, workers: int = DEFAULT_WORKERS, verbose: bool = False, grace: float = 60.0,
          max_connections: int = DEFAULT_MAX_CONNECTIONS, node: str | None = None,
          state_dir: str = "/var/lib/splice/agent") -> int:
    """``splice agent``: bind, warm up, serve until SIGTERM/SIGINT, drain, clean up."""
    global OVERLAY
    if os.geteuid() != 0:
        print("splice agent: must run as root (it changes network namespaces)", file=sys.stderr)
        return 1
    agent = Agent(path, workers=workers, verbose=verbose, log=sys.stderr, max_connections=max_connections)
    OVERLAY = {"node": node or socket.gethostname(), "state_dir": os.path.abspath(state_dir), "log": agent.log}
    sys.stderr = _StderrRouter(sys.stderr)
    agent.log_stream = sys.stderr.real
    try:
        agent.bind()
    except SystemExit as e:
        agent.close()  # the lock, if bind() took it before failing
        print(e, file=sys.stderr.real)
        return 1

    def on_signal(signum: int, _frame: Any) -> None:
        agent.log(f"signal {signal.Signals(signum).name}: stopping")
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.warm()
        agent.serve_forever()
    finally:
        if agent._sock is not None and agent._own_socket:
            agent._sock.close()  # no new connections while draining
        if not agent.drain(grace):
            agent.log(f"{agent._inflight} call(s) still running after {grace:g} s; exiting anyway")
        overlay = sys.modules.get("splice.plugins.vxlan.overlay")
        if overlay is not None:
            overlay.shutdown()  # leases not revoked: a restart keeps the subnets
        agent.close()
        from splice.libnet import nft
        from splice.plugins.cni import ipam_plugin

        nft.share_contexts(False)
        ipam_plugin.share_stores(False)
        try:
            from splice.libnet import conntrack

            conntrack.share_sockets(False)  # kept per namespace while nft contexts are shared
        except (ImportError, AttributeError):
            pass
        agent.log(f"stopped after {agent._served} call(s)")
    return 0
