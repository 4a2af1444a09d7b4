"""The thin CNI client: forward one CNI call to the splice agent, or say there is none.

This file is two things at once:

* a module, ``splice.plugins.agent.client``, used by the console scripts
  (``splice.plugins.cni.main``), by ``splice status`` and by the agent (the wire format);
* the body of the standalone executables ``splice install-cni`` writes: the installer
  copies this file verbatim under a ``#!/usr/bin/python3 -IS`` line and appends a footer
  that calls :func:`standalone` (plugin kind, socket path, in-process fallback command).

So it imports **only** interpreter built-ins (``sys``, ``posix``, ``_socket``): not even
``os``, ``socket`` (enum, selectors) or ``json`` (re, enum), each of which would add to
every call's start-up; ``json`` is imported on error paths only (figures:
``bench/startup.py``, docs/perf.md).

A call:

1. ``connect()`` to ``$SPLICE_AGENT_SOCKET`` (default ``/run/splice/agent.sock``).
   Failing to connect (no socket file, a stale one, EACCES for a non-root caller) means
   "no agent": :func:`call` writes one line saying so to stderr (not for VERSION), returns
   None, and the caller runs the plugin in-process (the same driver code).
   ``SPLICE_AGENT_SOCKET=`` (empty) or ``off`` disables the agent without that line, and
   so does ``SPLICE_FAILPOINT`` (failure injection belongs to the in-process path: a
   ``:kill`` failpoint inside the agent would kill the agent).
2. Read all of stdin, open our own network namespace (``/proc/thread-self/ns/net``) and
   ``$CNI_NETNS`` (when an absolute path) and send one message, the two fds attached
   (``SCM_RIGHTS``): the agent does the host-side work in *our* namespace, not its own,
   and uses the sandbox we opened instead of resolving the path in its own context.
3. Wait for the reply (exit code, stdout, stderr), copy it out, exit with the code.
   A connection lost before the reply (agent killed or restarted mid-call) or a reply that
   does not parse is printed as CNI error JSON: code 11 "try again later" (the runtime
   retries or runs DEL; the kernel and the store hold all state, tagged by owner).

Wire format (stream socket, both directions): a 4-byte big-endian length, then that many
bytes of fields, each a 4-byte big-endian length plus its bytes.

* request:  ``[b"1", kind, env, stdin]`` + one or two fds (the caller's netns, then the
  sandbox ``$CNI_NETNS`` names, when the client could open it). ``kind`` is
  ``bridge``/``ipam``/``portmap`` (``_ping`` for ``splice status``, no fd); ``env`` is
  ``KEY=VALUE`` pairs joined by NUL bytes (the whole environment: delegates get it).
* reply:    ``[b"1", exit code (ASCII), stdout, stderr]``; the exit code ``in-process``
  means the agent declines this caller (serving it would give it a privilege it lacks, or
  the agent cannot see its paths as it does): the client prints the stderr field (one
  line), puts the stdin it read back on fd 0 (a memfd) and runs the plugin in-process.
"""

import _socket
import posix
import sys

PROTOCOL = b"1"
DEFAULT_SOCKET = "/run/splice/agent.sock"
ENV_SOCKET = "SPLICE_AGENT_SOCKET"
TIMEOUT_S = 180.0  # a hard deadline (as kuryr's CNI binary): a hung agent yields an error
MAX_MESSAGE = 4 << 20  # a request: the environment + at most MAX_STDIN of config; a reply: a result
MAX_STDIN = 1 << 20  # = splice.plugins.cni.skel.MAX_REQUEST_BYTES (a test keeps them equal)
ALL_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
TRY_AGAIN_LATER = 11
IN_PROCESS = b"in-process"  # the exit-code field of a reply declining the call: run it in-process
INTERNAL = 100


# -- wire format (shared with the agent) ----------------------------------------------
def encode(fields):
    """One message: total length, then length-prefixed fields (all bytes)."""
    body = b"".join([len(f).to_bytes(4, "big") + f for f in fields])
    return len(body).to_bytes(4, "big") + body


def decode(body):
    """The fields of one message body; ValueError when it is malformed."""
    out = []
    i, n = 0, len(body)
    while i < n:
        if i + 4 > n:
            raise ValueError("truncated field header")
        size = int.from_bytes(body[i:i + 4], "big")
        i += 4
        if i + size > n:
            raise ValueError("truncated field")
        out.append(bytes(body[i:i + size]))
        i += size
    return out


