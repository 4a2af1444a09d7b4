"""A Docker-plugin client for the tests: HTTP/1.1 over a unix socket (http.client), one
kept-alive connection, as dockerd's plugin client."""

from __future__ import annotations

import json
from typing import Any

from splice.conformance.cnm import UnixConnection as UnixHTTPConnection


class Plugin:
    """``call("NetworkDriver.Join", body) -> (status, json)`` on one kept-alive connection."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.conn = UnixHTTPConnection(path, timeout)

    def raw(self, method: str, data: bytes | None, headers: dict | None = None, verb: str = "POST") -> tuple[int, bytes, Any]:
        hdrs = {"Content-Type": "application/vnd.docker.plugins.v1.2+json",
                "Accept": "application/vnd.docker.plugins.v1.2+json"}
        hdrs.update(headers or {})
        self.conn.request(verb, "/" + method, body=data, headers=hdrs)
        r = self.conn.getresponse()
        body = r.read()
        return r.status, body, r

    def call(self, method: str, body: Any = None) -> tuple[int, Any]:
        status, data, _ = self.raw(method, json.dumps(body).encode())
        return status, json.loads(data) if data else None

    def ok(self, method: str, body: Any = None) -> Any:
        status, answer = self.call(method, body)
        assert status == 200 and not (isinstance(answer, dict) and answer.get("Err")), (method, status, answer)
        return answer

    def close(self) -> None:
        self.conn.close()
