"""A small CNI runtime that executes a network configuration list the way libcni does.

ADD runs the plugins in order, each with the previous plugin's result as ``prevResult``;
DEL runs them in reverse with the final ADD result; CHECK runs forward with it; GC and
STATUS (config >= 1.1.0) run forward and GC continues past errors. ``runtimeConfig``
carries only the capability arguments a plugin declares, ``capabilities`` is never
passed on, and the final ADD result is cached like libcni's
``/var/lib/cni/results/<net>-<containerID>-<ifname>``.

Standard library only: the conformance kit runs *any* plugin by path.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

GC_KEY = "cni.dev/valid-attachments"
GC_KEY_LEGACY = "cni.dev/attachments"
ALL_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
# Commands whose stdout libcni parses on success (the rest: ExecPluginWithoutResult).
_RESULT_COMMANDS = ("ADD", "VERSION")


def _vt(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except (ValueError, AttributeError):
        return (0,)


def version_tuple(v: str) -> tuple[int, ...]:
    """"1.0.0" -> (1, 0, 0); anything unparsable sorts first."""
    return _vt(v)


def parse_error(stdout: str, stderr: str = "") -> dict | None:
    """The CNI error object a failed plugin printed: stdout first (libcni), then stderr."""
    for text in (stdout, stderr):
        try:
            cand = json.loads(text)
        except ValueError:
            continue
        if isinstance(cand, dict) and "code" in cand:
            return cand
    return None


class CniCallError(Exception):
    """A plugin invocation failed; carries the plugin's CNI error when it printed one."""

    def __init__(self, plugin: str, command: str, rc: int, error: dict | None, stdout: str, stderr: str):
        self.plugin, self.command, self.rc = plugin, command, rc
        self.error = error or {}
        self.stdout, self.stderr = stdout, stderr
        self.code = self.error.get("code")
        msg = self.error.get("msg") or stderr.strip() or stdout.strip() or f"exit status {rc}"
        super().__init__(f"{plugin} {command} failed (code {self.code}): {msg}")


class CniOutputError(CniCallError):
    """A plugin exited 0 but its stdout is not the JSON document libcni expects."""


