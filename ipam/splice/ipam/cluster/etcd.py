"""etcd v3 through its JSON gateway (grpc-gateway), with the standard library only.

Why not a client library: ``etcd3`` needs grpcio + a protobuf runtime it no longer imports
with; ``etcd3gw`` pulls ``requests`` + ``futurist`` (~160-240 ms to import, measured); this
module imports ``json``, ``base64`` and ``socket``, and speaks the little HTTP/1.1 it needs
itself (``http.client`` alone costs ~12-20 ms: it imports ``email`` and ``ssl``); ``ssl`` is
imported only for https endpoints. The gateway's rules (REFERENCE.md §6.2, §6.5): path ``/v3/`` (etcd >= 3.4), keys
and values base64, int64 fields are JSON strings, a missing field is its zero value.

* Endpoints ``http://host:port`` / ``https://host:port`` are tried in order, starting with the
  one that answered last; a request that fails on one (refused, timed out, reset, HTTP 5xx
  "unavailable"/"no leader") goes to the next. When every endpoint failed, rounds are retried
  until ``retry_for`` seconds passed (an election takes ~2 s), then :class:`ClusterUnavailable`
  names each endpoint and its last failure. An answer that is a refusal (bad request, unknown
  lease) is :class:`EtcdError` at once.
* Every request has a timeout (``timeout``, bounded by what is left of ``retry_for``).
* TLS: ``ca_file`` (verifies the server; hostname/IP checked), ``cert_file``/``key_file``
  (client certificate).
* Thread-safe: idle keep-alive connections are pooled per endpoint.
* Retried writes may apply twice: ``create`` answers ``created=False`` with the key's value, so
  a caller recognises its own earlier write (its lease id in it); a retried ``lease_grant``
  may leave an unused lease that expires by itself.

Watches (:class:`WatchStream`) are a long-lived chunked response read by the same reader,
which keeps what it buffered across an idle timeout; the resume and re-list logic is in
:class:`splice.ipam.cluster.mirror.Mirror`.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from typing import Any, Iterable, NamedTuple
from urllib.parse import urlsplit

from splice.ipam.cluster.errors import ClusterConfigError, ClusterUnavailable, EtcdError

DEFAULT_TIMEOUT = 2.0
DEFAULT_RETRY_FOR = 3.0
API = "/v3"
# grpc codes that mean "this member cannot answer now": try the next one
_RETRY_GRPC = {1, 4, 8, 10, 14}  # CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, UNAVAILABLE
_RETRY_WORDS = ("no leader", "leader changed", "timed out", "timeout", "not capable", "too many requests",
                "stopped", "unhealthy")


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(key: bytes | str) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``key``."""
    k = bytearray(key.encode() if isinstance(key, str) else key)
    while k and k[-1] == 0xFF:
        k.pop()
    if not k:
        return b"\0"  # every key
    k[-1] += 1
    return bytes(k)


def _int(v: Any) -> int:
    return int(v) if v not in (None, "") else 0


class KV(NamedTuple):
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, d: dict) -> "KV":
        return cls(unb64(d.get("key")), unb64(d.get("value")), _int(d.get("create_revision")),
                   _int(d.get("mod_revision")), _int(d.get("version")), _int(d.get("lease")))