def recv_exact(sock, n, first=b""):
    """``n`` bytes (``first`` already read); EOFError when the peer closes early."""
    chunks = [first] if first else []
    got = len(first)
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (got, n))
        chunks.append(chunk)
        got += len(chunk)
    data = b"".join(chunks)
    if len(data) > n:
        raise ValueError("more data than announced")
    return data


def read_message(sock, first=b""):
    """Read one message (``first``: bytes already received) and return its fields."""
    head = recv_exact(sock, 4, first[:4])
    size = int.from_bytes(head, "big")
    if size > MAX_MESSAGE:
        raise ValueError("message of %d bytes is too large" % size)
    return decode(recv_exact(sock, size, first[4:]))


def send_message(sock, fields, fds=()):
    data = encode(fields)
    if fds:
        anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                b"".join([fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds]))]
        sent = sock.sendmsg([data], anc)
    else:
        sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def socket_path(default=None):
    """The agent socket to use (bytes), or None when the agent is disabled."""
    env = posix.environ
    path = env.get(ENV_SOCKET.encode())
    if path is None:
        path = (default or DEFAULT_SOCKET).encode()
    if not path or path == b"off":
        return None
    return path


def connect(path, timeout=TIMEOUT_S):
    """A connected socket, or None when no agent answers at ``path``."""
    return _connect(path, timeout)[0]


def _connect(path, timeout=TIMEOUT_S):
    """``(socket, None)``, or ``(None, the OSError)`` when no agent answers at ``path``."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except OSError as e:  # ENOENT (no agent), ECONNREFUSED (stale socket), EACCES (not root), ...
        s.close()
        return None, e
    uid = _peer_uid(s)
    if uid != 0 and uid != posix.geteuid():
        # whoever serves this path is neither root nor us: send it nothing (not our
        # environment, not our namespace), run in-process
        s.close()
        return None, PermissionError(1, "served by uid %d, not root: not trusted" % uid)
    s.settimeout(timeout)
    return s, None


def _peer_uid(s):
    """The uid of the process that created the listening socket (SO_PEERCRED), -1 if unknown."""
    try:
        creds = s.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    except OSError:
        return -1
    return int.from_bytes(creds[4:8], sys.byteorder, signed=True)


def no_agent_notice(kind, path, err):
    """The one stderr line of a call that found no agent and runs in-process. Runtimes log
    a plugin's stderr (libcni copies it to its own; stdout stays the JSON)."""
    return ("splice-%s: no splice agent at %s (%s): running in-process (slower; start `splice agent`, "
            "or set %s=off to silence this)\n"
            % (kind, path.decode(errors="replace"), err.strerror or err, ENV_SOCKET)).encode()


def request(sock, kind, env_blob, stdin, fds=()):
    """Send one request on a connected socket; ``(exit code, stdout, stderr)`` or raises.
    The exit code is None when the agent declines the call (``IN_PROCESS``): the caller
    runs it in-process, after printing the agent's stderr line."""
    try:
        send_message(sock, [PROTOCOL, kind, env_blob, stdin], fds)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the agent may have answered before reading (a refusal): read that answer
    fields = read_message(sock)
    if len(fields) != 4 or fields[0] != PROTOCOL:
        raise ValueError("unexpected reply from the agent")
    if fields[1] == IN_PROCESS:
        return None, fields[2], fields[3]
    return int(fields[1]), fields[2], fields[3]


def _restore_stdin(data):
    """Put the stdin we consumed back on fd 0 (a memfd holding it) for the in-process run."""
    fd = posix.memfd_create("splice-stdin", 1)  # MFD_CLOEXEC; dup2 below clears it on fd 0
    try:
        _write_all_or_raise(fd, data)
        posix.lseek(fd, 0, 0)
        posix.dup2(fd, 0)
    finally:
        posix.close(fd)


def _write_all_or_raise(fd, data):
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]