@dataclass
class Call:
    """One finished plugin execution, decoded (``Runtime.call``)."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def json(self):
        """stdout as JSON (ValueError if it is not exactly one JSON document); None if empty."""
        return json.loads(self.stdout) if self.stdout.strip() else None

    @property
    def error(self) -> dict | None:
        return parse_error(self.stdout, self.stderr) if self.rc != 0 else None


@dataclass
class Invocation:
    """One plugin execution, for timing and inspection."""

    plugin: str
    command: str
    seconds: float
    rc: int


@dataclass
class Runtime:
    """Executes plugins from ``cni_path``; ``prefix`` wraps every exec (e.g. nsenter into a host ns)."""

    cni_path: Sequence[str]
    cache_dir: str | None = None
    prefix: Sequence[str] = ()
    timeout: float = 120.0
    extra_env: dict[str, str] = field(default_factory=dict)
    log: list[Invocation] = field(default_factory=list)
    _versions: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- plumbing -------------------------------------------------------------
    def find(self, plugin_type: str) -> str:
        for d in self.cni_path:
            cand = os.path.join(d, plugin_type)
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
        raise FileNotFoundError(f"plugin {plugin_type!r} not found in {list(self.cni_path)}")

    def run_raw(
        self,
        plugin_type: str,
        command: str | None,
        conf: dict | bytes | str,
        *,
        container_id: str | None = None,
        netns: str | None = None,
        ifname: str | None = None,
        cni_args: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Execute one plugin and return the finished process (bytes stdout/stderr)."""
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        for key, value in (("CNI_COMMAND", command), ("CNI_CONTAINERID", container_id), ("CNI_NETNS", netns),
                           ("CNI_IFNAME", ifname), ("CNI_ARGS", cni_args)):
            if value is not None:
                env[key] = value
        env["CNI_PATH"] = ":".join(self.cni_path)
        env.update(self.extra_env)
        env.update(extra_env or {})
        if isinstance(conf, dict):
            data = json.dumps(conf).encode()
        elif isinstance(conf, str):
            data = conf.encode()
        else:
            data = conf
        exe = plugin_type if "/" in plugin_type else self.find(plugin_type)
        t0 = time.perf_counter()
        p = subprocess.run([*self.prefix, exe], input=data, capture_output=True, env=env, timeout=self.timeout)
        with self._lock:
            self.log.append(Invocation(plugin_type, command or "", time.perf_counter() - t0, p.returncode))
        return p

    def call(self, plugin_type: str, command: str | None, conf: dict | bytes | str, **kw) -> Call:
        """``run_raw`` decoded: rc, stdout and stderr as text (never raises on plugin failure)."""
        p = self.run_raw(plugin_type, command, conf, **kw)
        return Call(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))

    def exec_plugin(
        self,
        plugin_type: str,
        command: str,
        conf: dict | bytes,
        *,
        container_id: str | None = None,
        netns: str | None = None,
        ifname: str | None = None,
        cni_args: str | None = None,
    ) -> dict | None:
        """Execute one plugin like libcni: the parsed result (ADD, VERSION), or CniCallError.

        As libcni, stdout of a successful DEL/CHECK/STATUS/GC is not parsed (None).
        """
        p = self.run_raw(plugin_type, command, conf, container_id=container_id, netns=netns, ifname=ifname,
                         cni_args=cni_args)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        if p.returncode != 0:
            raise CniCallError(plugin_type, command, p.returncode, parse_error(out, err), out, err)
        if command not in _RESULT_COMMANDS or not out.strip():
            return None
        try:
            result = json.loads(out)
        except ValueError as exc:
            raise CniOutputError(plugin_type, command, 0, {"msg": f"stdout is not one JSON document: {exc}"},
                                 out, err) from None
        if not isinstance(result, dict):
            raise CniOutputError(plugin_type, command, 0, {"msg": "stdout is not a JSON object"}, out, err)
        return result

    # -- config derivation (SPEC "Deriving request configuration") ------------
    @staticmethod
    def plugin_conf(
        netlist: dict, plugin: dict, *, prev_result: dict | None = None, cap_args: dict | None = None
    ) -> dict:
        conf = copy.deepcopy(plugin)
        caps = conf.pop("capabilities", None) or {}
        conf["cniVersion"] = netlist.get("cniVersion", "0.1.0")
        conf["name"] = netlist.get("name")
        rc = {k: v for k, v in (cap_args or {}).items() if caps.get(k)}
        if rc:
            conf["runtimeConfig"] = rc
        else:
            conf.pop("runtimeConfig", None)
        if prev_result is not None:
            conf["prevResult"] = prev_result
        return conf

    def _cache_file(self, netlist: dict, container_id: str, ifname: str) -> Path | None:
        if not self.cache_dir:
            return None
        return Path(self.cache_dir) / "results" / f"{netlist.get('name')}-{container_id}-{ifname}"

    def cached_result(self, netlist: dict, container_id: str, ifname: str) -> dict | None:
        f = self._cache_file(netlist, container_id, ifname)
        if f is None or not f.exists():
            return None
        return json.loads(f.read_text()).get("result")

    # -- verbs ----------------------------------------------------------------
    def add(
        self, netlist: dict, container_id: str, netns: str, ifname: str = "eth0",
        cap_args: dict | None = None, cni_args: str | None = None,
    ) -> dict | None:
        prev = None
        for plugin in netlist["plugins"]:
            conf = self.plugin_conf(netlist, plugin, prev_result=prev, cap_args=cap_args)
            prev = self.exec_plugin(
                plugin["type"], "ADD", conf, container_id=container_id, netns=netns, ifname=ifname, cni_args=cni_args
            )
        f = self._cache_file(netlist, container_id, ifname)
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps({"kind": "cniCacheV1", "containerId": container_id, "ifName": ifname,
                                      "networkName": netlist.get("name"), "result": prev, "capArgs": cap_args or {},
                                      "cniArgs": cni_args}))
        return prev

    def delete(
        self, netlist: dict, container_id: str, netns: str | None, ifname: str = "eth0",
        cap_args: dict | None = None, cni_args: str | None = None, prev_result: dict | None = None,
        use_cache: bool = True,
    ) -> None:
        if prev_result is None and use_cache and _vt(netlist.get("cniVersion", "0.1.0")) >= (0, 4, 0):
            prev_result = self.cached_result(netlist, container_id, ifname)
        if _vt(netlist.get("cniVersion", "0.1.0")) < (0, 4, 0):
            prev_result = None  # prevResult on DEL arrived with 0.4.0
        for plugin in reversed(netlist["plugins"]):
            conf = self.plugin_conf(netlist, plugin, prev_result=prev_result, cap_args=cap_args)
            self.exec_plugin(
                plugin["type"], "DEL", conf, container_id=container_id, netns=netns, ifname=ifname, cni_args=cni_args
            )
        f = self._cache_file(netlist, container_id, ifname)
        if f is not None and f.exists():
            f.unlink()

    def check(
        self, netlist: dict, container_id: str, netns: str, ifname: str = "eth0",
        cap_args: dict | None = None, cni_args: str | None = None, prev_result: dict | None = None,
    ) -> None:
        if netlist.get("disableCheck") is True:
            return
        if prev_result is None:
            prev_result = self.cached_result(netlist, container_id, ifname)
        for plugin in netlist["plugins"]:
            conf = self.plugin_conf(netlist, plugin, prev_result=prev_result, cap_args=cap_args)
            self.exec_plugin(
                plugin["type"], "CHECK", conf, container_id=container_id, netns=netns, ifname=ifname, cni_args=cni_args
            )

    def status(self, netlist: dict) -> None:
        for plugin in netlist["plugins"]:
            self.exec_plugin(plugin["type"], "STATUS", self.plugin_conf(netlist, plugin))

    def gc(self, netlist: dict, valid: Sequence[tuple[str, str]], legacy_key: bool = True) -> list[CniCallError]:
        """GC forward through the list; continues past failures and returns them."""
        attachments = [{"containerID": c, "ifname": i} for c, i in valid]
        errors: list[CniCallError] = []
        if netlist.get("disableGC") is True:
            return errors
        for plugin in netlist["plugins"]:
            conf = self.plugin_conf(netlist, plugin)
            conf[GC_KEY] = attachments
            if legacy_key:
                conf[GC_KEY_LEGACY] = attachments
            try:
                self.exec_plugin(plugin["type"], "GC", conf)
            except CniCallError as e:
                errors.append(e)
        return errors

    def version(self, plugin_type: str, cni_version: str = "1.0.0") -> dict:
        out = self.exec_plugin(plugin_type, "VERSION", {"cniVersion": cni_version})
        return out or {}

    # -- libcni conveniences ----------------------------------------------------
    def supported_versions(self, plugin_type: str) -> tuple[str, ...]:
        """``supportedVersions`` from the plugin's VERSION answer (cached per type)."""
        if plugin_type not in self._versions:
            info = self.version(plugin_type, ALL_VERSIONS[-1])
            sv = info.get("supportedVersions")
            self._versions[plugin_type] = tuple(v for v in sv if isinstance(v, str)) if isinstance(sv, list) else ()
        return self._versions[plugin_type]

    def negotiate(self, netlist: dict) -> dict:
        """A copy of ``netlist`` whose ``cniVersion`` is the highest of ``cniVersion`` and
        ``cniVersions`` that every plugin of the list supports (SPEC 1.1 "cniVersions"; libcni
        intersects with VERSION). Unchanged if nothing matches (the plugins then answer code 1)."""
        wanted = {netlist.get("cniVersion")} | set(netlist.get("cniVersions") or [])
        wanted.discard(None)
        for plugin in netlist.get("plugins", []):
            types = [plugin["type"]]
            ipam = plugin.get("ipam")
            if isinstance(ipam, dict) and ipam.get("type"):
                types.append(ipam["type"])
            for t in types:
                try:
                    wanted &= set(self.supported_versions(t))
                except (CniCallError, FileNotFoundError):
                    pass
        out = copy.deepcopy(netlist)
        if wanted:
            out["cniVersion"] = max(wanted, key=_vt)
        return out

    def cached_attachments(self, netlist: dict) -> list[tuple[str, str]]:
        """(containerID, ifname) of every cached ADD result of this network."""
        if not self.cache_dir:
            return []
        out = []
        for f in sorted((Path(self.cache_dir) / "results").glob(f"{netlist.get('name')}-*")):
            try:
                data = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if data.get("networkName") == netlist.get("name"):
                out.append((data.get("containerId"), data.get("ifName")))
        return out

    def gc_network(self, netlist: dict, valid: Sequence[tuple[str, str]]) -> list[CniCallError]:
        """libcni GCNetworkList: DEL every cached attachment not in ``valid`` (errors collected),
        then GC with the keep-list. Nothing for configs below 1.1.0 or with ``disableGC``."""
        if netlist.get("disableGC") is True or _vt(netlist.get("cniVersion", "0.1.0")) < (1, 1, 0):
            return []
        errors: list[CniCallError] = []
        keep = set(map(tuple, valid))
        for cid, ifname in self.cached_attachments(netlist):
            if (cid, ifname) in keep:
                continue
            cached = self._cache_file(netlist, cid, ifname)
            cni_args = None
            if cached is not None and cached.exists():
                cni_args = json.loads(cached.read_text()).get("cniArgs")
            try:
                self.delete(netlist, cid, None, ifname, cni_args=cni_args)
            except CniCallError as e:
                errors.append(e)
        return errors + self.gc(netlist, list(valid))


def load_conflist(path: str | os.PathLike) -> dict:
    with open(path) as f:
        data: Any = json.load(f)
    if "plugins" not in data:  # a single plugin .conf: wrap it as a list
        data = {"cniVersion": data.get("cniVersion"), "name": data.get("name"), "plugins": [data]}
    return data
