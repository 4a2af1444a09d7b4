"""The CNI protocol engine shared by every splice executable (cf. Go ``pkg/skel``).

``run_plugin`` reads the environment and stdin, validates everything the spec and libcni
validate, calls one verb of a ``Plugin`` with a ``CmdArgs`` and prints the result (ADD) or
the error JSON on stdout. It never lets a traceback reach stdout.

Import-light on purpose: VERSION must not pull in ipaddress, the drivers or pyroute2, so
``types`` and the error mapping are imported only when a verb needs them.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, TextIO

from splice.plugins.cni import errors as E
from splice.plugins.cni import version as ver
from splice.plugins.cni.errors import CniError

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
# Same regex libcni uses for container ids and network names (pkg/utils/utils.go).
ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
GC_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")  # current name, pre-6a68851 name
# Request limits (code 6 beyond them). A network config is kilobytes (a plugin's options, a
# prevResult, the runtime's capability arguments); 1 MiB leaves room for a thousand port
# mappings and stops a runaway request before it costs memory. Nesting is bounded as well:
# real configs are under 10 levels deep, and Python's json recursion (RecursionError near
# 1000 levels) must never be what stops a request.
MAX_REQUEST_BYTES = 1 << 20
MAX_NESTING = 128

# Environment variables and the commands that require them (STATUS needs nothing but the
# command; CNI_PATH is optional except for GC, where the spec requires it).
_REQUIRED: tuple[tuple[str, frozenset[str]], ...] = (
    ("CNI_CONTAINERID", frozenset({"ADD", "DEL", "CHECK"})),
    ("CNI_NETNS", frozenset({"ADD", "CHECK"})),
    ("CNI_IFNAME", frozenset({"ADD", "DEL", "CHECK"})),
    ("CNI_PATH", frozenset({"GC"})),
)


@dataclass
class CmdArgs:
    command: str  # ADD DEL CHECK STATUS GC VERSION
    container_id: str | None
    netns: str | None
    ifname: str | None
    args: dict[str, str]  # CNI_ARGS, parsed (IgnoreUnknown removed)
    path: list[str]  # CNI_PATH split on ':'
    stdin: bytes  # raw config, forwarded verbatim to delegates
    config: dict  # parsed plugin config (runtimeConfig, args, prevResult included)
    version: str  # the config's cniVersion (answer in this version)
    prev_result: dict | None  # prevResult converted to the canonical (1.1.0-shaped) dict
    env: dict[str, str] = field(default_factory=dict)  # the environment, for delegates
    # The host namespace the plugin works in: None = the calling thread's own (a CNI
    # executable runs in the host). A resident agent sets the caller's namespace here.
    host: Any = None  # splice.libnet.netns.Netns | None

    def host_ns(self) -> Any:
        """The host namespace as a Netns (imports libnet lazily)."""
        if self.host is not None:
            return self.host
        from splice.libnet.netns import Netns

        return Netns.current()


class Plugin(Protocol):
    name: str
    supported_versions: tuple[str, ...]
    cni_args: frozenset[str]

    def add(self, a: CmdArgs) -> dict: ...  # canonical result (1.1.0 shape); skel converts

    def delete(self, a: CmdArgs) -> None: ...

    def check(self, a: CmdArgs) -> None: ...

    def status(self, a: CmdArgs) -> None: ...

    def gc(self, a: CmdArgs) -> None: ...  # a.config holds cni.dev/valid-attachments


# --- validation helpers (pure) ------------------------------------------------------------


def validate_container_id(cid: str) -> None:
    if not ID_RE.match(cid):
        raise CniError(E.INVALID_ENVIRONMENT, f"invalid characters in CNI_CONTAINERID {cid!r}",
                       "must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")


def validate_ifname(name: str) -> None:
    """The kernel's rule (``dev_valid_name``: at most 15 bytes, ...), the one validator
    of :mod:`splice.libnet.names`; a bad CNI_IFNAME is an environment error (code 4)."""
    from splice.libnet.names import ifname_problem

    try:
        name.encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8 (os.environ's surrogateescape)
        raise CniError(E.INVALID_ENVIRONMENT, f"invalid CNI_IFNAME {name!r}: it is not valid UTF-8") from None
    why = ifname_problem(name)
    if why:
        raise CniError(E.INVALID_ENVIRONMENT, f"invalid CNI_IFNAME {name!r}: it {why}")


def validate_network_name(name: object) -> None:
    if name is None or name == "":
        raise CniError(E.INVALID_CONFIG, "missing network name")
    if not isinstance(name, str) or not ID_RE.match(name):
        raise CniError(E.INVALID_CONFIG, f"invalid network name {name!r}",
                       "must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")


def _parse_bool(value: str) -> bool | None:
    v = value.lower()
    if v in ("1", "true"):
        return True
    if v in ("0", "false"):
        return False
    return None


def parse_cni_args(raw: str, known: frozenset[str] | set[str] | tuple[str, ...]) -> dict[str, str]:
    """``K=V;K2=V2`` -> dict, as libcni's ``types.LoadArgs``.

    Every pair must be exactly ``KEY=VALUE`` (empty segments from a stray ``;`` are skipped).
    Keys outside ``known`` are rejected unless ``IgnoreUnknown`` is 1/true (any case); then
    they are kept. ``IgnoreUnknown`` itself is removed. Errors are CniError code 4.
    """
    out: dict[str, str] = {}
    if not raw:
        return out
    for pair in raw.split(";"):
        if pair == "":
            continue
        kv = pair.split("=")
        if len(kv) != 2 or kv[0] == "":
            raise CniError(E.INVALID_ENVIRONMENT, f"CNI_ARGS: invalid pair {pair!r}", "expected KEY=VALUE;KEY=VALUE")
        out[kv[0]] = kv[1]
    ignore = False
    if "IgnoreUnknown" in out:
        flag = _parse_bool(out.pop("IgnoreUnknown"))
        if flag is None:
            raise CniError(E.INVALID_ENVIRONMENT, "CNI_ARGS: IgnoreUnknown must be 1, true, 0 or false")
        ignore = flag
    unknown = sorted(k for k in out if k not in known)
    if unknown and not ignore:
        raise CniError(E.INVALID_ENVIRONMENT, f"CNI_ARGS: unknown args {unknown}",
                       "set IgnoreUnknown=1 to ignore keys this plugin does not know")
    return out


def valid_attachments(config: dict) -> set[tuple[str, str]]:
    """The GC keep-list: union of ``cni.dev/valid-attachments`` and the legacy
    ``cni.dev/attachments`` as ``{(containerID, ifname)}``. ``null`` means empty; neither key
    present is a config error (code 7) so a malformed request never releases everything.
    """
    if not any(k in config for k in GC_KEYS):
        raise CniError(E.INVALID_CONFIG, "GC config has no cni.dev/valid-attachments")
    out: set[tuple[str, str]] = set()
    for key in GC_KEYS:
        items = config.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise CniError(E.INVALID_CONFIG, f"{key} must be a list")
        for i, item in enumerate(items):
            if (not isinstance(item, dict) or not isinstance(item.get("containerID"), str)
                    or not isinstance(item.get("ifname"), str)):
                raise CniError(E.INVALID_CONFIG, f"{key}[{i}] must be {{\"containerID\": str, \"ifname\": str}}")
            out.add((item["containerID"], item["ifname"]))
    return out


def _same_netns_as_self(path: str, host: Any = None) -> bool:
    """Cheap version of Go's ``ns.CheckNetNS``: does ``path`` name the host namespace
    (``host``, a Netns, or else the calling thread's own)?"""
    try:
        if host is not None:
            mine_id = host.inode()
        else:
            mine = os.stat("/proc/thread-self/ns/net")
            mine_id = (mine.st_dev, mine.st_ino)
        theirs = os.stat(path)
    except OSError:
        return False  # a missing namespace is the verb's business (DEL must succeed)
    return mine_id == (theirs.st_dev, theirs.st_ino)


# --- the dispatcher -----------------------------------------------------------------------


def _read_stdin(stdin) -> bytes:
    """stdin, at most MAX_REQUEST_BYTES (a bigger request is code 6, without reading it all)."""
    chunks: list = []
    total = 0
    try:
        while total <= MAX_REQUEST_BYTES:
            chunk = stdin.read(MAX_REQUEST_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except (OSError, ValueError) as exc:
        raise CniError(E.IO_FAILURE, "error reading from stdin", str(exc)) from None
    if total > MAX_REQUEST_BYTES:
        raise CniError(E.DECODE_FAILURE, f"request too large: the network config exceeds {MAX_REQUEST_BYTES} bytes",
                       "a CNI network config is kilobytes; splice reads at most 1 MiB from stdin")
    data = (chunks[0][:0] if chunks else b"").join(chunks)
    if isinstance(data, str):
        data = data.encode(errors="surrogateescape")  # undecodable bytes fail decoding (code 6)
    return data


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
for _b in b"[{":
    _STEP[_b] = 1
for _b in b"]}":
    _STEP[_b] = -1


def json_depth_exceeds(raw: bytes, limit: int = MAX_NESTING) -> bool:
    """Does the JSON text ``raw`` nest arrays/objects deeper than ``limit``? Checked before
    decoding; a config with at most ``limit`` opening brackets (every real one) costs two
    ``count`` calls."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    from itertools import accumulate

    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def decode_config(raw: bytes, what: str = "network config") -> object:
    """Strict ``json.loads`` with the nesting bound: CniError code 6 for anything
    undecodable, for ``NaN``/``Infinity`` (not JSON) and for a string holding an unpaired
    surrogate escape (``"\\ud800"``: no valid Unicode, so no interface name, path or
    nft expression can carry it)."""
    if json_depth_exceeds(raw):
        raise CniError(E.DECODE_FAILURE, f"error unmarshalling {what}: nested deeper than {MAX_NESTING} levels")

    def no_constant(name: str) -> object:
        raise CniError(E.DECODE_FAILURE, f"error unmarshalling {what}: {name} is not valid JSON")

    try:
        obj = json.loads(raw, parse_constant=no_constant)
    except RecursionError:  # a safety net: the depth check above comes first
        raise CniError(E.DECODE_FAILURE, f"error unmarshalling {what}: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(E.DECODE_FAILURE, f"error unmarshalling {what}", str(exc)) from None
    if _SURROGATE_ESCAPE.search(raw):  # rare: only then look at every string
        try:
            json.dumps(obj, ensure_ascii=False).encode()
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start:exc.end]
            raise CniError(E.DECODE_FAILURE, f"error unmarshalling {what}: a string holds an unpaired surrogate "
                           f"({bad!r}), which is not valid Unicode") from None
    return obj


def _json_type(value: object) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def validate_conventions(config: dict) -> None:
    """The well-known objects every plugin reads (CNI CONVENTIONS): ``runtimeConfig``,
    ``args`` and ``args.cni`` are JSON objects (or null). Code 7 otherwise: a wrong-typed
    one would silently drop the runtime's capability arguments (ips, mac, portMappings)."""
    for key in ("runtimeConfig", "args"):
        value = config.get(key)
        if value is not None and not isinstance(value, dict):
            raise CniError(E.INVALID_CONFIG, f"invalid network config: {key} must be an object, got {_json_type(value)}",
                           f"{key}: {_fmt(value)}")
    cni = (config.get("args") or {}).get("cni")
    if cni is not None and not isinstance(cni, dict):
        raise CniError(E.INVALID_CONFIG, f"invalid network config: args.cni must be an object, got {_json_type(cni)}",
                       f"args.cni: {_fmt(cni)}")


def _fmt(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _emit(stdout: TextIO, obj: dict) -> None:
    stdout.write(json.dumps(obj, indent=4) + "\n")
    stdout.flush()


def _build_args(plugin: Plugin, cmd: str, env: Mapping[str, str], stdin, seen: dict, host: Any = None) -> CmdArgs:
    """Validate env and stdin into a CmdArgs.

    stdin is read first but its errors are raised after the env checks (env errors first,
    as libcni); ``seen["version"]`` is set as soon as the config's cniVersion is known to be
    supported, so every later error answers in that version.
    """
    stdin_error: CniError | None = None
    raw = b""
    config: object = None
    try:
        raw = _read_stdin(stdin)
        config = decode_config(raw)
    except CniError as exc:
        stdin_error = exc
    if stdin_error is None and not isinstance(config, dict):
        stdin_error = CniError(E.DECODE_FAILURE, "error unmarshalling network config",
                               f"expected a JSON object, got {type(config).__name__}")
    supported = tuple(plugin.supported_versions)
    if isinstance(config, dict) and config.get("cniVersion") in supported:
        seen["version"] = config["cniVersion"]  # answer errors in the config's version

    missing = [name for name, needed_by in _REQUIRED if cmd in needed_by and not env.get(name)]
    if missing:
        raise CniError(E.INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
    cid = env.get("CNI_CONTAINERID") or None
    ifname = env.get("CNI_IFNAME") or None
    netns = env.get("CNI_NETNS") or None
    if cid is not None:
        validate_container_id(cid)
    if ifname is not None:
        validate_ifname(ifname)
    cni_args = parse_cni_args(env.get("CNI_ARGS", ""), plugin.cni_args)
    path = [p for p in env.get("CNI_PATH", "").split(":") if p]

    if stdin_error is not None:
        raise stdin_error
    assert isinstance(config, dict)
    # Order as libcni's skel: network name, then the version reconciliation.
    validate_network_name(config.get("name"))
    if not isinstance(config.get("type"), str) or not config["type"]:
        raise CniError(E.INVALID_CONFIG, "missing plugin type")
    version = config.get("cniVersion")
    if version in (None, ""):
        version = ver.DEFAULT_CONFIG_VERSION
    if not isinstance(version, str):
        raise CniError(E.DECODE_FAILURE, f"cniVersion must be a string, got {version!r}")
    if version not in supported:
        raise CniError(E.INCOMPATIBLE_VERSION,
                       f"incompatible CNI versions: config is {version!r}, plugin supports {list(supported)}")
    seen["version"] = version
    gates = {"CHECK": ("0.4.0", ver.has_check), "STATUS": ("1.1.0", ver.has_status), "GC": ("1.1.0", ver.has_gc)}
    if cmd in gates and not gates[cmd][1](version):
        raise CniError(E.INCOMPATIBLE_VERSION, f"config version does not allow {cmd}",
                       f"config is {version!r}, {cmd} needs cniVersion >= {gates[cmd][0]}")

    validate_conventions(config)
    prev = None
    if config.get("prevResult") is not None:
        from splice.plugins.cni import types

        raw_prev = config["prevResult"]
        if not isinstance(raw_prev, dict):
            raise CniError(E.DECODE_FAILURE, "invalid prevResult: expected a JSON object")
        try:
            prev = types.parse_result(raw_prev, version)
        except CniError as exc:
            raise CniError(exc.code, f"prevResult: {exc.msg}", exc.details) from None
    if cmd == "GC":
        valid_attachments(config)  # reject a malformed keep-list before the plugin runs

    if (netns and cmd in ("ADD", "CHECK", "DEL")
            and str(env.get("CNI_NETNS_OVERRIDE", "")).lower() not in ("1", "true")
            and _same_netns_as_self(netns, host)):
        raise CniError(E.INVALID_NETNS, "plugin's netns and netns from CNI_NETNS should not be the same")

    return CmdArgs(command=cmd, container_id=cid, netns=netns, ifname=ifname, args=cni_args, path=path,
                   stdin=raw, config=config, version=version, prev_result=prev, env=dict(env), host=host)


def run_plugin(plugin: Plugin, env: Mapping[str, str] = os.environ, stdin=None, stdout: TextIO | None = None,
               host: Any = None) -> int:
    """Run one CNI command for ``plugin``; returns the process exit code (0 or 1).

    ``stdin`` is a binary (or text) stream, default ``sys.stdin.buffer``; ``stdout`` a text
    stream, default ``sys.stdout``. Errors go to stdout as ``{"cniVersion","code","msg",
    "details"?}`` (as libcni's skel) plus one short line on stderr; ``SPLICE_DEBUG=1`` in
    ``env`` also prints the traceback to stderr.

    ``host`` (a :class:`splice.libnet.netns.Netns`) is the host namespace the call works
    in, ``CmdArgs.host``; None means the calling thread's own (a CNI executable). The
    resident agent passes the caller's namespace. The "CNI_NETNS is the host namespace"
    check compares with it.
    """
    if stdin is None:
        stdin = sys.stdin.buffer
    if stdout is None:
        stdout = sys.stdout
    cmd = env.get("CNI_COMMAND", "")
    if cmd == "VERSION":
        return ver.run_version(tuple(plugin.supported_versions), stdin, stdout)

    seen: dict = {}
    try:
        if not cmd:
            raise CniError(E.INVALID_ENVIRONMENT, "required env variables [CNI_COMMAND] missing")
        if cmd not in COMMANDS:
            raise CniError(E.INVALID_ENVIRONMENT, f"unknown CNI_COMMAND: {cmd!r}",
                           f"expected one of {', '.join(COMMANDS)}")
        a = _build_args(plugin, cmd, env, stdin, seen, host)
        if cmd == "ADD":
            from splice.plugins.cni import types

            result = plugin.add(a)
            if not isinstance(result, dict):
                raise CniError(E.INTERNAL, f"plugin returned {type(result).__name__} instead of a result")
            out = types.convert(result, a.version)
        elif cmd == "STATUS":
            _status(plugin, a)
            out = None
        else:
            {"DEL": plugin.delete, "CHECK": plugin.check, "GC": plugin.gc}[cmd](a)
            out = None
    except (Exception, KeyboardInterrupt) as exc:
        return _fail(plugin, cmd, env, seen.get("version", ver.CURRENT), exc, stdout)
    if out is not None:
        try:
            _emit(stdout, out)
        except OSError as exc:
            print(f"{plugin.name}: {cmd}: cannot write result: {exc}", file=sys.stderr)
            return 1
    return 0


def _status(plugin: Plugin, a: CmdArgs) -> None:
    """STATUS: a bad request keeps its own code (1-7); anything else that keeps the plugin
    from serving ADD (store unusable, pool exhausted, kernel refusing) is code 50."""
    try:
        plugin.status(a)
    except Exception as exc:
        err = E.from_exception(exc)
        if err.code <= E.INVALID_CONFIG or err.code in (E.NOT_AVAILABLE, E.NOT_AVAILABLE_LIMITED):
            raise err from exc
        raise CniError(E.NOT_AVAILABLE, err.msg, err.details) from exc


def _fail(plugin: Plugin, cmd: str, env: Mapping[str, str], version: str, exc: BaseException,
          stdout: TextIO) -> int:
    try:
        err = E.from_exception(exc) if isinstance(exc, Exception) else CniError(E.INTERNAL, "interrupted")
    except Exception as mapping_exc:  # never let the error path itself raise
        err = CniError(E.INTERNAL, f"internal error: {exc.__class__.__name__}: {exc}",
                       f"error mapping failed: {mapping_exc!r}")
    try:
        print(f"{plugin.name}: {cmd or '?'}: error {err.code}: {err.msg}", file=sys.stderr)
        if str(env.get("SPLICE_DEBUG", "")).lower() in ("1", "true", "yes"):
            import traceback

            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    except Exception:
        pass
    try:
        _emit(stdout, err.to_json(version))
    except Exception:
        pass
    return 1
