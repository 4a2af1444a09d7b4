"""The ``etcd`` block of a multi-host network's configuration (the CNI config's ``etcd`` object;
the Docker driver builds the same dict from its ``splice.etcd*`` options):

    "etcd": {"endpoints": ["https://10.0.0.1:2379", ...] | "url,url",
             "prefix": "/splice",                        (optional)
             "caFile": "...", "certFile": "...", "keyFile": "...",   (optional; files must exist)
             "timeout": 2.0}                             (optional, seconds per request)

Pure validation: nothing is contacted; every error is ClusterConfigError (code 7) naming the
field."""

from __future__ import annotations

import os
from typing import NamedTuple

from splice.ipam.cluster.errors import ClusterConfigError
from splice.ipam.cluster.etcd import DEFAULT_TIMEOUT, Endpoint, Etcd
from splice.ipam.cluster.subnets import DEFAULT_PREFIX

_FIELDS = {"endpoints", "prefix", "caFile", "certFile", "keyFile", "timeout"}


class EtcdConfig(NamedTuple):
    endpoints: tuple[str, ...]
    prefix: str = DEFAULT_PREFIX
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def client(self, **kw) -> Etcd:
        return Etcd(self.endpoints, ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file,
                    timeout=self.timeout, **kw)


def parse_etcd(raw: object, where: str = "etcd") -> EtcdConfig:
    if not isinstance(raw, dict):
        raise ClusterConfigError(f"{where}: expected an object with endpoints")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ClusterConfigError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(_FIELDS))})")
    eps = raw.get("endpoints")
    if isinstance(eps, str):
        eps = [e.strip() for e in eps.split(",") if e.strip()]
    if not isinstance(eps, list) or not eps or not all(isinstance(e, str) for e in eps):
        raise ClusterConfigError(f"{where}.endpoints: expected a non-empty list of http(s)://HOST:PORT")
    urls: list[str] = []
    for e in eps:
        url = Endpoint.parse(e.strip()).url
        if url not in urls:
            urls.append(url)
    prefix = raw.get("prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str) or not prefix.startswith("/") or "\0" in prefix or len(prefix) > 512:
        raise ClusterConfigError(f"{where}.prefix {prefix!r}: expected a key prefix starting with /")
    files = {}
    for name in ("caFile", "certFile", "keyFile"):
        v = raw.get(name)
        if v is None:
            continue
        if not isinstance(v, str) or not v:
            raise ClusterConfigError(f"{where}.{name}: expected a file path")
        if not os.path.isabs(v):
            raise ClusterConfigError(f"{where}.{name} {v!r}: expected an absolute path")
        if not os.path.isfile(v):
            raise ClusterConfigError(f"{where}.{name} {v!r}: no such file")
        files[name] = v
    if ("certFile" in files) != ("keyFile" in files):
        raise ClusterConfigError(f"{where}: a client certificate needs both certFile and keyFile")
    timeout = raw.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise ClusterConfigError(f"{where}.timeout {timeout!r}: expected seconds, more than 0 and at most 60")
    return EtcdConfig(tuple(urls), prefix.rstrip("/") or "/", files.get("caFile"), files.get("certFile"),
                      files.get("keyFile"), float(timeout))
