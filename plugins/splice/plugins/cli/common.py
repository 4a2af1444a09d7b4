"""What every operator command shares: where things are (config dir, result cache, CNI
path), finding a network's conflist, and the libcni result cache.

Locations (flag, then environment, then default):

* ``--config-dir`` / ``SPLICE_CONFIG_DIR`` / ``/etc/cni/net.d``: the conflists, as
  libcni's ``ConfFiles`` reads them (``*.conflist``, ``*.conf``, ``*.json``).
* ``--cache-dir`` / ``SPLICE_CNI_CACHE_DIR`` / ``/var/lib/cni``: libcni's ``CacheDir``; the
  results live in ``<cache dir>/results/<network>-<container id>-<ifname>``, written in
  libcni's ``cniCacheV1`` format (``config`` base64, ``cniArgs`` as pairs,
  ``capabilityArgs``, ``netns``, ``result``), so a runtime's later DEL/CHECK/GC of an
  attachment made here works, and the other way round.
* ``--cni-path`` / ``CNI_PATH`` / ``/opt/cni/bin`` + the directory of this splice's
  executables (the venv's bin).
"""

from __future__ import annotations

import argparse
import os
import sys

from splice.plugins.cli.output import CliError, UsageError

DEFAULT_CONFIG_DIR = "/etc/cni/net.d"
DEFAULT_CACHE_DIR = "/var/lib/cni"
DEFAULT_CNI_BIN = "/opt/cni/bin"
CONF_EXTENSIONS = (".conflist", ".conf", ".json")
KINDS = ("bridge", "macvlan", "ipvlan")
CACHE_KIND = "cniCacheV1"


def add_location_args(p: argparse.ArgumentParser, *, cache: bool = True, cni_path: bool = True) -> None:
    """The location flags; every operator command takes all three (the same flags can be
    passed to every command; those a command does not use are hidden from its help)."""
    p.add_argument("--config-dir", default=None, metavar="DIR",
                   help=f"where the network conflists are (default $SPLICE_CONFIG_DIR or {DEFAULT_CONFIG_DIR})")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help=f"libcni's cache directory, results in DIR/results (default $SPLICE_CNI_CACHE_DIR or "
                        f"{DEFAULT_CACHE_DIR})" if cache else argparse.SUPPRESS)
    p.add_argument("--cni-path", default=None, metavar="DIR[:DIR...]",
                   help=f"where the plugin executables are (default $CNI_PATH, else {DEFAULT_CNI_BIN} and "
                        f"the directory of this splice's executables)" if cni_path else argparse.SUPPRESS)


def config_dir(args) -> str:
    return getattr(args, "config_dir", None) or os.environ.get("SPLICE_CONFIG_DIR") or DEFAULT_CONFIG_DIR


def cache_dir(args) -> str:
    return getattr(args, "cache_dir", None) or os.environ.get("SPLICE_CNI_CACHE_DIR") or DEFAULT_CACHE_DIR


def cni_path(args) -> list[str]:
    raw = getattr(args, "cni_path", None) or os.environ.get("CNI_PATH")
    if raw:
        return [d for d in raw.split(":") if d]
    own = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else None
    out = [DEFAULT_CNI_BIN]
    for d in (own, os.path.dirname(sys.executable)):
        if d and d not in out and os.path.exists(os.path.join(d, "splice-ipam")):
            out.append(d)
    return out


def location_flags(args) -> list[str]:
    """The location flags of this invocation that differ from the defaults, for repair
    commands printed to be copied (they must act on the same files)."""
    out: list[str] = []
    for flag, attr in (("--config-dir", "config_dir"), ("--cache-dir", "cache_dir"), ("--cni-path", "cni_path")):
        v = getattr(args, attr, None)
        if v:
            out += [flag, v]
    return out


