"""The Docker plugin transport: JSON over HTTP/1.1 on a unix socket, stdlib only.

All the protocol plumbing of the CNM front-end lives here; the handlers
(:mod:`splice.plugins.cnm.service`) see ``(path, body) -> (status, dict)``.

* ``http.server`` (``BaseHTTPRequestHandler``) parses requests; nothing here parses HTTP by
  hand. The server is ``socketserver.UnixStreamServer`` with a thread per connection.
  ``protocol_version = "HTTP/1.1"``: connections stay open between calls (dockerd's plugin
  client keeps them in its pool) and every answer carries ``Content-Length``.
* Limits, so that idle or slow clients cannot starve the daemon: a connection may wait
  ``IDLE_TIMEOUT_S`` for its next request, then it is closed (dockerd reconnects, and its
  plugin client retries connection errors for 30 s); once a request's first byte has
  arrived, the request line, headers and body must be in within ``REQUEST_TIMEOUT_S`` (a
  watchdog shuts the socket down, whatever the pace of the bytes); a body is at most
  ``MAX_BODY`` bytes (413) and must come with ``Content-Length`` (411 otherwise); at most
  ``MAX_CONNECTIONS`` connections are open at once (more are closed at accept).
* Errors are ``{"Err": msg}`` (and ``"Error"``, the field the remote IPAM API reads on a
  200) with a 4xx/5xx status; a handler that raises never shows the client a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

log = logging.getLogger("splice.driver")

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_BODY = 4 << 20  # 4 MiB: the largest Docker body (CreateNetwork with options) is kilobytes


def _env(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


# Tunables (environment, read at start; the tests shorten them)
IDLE_TIMEOUT_S = _env("SPLICE_DRIVER_IDLE_TIMEOUT", 60.0)  # between requests on a kept-alive connection
REQUEST_TIMEOUT_S = _env("SPLICE_DRIVER_REQUEST_TIMEOUT", 10.0)  # first byte of a request to its whole body
MAX_CONNECTIONS = int(_env("SPLICE_DRIVER_MAX_CONNECTIONS", 256))
MAX_NESTING = 64  # JSON depth (checked before decoding)

Handler = Callable[[str, Any], "tuple[int, Any]"]


class BadRequest(Exception):
    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg


def _too_deep(data: bytes) -> bool:
    depth = 0
    in_str = esc = False
    for b in data:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif b in (0x5D, 0x7D):
            depth -= 1
    return False


def decode_body(data: bytes) -> Any:
    """The JSON body (an empty body is ``None``); BadRequest(400) when it is not JSON."""
    if not data.strip():
        return None
    if _too_deep(data):
        raise BadRequest(400, f"request body is nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadRequest(400, f"request body is not valid JSON: {e}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "splice-driver"
    sys_version = ""
    default_request_version = "HTTP/1.0"  # answers to malformed requests get a status line too
    server: "PluginServer"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(REQUEST_TIMEOUT_S)

    # the client address of a unix socket is '' (the base class indexes it)
    def address_string(self) -> str:
        return self.server.name

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        pass  # do_POST logs (every call with -v, failures always)

    def handle_one_request(self) -> None:
        # Wait for the next request under the idle timeout, then give it REQUEST_TIMEOUT_S
        # from its first byte to its whole body (the watchdog enforces the total).
        try:
            self.connection.settimeout(IDLE_TIMEOUT_S)
            first = self.rfile.peek(1)  # type: ignore[attr-defined]
        except (OSError, ValueError):
            self.close_connection = True
            return
        if not first:
            self.close_connection = True
            return
        self.connection.settimeout(REQUEST_TIMEOUT_S)
        self.server.watch(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.server.unwatch(self.connection)

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, headers over its limits):
        JSON like every other answer, then the connection is closed."""
        self.close_connection = True
        msg = f"bad request: {message or self.responses.get(code, ('',))[0]}"
        if explain and explain not in msg:
            msg += f" ({explain})"
        try:
            self._reply(code, {"Err": msg, "Error": msg})
        except OSError:
            pass
        log.info("%s: refused a request: %d %s", self.server.name, code, msg)

    def _error(self, status: int, msg: str) -> None:
        self._reply(status, {"Err": msg, "Error": msg})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise BadRequest(411, "chunked request bodies are not accepted: send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise BadRequest(400, f"bad Content-Length {length!r}") from None
        if n > MAX_BODY:
            self.close_connection = True  # the body is not read: the connection cannot go on
            raise BadRequest(413, f"request body of {n} bytes is larger than {MAX_BODY}")
        data = self.rfile.read(n)
        if len(data) != n:
            self.close_connection = True
            raise BadRequest(400, "request body shorter than its Content-Length")
        return data

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        t0 = time.monotonic()
        path = self.path.split("?", 1)[0]
        try:
            try:
                raw = self._read_body()
            finally:
                cut = not self.server.unwatch(self.connection)  # the call itself may take its time
            if cut:  # the watchdog closed it: what was read is no request
                self.close_connection = True
                return
            body = decode_body(raw)
        except BadRequest as e:
            self._error(e.status, e.msg)
            log.info("%s: POST %s -> %d %s", self.server.name, path, e.status, e.msg)
            return
        if not self.server.begin_call():  # the daemon is stopping: not executed, no answer
            self.close_connection = True
            return
        try:
            status, payload = self.server.handler(path, body)
        except Exception as e:  # noqa: BLE001 - the handler answers errors itself; a bug still gets an answer
            log.exception("%s: POST %s failed", self.server.name, path)
            status, payload = 500, {"Err": f"internal error: {e.__class__.__name__}: {e}"}
        finally:
            self.server.end_call()
        self._reply(status, payload)
        if self.server.verbose:
            ms = (time.monotonic() - t0) * 1000
            log.info("%s: POST %s %s -> %d %s (%.1f ms)", self.server.name, path, _short(raw), status,
                     _short(json.dumps(payload).encode()), ms)
        elif status >= 400 or (isinstance(payload, dict) and payload.get("Err")):
            log.warning("%s: POST %s -> %d %s", self.server.name, path, status, payload.get("Err"))

    def _not_post(self) -> None:
        self.close_connection = True
        self._error(405, f"method {self.command} is not allowed: the plugin API is POST /<Interface>.<Method>")

    do_GET = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _not_post  # noqa: N815


def _short(data: bytes, limit: int = 600) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} bytes)"


class PluginServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """One plugin socket (``<name>.sock``): a thread per connection, bounded."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, path: str, name: str, handler: Handler, *, verbose: bool = False) -> None:
        self.name = name
        self.handler = handler
        self.verbose = verbose
        self._open = 0
        self._in_flight = 0
        self._stopping = False
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}
        self._cut: set[socket.socket] = set()  # connections the watchdog shut down
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            super().__init__(path, _RequestHandler, bind_and_activate=True)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    # -- calls in flight (a stopping daemon lets them finish)
    def begin_call(self) -> bool:
        """Count a call in; False once :meth:`stop_calls` ran (the call must not run)."""
        with self._lock:
            if self._stopping:
                return False
            self._in_flight += 1
            return True

    def end_call(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def stop_calls(self) -> None:
        """No call starts from now on (those counted in finish; the client of a refused one
        sees its connection closed without an answer, and retries: nothing ran)."""
        with self._lock:
            self._stopping = True

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # -- connection cap
    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._lock:
            if self._open >= MAX_CONNECTIONS:
                log.warning("%s: %d connections open: closing a new one", self.name, self._open)
                return False
            self._open += 1
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open -= 1
                self._deadlines.pop(request, None)
                self._cut.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection's failure: one line for a client that went away, the traceback
        (in the log, never to a client) for anything else."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.info("%s: connection lost: %s", self.name, exc)
        else:
            log.exception("%s: connection failed", self.name)

    # -- request deadlines
    def watch(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines[conn] = time.monotonic() + REQUEST_TIMEOUT_S

    def unwatch(self, conn: socket.socket) -> bool:
        """Stop the deadline; False when the watchdog had already cut the connection."""
        with self._lock:
            self._deadlines.pop(conn, None)
            return conn not in self._cut

    def reap(self) -> None:
        """Shut down connections whose request is not in by its deadline (watchdog tick)."""
        now = time.monotonic()
        with self._lock:
            late = [c for c, d in self._deadlines.items() if d < now]
            for c in late:
                del self._deadlines[c]
                self._cut.add(c)
        for c in late:
            log.warning("%s: a request was not complete within %.0f s: closing its connection",
                        self.name, REQUEST_TIMEOUT_S)
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