# -- the CNI executable ---------------------------------------------------------------
def _read_all(fd, limit=None):
    """All of ``fd``, or its first ``limit`` bytes."""
    chunks = []
    got = 0
    while limit is None or got < limit:
        try:
            chunk = posix.read(fd, 1 << 16 if limit is None else min(1 << 16, limit - got))
        except OSError as e:
            if e.errno == 9:  # EBADF: no stdin at all
                break
            raise
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = posix.write(fd, view)
        except OSError:
            return  # nobody is reading (closed pipe): nothing more to do
        view = view[n:]


def _error(code, msg, details, stdin):
    """CNI error JSON on stdout (in the config's version when it has a known one)."""
    import json  # error path only

    version = "1.1.0"
    try:
        conf = json.loads(stdin)
        if isinstance(conf, dict) and conf.get("cniVersion") in ALL_VERSIONS:
            version = conf["cniVersion"]
    except Exception:
        pass
    err = {"cniVersion": version, "code": code, "msg": msg}
    if details:
        err["details"] = details
    _write_all(1, (json.dumps(err, indent=4) + "\n").encode())
    _write_all(2, ("splice agent client: error %d: %s%s\n" % (code, msg, ": " + details if details else "")).encode())
    return 1


def call(kind, default_socket=None):
    """Run this process's CNI call through the agent.

    Returns the exit code after copying the agent's stdout/stderr to ours, or None when
    there is no agent (nothing has been read from stdin then: the caller runs in-process).
    """
    env = posix.environ
    if env.get(b"SPLICE_FAILPOINT"):
        return None
    path = socket_path(default_socket)
    if path is None:
        return None
    sock, err = _connect(path)
    if sock is None:
        if env.get(b"CNI_COMMAND") != b"VERSION":  # VERSION does no work: no notice
            _write_all(2, no_agent_notice(kind, path, err))
        return None
    stdin = b""
    consumed = False
    nsfd = -1
    try:
        if not (env.get(b"CNI_COMMAND") == b"VERSION" and posix.isatty(0)):
            # no plugin accepts more than MAX_STDIN bytes (skel: code 6 "too large"): one byte
            # more is enough for the agent to say so, without reading (or sending) the rest
            stdin = _read_all(0, MAX_STDIN + 1)
            consumed = True
        nsfd = posix.open("/proc/thread-self/ns/net", posix.O_RDONLY | posix.O_CLOEXEC)
        fds = [nsfd]
        sandbox = env.get(b"CNI_NETNS")
        if sandbox and sandbox[:1] == b"/" and env.get(b"CNI_COMMAND") != b"VERSION":
            try:  # resolved here, as the plugin would in-process: the agent never sees the path
                sbfd = posix.open(sandbox, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NONBLOCK | posix.O_NOCTTY)
            except OSError:
                pass  # gone (a DEL after the sandbox): the agent makes it a path that does not exist
            else:
                fds.append(sbfd)
        env_blob = b"\0".join([k + b"=" + v for k, v in env.items()])
        rc, out, err = request(sock, kind.encode(), env_blob, stdin, fds)
        if rc is None:  # the agent declines (it would give this caller a privilege): in-process
            _write_all(2, err)
            if consumed:
                _restore_stdin(stdin)
            return None
    except (EOFError, OSError) as e:  # incl. timeouts and resets
        return _error(TRY_AGAIN_LATER, "lost the connection to the splice agent before its answer",
                      "%s (socket %s)" % (e, path.decode(errors="replace")), stdin)
    except ValueError as e:
        return _error(INTERNAL, "malformed answer from the splice agent", str(e), stdin)
    finally:
        sock.close()
        if nsfd >= 0:
            for fd in fds:
                posix.close(fd)
    _write_all(1, out)
    if err:
        _write_all(2, err)
    return rc


def standalone(kind, fallback, default_socket=None):
    """Entry point of an installed executable: the agent, else exec ``fallback``
    (``[python, ...]``: the in-process plugin, with stdin still unread).

    Exits with ``posix._exit``: everything was written with ``posix.write`` already, and
    skipping the interpreter's finalisation saves time on every call.
    """
    rc = call(kind, default_socket)
    if rc is None:
        try:
            posix.execv(fallback[0], fallback)
        except OSError as e:
            rc = _error(INTERNAL, "no splice agent and cannot run the in-process plugin",
                        "%s: %s" % (fallback[0], e.strerror), b"")
    posix._exit(rc & 0xFF)