def quote(argv: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


# -- conflists ------------------------------------------------------------------------
class Network:
    """One network: its conflist (as a dict) and the file it came from."""

    __slots__ = ("name", "conf", "path")

    def __init__(self, name: str, conf: dict, path: str) -> None:
        self.name, self.conf, self.path = name, conf, path

    @property
    def plugins(self) -> list[dict]:
        return self.conf.get("plugins") or []

    @property
    def main(self) -> dict:
        return self.plugins[0] if self.plugins else {}

    @property
    def kind(self) -> str | None:
        """The framework driver kind of the first plugin (``splice-bridge`` -> bridge)."""
        t = self.main.get("type") or ""
        k = t[len("splice-"):] if t.startswith("splice-") else None
        return k if k in KINDS else None

    @property
    def driver_label(self) -> str:
        return self.kind or str(self.main.get("type") or "?")

    @property
    def ipam(self) -> dict | None:
        ipam = self.main.get("ipam")
        return ipam if isinstance(ipam, dict) else None

    @property
    def ipam_is_splice(self) -> bool:
        return bool(self.ipam) and self.ipam.get("type") == "splice-ipam"

    def subnets(self) -> list[tuple[str, str]]:
        """(subnet, gateway) of each range (as written; gateway '' when not given)."""
        ipam = self.ipam or {}
        out = []
        if ipam.get("subnet"):
            out.append((str(ipam["subnet"]), str(ipam.get("gateway") or "")))
        for rs in ipam.get("ranges") or []:
            if isinstance(rs, list):
                for r in rs:
                    if isinstance(r, dict) and r.get("subnet"):
                        out.append((str(r["subnet"]), str(r.get("gateway") or "")))
        return out

    def store_dir(self) -> str:
        """``<dataDir>/<name>`` of a splice-ipam network, without parsing the ranges (and
        without importing the config module: ``splice ipam ls`` stays lean)."""
        if not self.ipam_is_splice:
            raise CliError(f"network {self.name!r} ({self.path}) does not use splice-ipam: its addresses are not "
                           f"in a splice store")
        d = self.ipam.get("dataDir") or "/var/lib/cni/splice"  # splice.ipam.config.DEFAULT_DATA_DIR
        if not isinstance(d, str) or "\0" in d or "/" in self.name or self.name in (".", ".."):
            return self.ipam_config().store_dir  # the parser's words for what is wrong
        return os.path.join(d, self.name)

    def ipam_config(self):
        """The parsed splice-ipam config (its store location), or CliError naming the file."""
        from splice.ipam.config import parse_ipam_config, store_location
        from splice.ipam.errors import IpamConfigError

        if not self.ipam_is_splice:
            raise CliError(f"network {self.name!r} ({self.path}) does not use splice-ipam: its addresses are not "
                           f"in a splice store")
        try:
            return parse_ipam_config(self.ipam, self.name)
        except IpamConfigError:
            try:
                return store_location(self.ipam, self.name)
            except IpamConfigError as e:
                raise CliError(f"network {self.name!r}: the ipam config in {self.path} is invalid: {e}") from None


def _read_conf(path: str) -> dict | None:
    import json

    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if "plugins" not in data and "type" in data:  # a single-plugin .conf, as libcni wraps it
        data = {"cniVersion": data.get("cniVersion"), "name": data.get("name"), "plugins": [data]}
    if not isinstance(data.get("plugins"), list) or not isinstance(data.get("name"), str):
        return None
    return data


def conf_files(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CliError(f"cannot read the config directory {directory}: {e.strerror}") from None
    return [os.path.join(directory, n) for n in names if n.endswith(CONF_EXTENSIONS) and not n.startswith(".")]


def networks(directory: str) -> list[Network]:
    """Every network of the directory, in libcni's order (file name); the first file of a
    name wins, as libcni's LoadConfList."""
    seen: dict[str, Network] = {}
    for path in conf_files(directory):
        conf = _read_conf(path)
        if conf is not None and conf["name"] not in seen:
            seen[conf["name"]] = Network(conf["name"], conf, path)
    return list(seen.values())


def find_network(args, name: str) -> Network:
    d = config_dir(args)
    for net in networks(d):
        if net.name == name:
            return net
    known = ", ".join(n.name for n in networks(d)) or "none"
    raise CliError(f"no network {name!r} in {d} (networks there: {known}); create it with `splice net create "
                   f"{name} --driver bridge --subnet CIDR`, or pass --config-dir")


# -- the result cache --------------------------------------------------------------------
def results_dir(args) -> str:
    return os.path.join(cache_dir(args), "results")


def cache_file(args, network: str, cid: str, ifname: str) -> str:
    return os.path.join(results_dir(args), f"{network}-{cid}-{ifname}")


def read_cached(path: str) -> dict | None:
    import json

    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cached_attachments(args, network: str, *, full: bool = True) -> dict[tuple[str, str], dict]:
    """(container id, ifname) -> the cache record of every cached attachment of ``network``
    (libcni's GetCachedAttachments, filtered by network name)."""
    d = results_dir(args)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise CliError(f"cannot read the result cache {d}: {e.strerror}") from None
    prefix = network + "-"
    out: dict[tuple[str, str], dict] = {}
    for n in names:
        if not n.startswith(prefix):
            continue
        rec = read_cached(os.path.join(d, n))
        if not rec or rec.get("networkName") != network:
            continue
        cid, ifname = rec.get("containerId"), rec.get("ifName")
        if isinstance(cid, str) and isinstance(ifname, str) and cid and ifname:
            out[(cid, ifname)] = rec
    return out


def count_cached(directory: str, names: list[str]) -> dict[str, int]:
    """Cached attachments per network name, from the file names only (no file is read):
    a file counts for the longest network name it starts with."""
    counts = {n: 0 for n in names}
    try:
        files = os.listdir(directory)
    except OSError:
        return counts
    by_len = sorted(names, key=len, reverse=True)
    for f in files:
        for n in by_len:
            if f.startswith(n + "-"):
                counts[n] += 1
                break
    return counts


def write_cached(args, net: Network, cid: str, ifname: str, netns: str | None, cni_args: list[list[str]],
                 cap_args: dict, result: dict | None) -> str:
    """The libcni cniCacheV1 record, written atomically (tmp + rename), 0600 in a 0700 dir."""
    import base64
    import json

    d = results_dir(args)
    os.makedirs(d, mode=0o700, exist_ok=True)
    with open(net.path, "rb") as f:
        raw = f.read()
    rec: dict = {"kind": CACHE_KIND, "containerId": cid, "config": base64.b64encode(raw).decode(),
                 "ifName": ifname, "networkName": net.name}
    if netns:
        rec["netns"] = netns
    if cni_args:
        rec["cniArgs"] = cni_args
    if cap_args:
        rec["capabilityArgs"] = cap_args
    if result is not None:
        rec["result"] = result
    path = cache_file(args, net.name, cid, ifname)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(rec).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def cni_args_string(pairs: list[list[str]] | None) -> str | None:
    """CNI_ARGS from libcni's ``[[k, v], ...]`` (or an older string)."""
    if not pairs:
        return None
    if isinstance(pairs, str):
        return pairs
    return ";".join(f"{k}={v}" for k, v in pairs)


def netns_path(value: str) -> str:
    """``--netns``: a name under /run/netns, or a path."""
    if not value:
        raise UsageError("--netns must not be empty")
    return value if "/" in value else os.path.join("/run/netns", value)


def default_container_id(netns: str) -> str:
    """A container id derived from the namespace path: the same ``--netns`` gives the same
    id, so ``splice detach`` finds what ``splice attach`` made without ``--container-id``."""
    from splice.plugins.owners import sha256_hex

    return "splice-" + sha256_hex(netns)[:16]