class Endpoint(NamedTuple):
    url: str
    tls: bool
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        if not isinstance(url, str) or "://" not in url:
            raise ClusterConfigError(f"etcd endpoint {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/") or u.query:
            raise ClusterConfigError(f"etcd endpoint {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        try:
            port = u.port or 2379
        except ValueError:
            raise ClusterConfigError(f"etcd endpoint {url!r}: bad port") from None
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        return cls(f"{u.scheme}://{host}:{port}", u.scheme == "https", u.hostname, port)

    @property
    def netloc(self) -> str:
        """``host:port`` as in a URL or a Host header (an IPv6 address in brackets)."""
        return self.url.split("://", 1)[1]


class _Retry(Exception):
    """This endpoint could not answer; the next one may."""


class Etcd:
    def __init__(self, endpoints: Iterable[str] | str, *, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 retry_for: float = DEFAULT_RETRY_FOR, api: str = API) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        self.endpoints = [Endpoint.parse(e.strip()) for e in endpoints]
        if not self.endpoints:
            raise ClusterConfigError("no etcd endpoint given")
        if (cert_file is None) != (key_file is None):
            raise ClusterConfigError("etcd TLS: a client certificate needs both cert_file and key_file")
        self.timeout = float(timeout)
        self.retry_for = float(retry_for)
        self.api = api.rstrip("/")
        self._tls_files = (ca_file, cert_file, key_file)
        self._ssl = None
        if any(e.tls for e in self.endpoints) or ca_file or cert_file:
            self._ssl = self._ssl_context()
        self._lock = threading.Lock()
        self._idle: dict[Endpoint, list[_Conn]] = {}
        self._preferred = 0

    def _ssl_context(self):
        import ssl

        ca, cert, key = self._tls_files
        try:
            ctx = ssl.create_default_context(cafile=ca)
            if cert:
                ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise ClusterConfigError(f"etcd TLS files (ca {ca}, cert {cert}, key {key}): {e}") from None
        return ctx

    # -- transport -----------------------------------------------------------------------
    def order(self) -> list[Endpoint]:
        """Endpoints in the order the next request tries them."""
        n = self._preferred
        return self.endpoints[n:] + self.endpoints[:n]

    def _prefer(self, ep: Endpoint) -> None:
        try:
            self._preferred = self.endpoints.index(ep)
        except ValueError:  # the list was replaced meanwhile
            pass

    def _conn(self, ep: Endpoint, timeout: float) -> tuple["_Conn", bool]:
        with self._lock:
            idle = self._idle.get(ep)
            conn = idle.pop() if idle else None
        if conn is not None:
            return conn, True
        return _Conn(ep, timeout, self._ssl), False

    def _release(self, ep: Endpoint, conn: "_Conn") -> None:
        with self._lock:
            idle = self._idle.setdefault(ep, [])
            if len(idle) < 8:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for c in conns:
            c.close()

    def _once(self, ep: Endpoint, path: str, body: bytes, timeout: float) -> dict:
        """One request to one endpoint: the decoded answer, EtcdError (a refusal), or _Retry."""
        for attempt in (0, 1):
            conn, reused = None, False
            try:
                conn, reused = self._conn(ep, timeout)
                status, reason, data, keep = conn.request(self.api + path, body, timeout)
            except OSError as e:
                if conn is not None:
                    conn.close()
                if reused and attempt == 0 and not conn.reader.received and not isinstance(e, socket.timeout):
                    with self._lock:  # an idle keep-alive connection the server had closed:
                        stale = self._idle.pop(ep, [])  # so are the others (a restarted member)
                    for c in stale:
                        c.close()
                    continue
                raise _Retry(_words(e)) from None
            if keep:
                self._release(ep, conn)
            else:
                conn.close()
            break
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            answer = None
        if status == 200 and isinstance(answer, dict):
            return answer
        err = answer if isinstance(answer, dict) else {}
        err = err.get("error", err) if isinstance(err.get("error", err), dict) else err
        msg = str(err.get("message") or err.get("error") or data[:200].decode(errors="replace") or reason)
        code = err.get("code", err.get("grpc_code"))
        code = int(code) if isinstance(code, (int, str)) and str(code).isdigit() else None
        if status >= 500 and (code in _RETRY_GRPC or code is None or any(w in msg.lower() for w in _RETRY_WORDS)):
            raise _Retry(f"HTTP {status}: {msg}")
        if status == 404 and code is None:
            raise _Retry(f"HTTP 404 for {self.api}{path} (not an etcd >= 3.4 JSON gateway?)")
        raise EtcdError(f"etcd {ep.url} refused {path}: {msg}", grpc_code=code)

    def call(self, path: str, payload: dict, *, retry_for: float | None = None, timeout: float | None = None,
             only: Endpoint | None = None) -> dict:
        """POST ``payload`` to ``<api><path>`` with fail-over (``only``: that endpoint); the
        decoded answer."""
        body = json.dumps(payload).encode()
        window = self.retry_for if retry_for is None else retry_for
        deadline = time.monotonic() + window
        failures: dict[str, str] = {}
        pause = 0.05
        while True:
            for ep in [only] if only is not None else self.order():
                left = deadline - time.monotonic()
                per = self.timeout if timeout is None else timeout
                t = per if window <= 0 else min(per, max(left, 0.2))  # retry_for=0: one full try each
                try:
                    answer = self._once(ep, path, body, t)
                except _Retry as e:
                    failures[ep.url] = str(e)
                    continue
                if only is None:
                    self._prefer(ep)
                return answer
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.5)
        tried = "; ".join(f"{url}: {why}" for url, why in failures.items())
        raise ClusterUnavailable(f"no etcd endpoint answered {path} (tried for {window:.1f} s)", tried)

    # -- KV ------------------------------------------------------------------------------
    def range(self, key: bytes | str, range_end: bytes | None = None, *, prefix: bool = False, limit: int = 0,
              revision: int = 0, keys_only: bool = False, **kw) -> tuple[list[KV], int]:
        """``(kvs, header revision)``: one key, ``[key, range_end)``, or every key under ``key``."""
        req: dict[str, Any] = {"key": b64(key)}
        if prefix:
            range_end = prefix_end(key)
        if range_end is not None:
            req["range_end"] = b64(range_end)
        if limit:
            req["limit"] = str(limit)
        if revision:
            req["revision"] = str(revision)
        if keys_only:
            req["keys_only"] = True
        ans = self.call("/kv/range", req, **kw)
        return [KV.from_json(d) for d in ans.get("kvs", ())], _int(ans.get("header", {}).get("revision"))

    def get(self, key: bytes | str, **kw) -> KV | None:
        kvs, _ = self.range(key, **kw)
        return kvs[0] if kvs else None

    def put(self, key: bytes | str, value: bytes | str, *, lease: int = 0, **kw) -> int:
        req: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            req["lease"] = str(lease)
        return _int(self.call("/kv/put", req, **kw).get("header", {}).get("revision"))

    def delete(self, key: bytes | str, *, prefix: bool = False, **kw) -> int:
        req: dict[str, Any] = {"key": b64(key)}
        if prefix:
            req["range_end"] = b64(prefix_end(key))
        return _int(self.call("/kv/deleterange", req, **kw).get("deleted"))

    def txn(self, compare: list[dict], success: list[dict], failure: list[dict] = (), **kw) -> dict:
        """A raw transaction (gateway JSON: ``compare``/``success``/``failure``)."""
        return self.call("/kv/txn", {"compare": compare, "success": list(success), "failure": list(failure)}, **kw)

    def create(self, key: bytes | str, value: bytes | str, *, lease: int = 0, **kw) -> tuple[bool, KV | None]:
        """Put ``key`` only if it does not exist (its create revision is 0), in one txn.
        ``(True, None)`` when created, else ``(False, the existing KV)`` (None if it went away
        between the compare and the read: nothing to compare then, call again)."""
        put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            put["lease"] = str(lease)
        ans = self.txn([{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                       [{"request_put": put}], [{"request_range": {"key": b64(key)}}], **kw)
        if ans.get("succeeded"):
            return True, None
        for r in ans.get("responses", ()):
            kvs = (r.get("response_range") or {}).get("kvs") or ()
            if kvs:
                return False, KV.from_json(kvs[0])
        return False, None

    def replace(self, key: bytes | str, value: bytes | str, *, mod_revision: int, lease: int = 0, **kw) -> bool:
        """Put ``key`` only if it was last modified at ``mod_revision`` (compare-and-swap)."""
        put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            put["lease"] = str(lease)
        ans = self.txn([{"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}],
                       [{"request_put": put}], **kw)
        return bool(ans.get("succeeded"))

    def compact(self, revision: int, **kw) -> None:
        self.call("/kv/compaction", {"revision": str(revision), "physical": True}, **kw)

    # -- leases --------------------------------------------------------------------------
    def lease_grant(self, ttl: int, **kw) -> tuple[int, int]:
        """``(lease id, granted TTL)`` (etcd grants at least its minimum, 2 s for 3.4)."""
        ans = self.call("/lease/grant", {"TTL": str(int(ttl))}, **kw)
        if ans.get("error"):
            raise EtcdError(f"etcd refused a lease: {ans['error']}")
        return _int(ans.get("ID")), _int(ans.get("TTL"))

    def lease_keepalive(self, lease: int, **kw) -> int:
        """Renew once: the TTL now left, 0 when the lease expired or never existed (the
        gateway answers such a keep-alive with no TTL field, not an error)."""
        ans = self.call("/lease/keepalive", {"ID": str(lease)}, **kw)
        return max(_int(ans.get("result", ans).get("TTL")), 0)

    def lease_revoke(self, lease: int, **kw) -> bool:
        """Revoke (deletes its keys); False when it was not there (expired)."""
        try:
            self.call("/lease/revoke", {"ID": str(lease)}, **kw)
        except EtcdError as e:
            if e.grpc_code == 5 or "not found" in str(e):
                return False
            raise
        return True

    def lease_ttl(self, lease: int, **kw) -> int:
        """Seconds left, -1 when the lease does not exist."""
        ans = self.call("/kv/lease/timetolive", {"ID": str(lease)}, **kw)
        return _int(ans.get("TTL"))

    # -- watch ---------------------------------------------------------------------------
    def watch(self, key: bytes | str, *, prefix: bool = False, start_revision: int = 0, endpoint: Endpoint | None = None,
              timeout: float | None = None) -> "WatchStream":
        """Open a watch on one endpoint (``endpoint``, default the preferred one); raises
        ClusterUnavailable if it cannot be opened."""
        req: dict[str, Any] = {"key": b64(key)}
        if prefix:
            req["range_end"] = b64(prefix_end(key))
        if start_revision:
            req["start_revision"] = str(start_revision)
        ep = endpoint or self.order()[0]
        return WatchStream(self, ep, json.dumps({"create_request": req}).encode(), timeout or self.timeout)


def _words(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or e.__class__.__name__


class _Reader:
    """The HTTP/1.1 response side of one socket: head, then a body delimited by
    Content-Length or chunked encoding, read incrementally. Bytes already received stay
    buffered across a timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._raw = b""      # received, not yet de-chunked
        self.body = b""      # de-chunked, not yet consumed
        self._chunked = False
        self._left = -1      # bytes left in the current chunk / body; -1: read a size line,
        self.eof = False     # -2: a body up to the close, -3: trailers after the last chunk
        self.received = 0    # bytes received since the last request was sent

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionResetError(0, "the connection was closed")
        self.received += len(data)
        self._raw += data

    def head(self) -> tuple[int, str, dict[str, str]]:
        while b"\r\n\r\n" not in self._raw:
            if len(self._raw) > 65536:
                raise OSError(0, "HTTP response head too long")
            self._fill()
        head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise OSError(0, f"not an HTTP response: {lines[0][:80]!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.body, self.eof = b"", False
        if not self._chunked:
            length = headers.get("content-length")
            self._left = int(length) if length and length.isdigit() else -2  # -2: until close
            if self._left == 0:
                self.eof = True
        else:
            self._left = -1
        return int(parts[1]), (parts[2] if len(parts) > 2 else ""), headers

    def _dechunk(self) -> None:
        while self._raw and not self.eof:
            if not self._chunked:
                take = self._raw if self._left < 0 else self._raw[: self._left]
                self.body += take
                self._raw = self._raw[len(take):]
                if self._left >= 0:
                    self._left -= len(take)
                    self.eof = self._left == 0
                return
            if self._left == -3:  # after the last chunk: trailer lines up to an empty one
                while b"\r\n" in self._raw:
                    line, self._raw = self._raw.split(b"\r\n", 1)
                    if not line:
                        self.eof = True
                        return
                return
            if self._left < 0:
                if b"\r\n" not in self._raw:
                    return
                size, self._raw = self._raw.split(b"\r\n", 1)
                self._left = int(size.split(b";")[0].strip() or b"0", 16)
                if self._left == 0:
                    self._left = -3
                    continue
            if len(self._raw) < self._left + 2:
                take = self._raw[: self._left]
                self.body += take
                self._raw = self._raw[len(take):]
                self._left -= len(take)
                return
            self.body += self._raw[: self._left]
            self._raw = self._raw[self._left + 2:]
            self._left = -1

    def more(self) -> None:
        """Receive (blocks up to the socket's timeout) and de-chunk; EOF of an until-close
        body ends it, any other EOF raises."""
        try:
            self._fill()
        except ConnectionResetError:
            if not self._chunked and self._left == -2:
                self.eof = True
                return
            raise
        self._dechunk()

    def read_all(self) -> bytes:
        self._dechunk()
        while not self.eof:
            self.more()
        body, self.body = self.body, b""
        return body


def _connect(ep: Endpoint, timeout: float, ctx) -> socket.socket:
    sock = socket.create_connection((ep.host, ep.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ep.tls:
            sock = ctx.wrap_socket(sock, server_hostname=ep.host)
    except BaseException:
        sock.close()
        raise
    return sock


class _Conn:
    """One keep-alive connection to one endpoint (used by one thread at a time)."""

    def __init__(self, ep: Endpoint, timeout: float, ctx) -> None:
        self.ep = ep
        self.sock = _connect(ep, timeout, ctx)
        self.reader = _Reader(self.sock)

    def request(self, path: str, body: bytes, timeout: float) -> tuple[int, str, bytes, bool]:
        """``(status, reason, body, keep-alive?)``."""
        self.reader.received = 0
        if self.reader._raw:
            raise ConnectionError(0, "unexpected bytes on an idle connection")
        self.sock.settimeout(timeout)
        self.sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {self.ep.netloc}\r\n"
                           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        status, reason, headers = self.reader.head()
        data = self.reader.read_all()
        keep = headers.get("connection", "").lower() != "close" and self.reader._left != -2
        return status, reason, data, keep

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class WatchStream:
    """One open watch: ``next(timeout)`` answers the next decoded message (a dict, usually
    ``{"result": {...}}``), None when nothing came within ``timeout`` (the stream stays
    usable), and raises ClusterUnavailable when the stream ended or broke."""

    def __init__(self, client: Etcd, ep: Endpoint, body: bytes, timeout: float) -> None:
        self.endpoint = ep
        self.sock = None
        try:
            self.sock = _connect(ep, timeout, client._ssl)
            # hasleader: the member ends the watch when it loses its leader (etcd's
            # WithRequireLeader), instead of going silent
            head = (f"POST {client.api}/watch HTTP/1.1\r\nHost: {ep.netloc}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    f"Grpc-Metadata-Hasleader: true\r\n\r\n").encode()
            self.sock.sendall(head + body)
            self._reader = _Reader(self.sock)
            status, reason, _ = self._reader.head()
            if status != 200:
                raise OSError(0, f"HTTP {status} {reason}: {self._reader.read_all()[:300].decode(errors='replace')}")
        except OSError as e:
            self.close()
            raise ClusterUnavailable(f"cannot open an etcd watch on {ep.url}: {_words(e)}") from None

    def next(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        r = self._reader
        try:
            while True:
                r._dechunk()
                while b"\n" in r.body:
                    line, r.body = r.body.split(b"\n", 1)
                    if line.strip():
                        try:
                            msg = json.loads(line)
                        except ValueError:
                            raise OSError(0, f"undecodable watch message {line[:100]!r}") from None
                        return msg if isinstance(msg, dict) else {}
                if r.eof:
                    raise ConnectionResetError(0, "the stream ended")
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.sock.settimeout(left)
                try:
                    r.more()
                except socket.timeout:
                    return None
        except (OSError, ValueError, AttributeError) as e:
            self.close()
            raise ClusterUnavailable(f"etcd watch on {self.endpoint.url} broke: {_words(e)}") from None

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
