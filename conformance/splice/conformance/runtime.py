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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

GC_KEY = "cni.dev/valid-attachments"
GC_KEY_LEGACY = "cni.dev/attachments"


def _vt(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


class CniCallError(Exception):
    """A plugin invocation failed; carries the plugin's CNI error when it printed one."""

    def __init__(self, plugin: str, command: str, rc: int, error: dict | None, stdout: str, stderr: str):
        self.plugin, self.command, self.rc = plugin, command, rc
        self.error = error or {}
        self.stdout, self.stderr = stdout, stderr
        self.code = self.error.get("code")
        msg = self.error.get("msg") or stderr.strip() or stdout.strip() or f"exit status {rc}"
        super().__init__(f"{plugin} {command} failed (code {self.code}): {msg}")


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
        self.log.append(Invocation(plugin_type, command or "", time.perf_counter() - t0, p.returncode))
        return p

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
        """Execute one plugin like libcni: the parsed result, or CniCallError."""
        p = self.run_raw(plugin_type, command, conf, container_id=container_id, netns=netns, ifname=ifname,
                         cni_args=cni_args)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        if p.returncode != 0:
            error = None
            for text in (out, err):
                try:
                    cand = json.loads(text)
                except ValueError:
                    continue
                if isinstance(cand, dict) and "code" in cand:
                    error = cand
                    break
            raise CniCallError(plugin_type, command, p.returncode, error, out, err)
        if not out.strip():
            return None
        return json.loads(out)

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


def load_conflist(path: str | os.PathLike) -> dict:
    with open(path) as f:
        data: Any = json.load(f)
    if "plugins" not in data:  # a single plugin .conf: wrap it as a list
        data = {"cniVersion": data.get("cniVersion"), "name": data.get("name"), "plugins": [data]}
    return data
