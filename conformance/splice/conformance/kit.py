"""The conformance kit's machinery: a session (the plugins under test and what they
support), a per-check context (fresh namespaces, a fresh IPAM dataDir, a libcni-like
runtime running every plugin inside the check's host namespace), the leak check every
check ends with, and the runner.

Checks themselves live in :mod:`splice.conformance.checks`.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from splice.conformance import harness, oracle, statements as cni_statements
from splice.conformance.profiles import (
    BRIDGE,
    FAKE_IPAM,
    NETWORK,
    PLUGIN_CLASSES,
    PREV_PLUGIN,
    class_for,
    make_class,
    SUBNET,
    IpamProfile,
    fake_ipam_section,
    ipam_profile,
)
from splice.conformance.runtime import ALL_VERSIONS, Call, CniCallError, Runtime, version_tuple

# ------------------------------------------------------------------------------ check model


LINK_GRACE = 3.0  # seconds the leak check waits for links of deleted namespaces to disappear


class CheckFailed(Exception):
    """A check's verdict: the one-line reason."""


class Skip(Exception):
    """Raised inside a check when it does not apply to the plugin under test."""


@dataclass
class Check:
    id: str
    title: str
    statements: tuple[int, ...]  # numbers of splice.conformance.statements (docs/cni-statements.md)
    quote: str  # the spec sentence (or the statement) the check covers
    fn: Callable[["Ctx"], None]
    needs: tuple[str, ...] = ()  # "ipam", "check", "status", "gc", "ranges", "ip_args", "version:<v>"
    leak_check: bool = True
    level: str = "MUST"  # the strongest keyword behind the check: MUST, SHOULD, lib (reference library)

    @property
    def spec(self) -> str:
        return ", ".join(str(s) for s in self.statements)


REGISTRY: list[Check] = []


def check(id: str, title: str, statements: Iterable[int], quote: str, *, needs: Iterable[str] = (),
          leak_check: bool = True, level: str = "MUST"):
    statements = tuple(statements)
    unknown = [n for n in statements if n not in cni_statements.STATEMENTS]
    if unknown:
        raise ValueError(f"check {id}: no statement {unknown} in splice.conformance.statements")

    def deco(fn):
        REGISTRY.append(Check(id, title, statements, quote, fn, tuple(needs), leak_check, level))
        return fn

    return deco


@dataclass
class Outcome:
    id: str
    title: str
    spec: str
    result: str  # "pass" | "fail" | "skip"
    reason: str = ""
    seconds: float = 0.0
    level: str = "MUST"

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "spec": self.spec, "level": self.level, "result": self.result,
                "reason": self.reason, "seconds": round(self.seconds, 3)}


# ------------------------------------------------------------------------------ session


@dataclass
class KitConfig:
    cni_path: list[str]
    plugin: str
    ipam: str | None = None
    plugin_class: str | None = None  # None: by the plugin's name (profiles.class_for)
    template: dict | None = None
    timeout: float = 60.0
    master: str | None = None  # macvlan/ipvlan: the master the kit makes in every host namespace

    def __post_init__(self) -> None:
        if self.plugin_class is None:
            self.plugin_class = class_for(self.plugin)
        if self.plugin_class not in PLUGIN_CLASSES:
            raise ValueError(f"unknown plugin class {self.plugin_class!r} (known: {', '.join(PLUGIN_CLASSES)})")


class Session:
    """The plugins under test: resolved binaries, VERSION answers, helper plugins."""

    def __init__(self, cfg: KitConfig):
        self.cfg = cfg
        self.helper_dir = Path(tempfile.mkdtemp(prefix="spc-helpers-"))
        self._install_helpers()
        self.cni_path = [*cfg.cni_path, str(self.helper_dir)]
        self.plugin_class = make_class(cfg.plugin_class, cfg.plugin, cfg.template, cfg.master)
        self.ipam: IpamProfile | None = ipam_profile(cfg.ipam)
        self.main_versions: tuple[str, ...] = ()
        self.ipam_versions: tuple[str, ...] = ()
        self.version_error: str = ""

    # helpers -------------------------------------------------------------------------
    def _install_helpers(self) -> None:
        src = Path(__file__).with_name("helper_plugins.py").read_text()
        for name in (FAKE_IPAM, PREV_PLUGIN):
            f = self.helper_dir / name
            f.write_text(f"#!{sys.executable} -S\n{src}")
            f.chmod(0o755)

    def probe(self) -> None:
        """Make sure the kernel has the class's link kind; ask the plugins for their versions
        (inside throwaway namespaces)."""
        if self.plugin_class.kind:
            with harness.NamespaceSet() as nss:
                problem = self.plugin_class.kernel_problem(nss.new)
            if problem:
                raise SystemExit(f"splice-conformance: {problem}")
        with harness.NamespaceSet() as nss:
            host = nss.new()
            rt = Runtime(self.cni_path, prefix=host.nsenter(), timeout=self.cfg.timeout)
            try:
                rt.find(self.cfg.plugin)
            except FileNotFoundError as e:
                raise SystemExit(f"splice-conformance: {e}") from None
            self.main_versions = self._versions(rt, self.cfg.plugin)
            if self.cfg.ipam:
                try:
                    rt.find(self.cfg.ipam)
                except FileNotFoundError as e:
                    raise SystemExit(f"splice-conformance: {e}") from None
                self.ipam_versions = self._versions(rt, self.cfg.ipam)

    def _versions(self, rt: Runtime, plugin: str) -> tuple[str, ...]:
        call = rt.call(plugin, "VERSION", {"cniVersion": ALL_VERSIONS[-1]})
        try:
            sv = (call.json or {}).get("supportedVersions") if call.ok else None
        except ValueError:
            sv = None
        if not isinstance(sv, list):
            self.version_error = f"{plugin} VERSION gave no supportedVersions (rc {call.rc})"
            return ()
        return tuple(v for v in sv if isinstance(v, str))

    def close(self) -> None:
        shutil.rmtree(self.helper_dir, ignore_errors=True)

    # versions ------------------------------------------------------------------------
    @property
    def versions(self) -> tuple[str, ...]:
        """Known spec versions supported by the plugin and (if any) its IPAM, oldest first."""
        common = [v for v in ALL_VERSIONS if v in self.main_versions]
        if self.ipam is not None:
            common = [v for v in common if v in self.ipam_versions]
        return tuple(common)

    @property
    def primary(self) -> str | None:
        return self.versions[-1] if self.versions else None

    def supports(self, v: str) -> bool:
        return v in self.versions

    def skip_reason(self, chk: Check) -> str | None:
        not_applicable = self.plugin_class.skip_reason(chk.id)
        if not_applicable:
            return not_applicable
        if not self.versions:
            return self.version_error or "no spec version supported by both the plugin and its IPAM"
        for need in chk.needs:
            if need == "ipam" and self.ipam is None:
                return "no IPAM plugin given (--ipam)"
            if need == "check" and version_tuple(self.primary) < (0, 4, 0):
                return f"CHECK needs spec >= 0.4.0; highest common version is {self.primary}"
            if need in ("status", "gc") and not self.supports("1.1.0"):
                who = self.cfg.plugin if "1.1.0" not in self.main_versions else self.cfg.ipam
                return f"{who} does not support spec 1.1.0 ({need.upper()} was introduced in 1.1.0)"
            if need == "gc_ipam" and (self.ipam is None or "1.1.0" not in self.ipam_versions):
                return f"{self.cfg.ipam or 'no IPAM'} does not support spec 1.1.0 (GC)"
            if need == "ranges" and (self.ipam is None or not self.ipam.supports_ranges):
                return "the IPAM profile has no ranges the kit can shrink"
            if need == "ip_args" and (self.ipam is None or not self.ipam.supports_ip_args):
                return "the IPAM profile does not take requested IPs"
            if need == "chain" and version_tuple(self.primary) < (0, 3, 0):
                return "chaining needs spec >= 0.3.0"
            if need.startswith("version:"):
                v = need.split(":", 1)[1]
                if v not in self.main_versions:
                    return f"{self.cfg.plugin} does not list {v} in supportedVersions"
                if self.ipam is not None and v not in self.ipam_versions:
                    return f"{self.cfg.ipam} does not list {v} in supportedVersions"
        return None


# ------------------------------------------------------------------------------ context


@dataclass
class Attachment:
    conf: dict
    cid: str
    ifname: str
    netns: str | None
    result: dict | None = None


class Ctx:
    """Everything one check works with; ``close()`` removes all of it."""

    def __init__(self, session: Session, chk: Check):
        self.s = session
        self.chk = chk
        self.nss = harness.NamespaceSet()
        self.tmp = Path(tempfile.mkdtemp(prefix="spc-check-"))
        self.data_dir = self.tmp / "ipam"
        self.data_dir.mkdir()
        self.tokens: set[str] = set()
        self.allow_links: set[str] = set()
        try:
            self.host = self._new_host_ns()
        except BaseException:
            self.close()
            raise
        self.rt = self.runtime_for(self.host)
        self.version: str = session.primary or ALL_VERSIONS[-1]
        self.hosts: list[harness.Namespace] = [self.host]
        self.networks: set[tuple[str, str | None]] = set()  # (network name, ipam type) used
        self.sandboxes: list[harness.Namespace] = []
        self._n = 0
        self._lock = threading.Lock()

    # plumbing -------------------------------------------------------------------------
    def runtime_for(self, host: harness.Namespace) -> Runtime:
        return Runtime(self.s.cni_path, cache_dir=str(self.tmp / f"cache-{host.name}"), prefix=host.nsenter(),
                       timeout=self.s.cfg.timeout)

    def _new_host_ns(self) -> harness.Namespace:
        """A fresh host namespace with what the plugin class needs there (e.g. a master)."""
        h = self.nss.new()
        self.allow_links |= self.s.plugin_class.prepare_host(self.nss.new, h)
        return h

    def new_host(self) -> tuple[harness.Namespace, Runtime]:
        h = self._new_host_ns()
        self.hosts.append(h)
        return h, self.runtime_for(h)

    def sandbox(self) -> harness.Namespace:
        sb = self.nss.new()
        self.sandboxes.append(sb)
        return sb

    def cid(self) -> str:
        with self._lock:
            self._n += 1
            n = self._n
        c = f"{self.chk.id.lower()}-{n}-{secrets.token_hex(3)}"
        self.tokens.add(c)
        return c

    @property
    def plugin(self) -> str:
        return self.s.cfg.plugin

    @property
    def ipam_type(self) -> str | None:
        return self.s.cfg.ipam

    def close(self) -> None:
        self.nss.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # configs -------------------------------------------------------------------------
    def ipam_section(self, *, subnet: str = SUBNET, range_start: str | None = None, range_end: str | None = None,
                     routes: bool | str = True, fake: bool = False, fail_on: tuple[str, ...] = ()) -> dict | None:
        if fake:
            return fake_ipam_section(self.data_dir, subnet, fail_on)
        if self.s.ipam is None:
            return None
        return self.s.ipam.section(self.data_dir, subnet, range_start=range_start, range_end=range_end,
                                   routes=routes)

    def conflist(self, version: str | None = None, *, name: str = NETWORK, ipam: dict | None | bool = True,
                 bridge: str = BRIDGE, chain_before: list[dict] | None = None, **opts) -> dict:
        """The conflist of the plugin under test (plus, optionally, plugins before it)."""
        if ipam is True:
            ipam = self.ipam_section()
        elif ipam is False:
            ipam = None
        plugin = self.s.plugin_class.plugin(ipam, bridge=bridge, **opts)
        self.allow_links |= self.s.plugin_class.host_links(plugin)
        ipam_t = (plugin.get("ipam") or {}).get("type") if isinstance(plugin.get("ipam"), dict) else None
        self.networks.add((name, ipam_t))
        return {"cniVersion": version or self.version, "name": name,
                "plugins": [*(chain_before or []), plugin]}

    def plugin_conf(self, conflist: dict, index: int = -1, prev_result: dict | None = None) -> dict:
        """The execution config of one plugin of the list (what the plugin reads on stdin)."""
        return Runtime.plugin_conf(conflist, conflist["plugins"][index], prev_result=prev_result)

    # verbs ---------------------------------------------------------------------------
    def track(self, result: dict | None) -> None:
        """Remember what an ADD result names (addresses, host interfaces) for the leak check."""
        if not isinstance(result, dict):
            return
        with self._lock:
            for ip in result.get("ips") or []:
                if isinstance(ip, dict) and isinstance(ip.get("address"), str):
                    self.tokens.add(ip["address"].split("/")[0])
            for key in ("ip4", "ip6"):
                if isinstance(result.get(key), dict) and isinstance(result[key].get("ip"), str):
                    self.tokens.add(result[key]["ip"].split("/")[0])
            for itf in result.get("interfaces") or []:
                if isinstance(itf, dict) and not itf.get("sandbox") and isinstance(itf.get("name"), str):
                    if itf["name"] not in self.allow_links:
                        self.tokens.add(itf["name"])

    def add(self, conf: dict, cid: str, sb: harness.Namespace | str | None, ifname: str = "eth0",
            rt: Runtime | None = None, **kw) -> dict:
        """ADD through the runtime; a failure fails the check with the plugin's error."""
        path = sb.path if isinstance(sb, harness.Namespace) else sb
        try:
            res = (rt or self.rt).add(conf, cid, path, ifname, **kw)
        except CniCallError as e:
            raise CheckFailed(f"ADD failed: {short_error(e)}") from None
        if not isinstance(res, dict):
            raise CheckFailed("ADD succeeded but printed no result")
        self.track(res)
        return res

    def delete(self, conf: dict, cid: str, netns: harness.Namespace | str | None, ifname: str = "eth0",
               what: str = "DEL", rt: Runtime | None = None, **kw) -> None:
        path = netns.path if isinstance(netns, harness.Namespace) else netns
        try:
            (rt or self.rt).delete(conf, cid, path, ifname, **kw)
        except CniCallError as e:
            raise CheckFailed(f"{what} failed: {short_error(e)}") from None

    def check_ok(self, conf: dict, cid: str, sb: harness.Namespace, ifname: str = "eth0", what: str = "CHECK",
                 **kw) -> None:
        try:
            self.rt.check(conf, cid, sb.path, ifname, **kw)
        except CniCallError as e:
            raise CheckFailed(f"{what} failed: {short_error(e)}") from None

    def call(self, plugin: str | None, command: str | None, conf, *, rt: Runtime | None = None, **kw) -> Call:
        """One raw plugin execution (``plugin`` None = the plugin under test)."""
        return (rt or self.rt).call(plugin or self.plugin, command, conf, **kw)

    # reservations --------------------------------------------------------------------
    def reservations(self, network: str = NETWORK, ipam_type: str | None = None) -> int:
        t = ipam_type or self.ipam_type
        prof = ipam_profile(t)
        if prof is None:
            return 0
        return prof.reservations(self.data_dir, network)

    # leak check ----------------------------------------------------------------------
    def leaks(self) -> list[str]:
        problems = []
        # Only when the check deleted a sandbox can leftover host links be the kernel's
        # asynchronous namespace teardown still in progress.
        grace = LINK_GRACE if any(not sb.exists() for sb in self.sandboxes) else 0.0
        for h in self.hosts:
            if not h.exists():
                continue
            extra = oracle.link_names(h.name) - {"lo"} - self.allow_links
            deadline = time.monotonic() + grace
            while extra and time.monotonic() < deadline:
                # A deleted sandbox takes its veth ends with it, but the kernel tears a network
                # namespace down asynchronously: give it a moment before calling it a leak.
                time.sleep(0.1)
                extra = oracle.link_names(h.name) - {"lo"} - self.allow_links
            if extra:
                problems.append(f"links left in host: {', '.join(sorted(extra))}")
            refs = oracle.nft_references(h.name, self.tokens)
            if refs:
                problems.append(f"nftables state left (statement 25): {refs[0]}"
                                + (f" (+{len(refs) - 1} more)" if len(refs) > 1 else ""))
        for sb in self.sandboxes:
            if sb.exists():
                extra = oracle.link_names(sb.name) - {"lo"}
                if extra:
                    problems.append(f"links left in sandbox: {', '.join(sorted(extra))}")
        for network, ipam_t in sorted(self.networks, key=str):
            if not ipam_t:
                continue
            n = self.reservations(network, ipam_t)
            if n:
                problems.append(f"{n} IPAM reservation(s) left in network {network} ({ipam_t})")
        return problems

    def assert_clean(self, what: str = "after teardown") -> None:
        problems = self.leaks()
        if problems:
            raise CheckFailed(f"leak {what}: " + "; ".join(problems))


# ------------------------------------------------------------------------------ helpers


def short_error(e: CniCallError) -> str:
    err = e.error or {}
    msg = err.get("msg") or (e.stderr.strip().splitlines() or [""])[-1] or (e.stdout.strip()[:100])
    code = f"code {e.code}" if e.code is not None else f"exit {e.rc}"
    text = f"{e.plugin} {e.command}: {code}: {msg}"
    return " ".join(text.split())[:240]


def describe_call(c: Call) -> str:
    err = c.error or {}
    if err:
        return f"exit {c.rc}, code {err.get('code')}: {' '.join(str(err.get('msg', '')).split())[:160]}"
    tail = (c.stderr.strip() or c.stdout.strip()).splitlines()
    return f"exit {c.rc}" + (f": {tail[-1][:160]}" if tail else "")


def expect_error(c: Call, codes: Iterable[int] | None, what: str) -> dict:
    """The call must fail (non-zero exit) with a CNI error object whose code is in ``codes``."""
    codes = tuple(codes) if codes is not None else None
    want = f"error code {' or '.join(map(str, codes))}" if codes else "an error"
    if c.rc == 0:
        out = " ".join(c.stdout.split())[:80]
        err = " ".join(c.stderr.split())[:80]
        detail = f" (stdout: {out})" if out else (f" (stderr only: {err})" if err else " (no output)")
        raise CheckFailed(f"{what}: exit 0, expected {want}{detail}")
    err = c.error
    if err is None:
        raise CheckFailed(f"{what}: exit {c.rc} without a CNI error object, expected {want}")
    if codes and err.get("code") not in codes:
        raise CheckFailed(f"{what}: code {err.get('code')} ({' '.join(str(err.get('msg', '')).split())[:120]}), "
                          f"expected {want}")
    return err


def expect_ok(c: Call, what: str) -> None:
    if c.rc != 0:
        raise CheckFailed(f"{what} failed: {describe_call(c)}")


def is_cidr(v) -> bool:
    try:
        ipaddress.ip_interface(v)
        return isinstance(v, str) and "/" in v
    except (ValueError, TypeError):
        return False


def is_ip(v) -> bool:
    try:
        ipaddress.ip_address(v)
        return isinstance(v, str)
    except (ValueError, TypeError):
        return False


def result_problems(res, version: str, *, ipam_only: bool = False) -> list[str]:
    """Shape of a success result for ``version`` (SPEC "Success" for each version)."""
    p: list[str] = []
    if not isinstance(res, dict):
        return ["result is not a JSON object"]
    if res.get("cniVersion") != version:
        p.append(f"cniVersion {res.get('cniVersion')!r} != config's {version!r}")
    vt = version_tuple(version)
    if vt < (0, 3, 0):
        for k in ("interfaces", "ips"):
            if k in res:
                p.append(f"{version} result has {k!r} (a 0.3.0+ key)")
        if "ip4" not in res and "ip6" not in res:
            p.append(f"{version} result has neither ip4 nor ip6")
        for k in ("ip4", "ip6"):
            if k in res:
                ipc = res[k]
                if not isinstance(ipc, dict) or not is_cidr(ipc.get("ip")):
                    p.append(f"{k}.ip is not a CIDR address")
                elif ipc.get("gateway") is not None and not is_ip(ipc.get("gateway")):
                    p.append(f"{k}.gateway {ipc.get('gateway')!r} is not an IP")
                for r in (ipc or {}).get("routes") or []:
                    if not is_cidr(r.get("dst")):
                        p.append(f"{k}.routes dst {r.get('dst')!r} is not a CIDR")
        return p
    for k in ("ip4", "ip6"):
        if k in res:
            p.append(f"{version} result has {k!r} (a 0.1/0.2 key)")
    if ipam_only:
        if "interfaces" in res:
            p.append("IPAM result has 'interfaces'")
    elif not isinstance(res.get("interfaces"), list):
        p.append("result has no 'interfaces' list")
    ips = res.get("ips")
    if not isinstance(ips, list) or not ips:
        p.append("result has no 'ips'")
        ips = []
    for i, ip in enumerate(ips):
        if not isinstance(ip, dict) or not is_cidr(ip.get("address")):
            p.append(f"ips[{i}].address is not a CIDR address")
            continue
        fam = "4" if ipaddress.ip_interface(ip["address"]).version == 4 else "6"
        if vt < (1, 0, 0):
            if ip.get("version") != fam:
                p.append(f"ips[{i}].version is {ip.get('version')!r}, {version} needs {fam!r}")
        elif "version" in ip:
            p.append(f"ips[{i}] has 'version' (removed in 1.0.0)")
        if ip.get("gateway") is not None and not is_ip(ip.get("gateway")):
            p.append(f"ips[{i}].gateway {ip.get('gateway')!r} is not an IP")
        if ipam_only and "interface" in ip:
            p.append(f"IPAM result ips[{i}] has 'interface'")
    for i, r in enumerate(res.get("routes") or []):
        if not isinstance(r, dict) or not is_cidr(r.get("dst")):
            p.append(f"routes[{i}].dst is not a CIDR")
    if "dns" in res and not isinstance(res["dns"], dict):
        p.append("dns is not an object")
    return p


def sandbox_index(res: dict, ifname: str, netns_path: str) -> int | None:
    for i, itf in enumerate(res.get("interfaces") or []):
        if isinstance(itf, dict) and itf.get("name") == ifname and itf.get("sandbox") == netns_path:
            return i
    return None


def result_addresses(res: dict) -> list[str]:
    if "ips" in res:
        return [ip["address"] for ip in res.get("ips") or [] if isinstance(ip, dict) and "address" in ip]
    return [res[k]["ip"] for k in ("ip4", "ip6") if isinstance(res.get(k), dict) and "ip" in res[k]]


# ------------------------------------------------------------------------------ runner


def select(patterns: list[str] | None) -> list[Check]:
    from splice.conformance import checks  # noqa: F401 - registers the checks

    if not patterns:
        return list(REGISTRY)
    out = []
    for chk in REGISTRY:
        if any(fnmatch.fnmatchcase(chk.id, p.upper()) or chk.id == p.upper() for p in patterns):
            out.append(chk)
    return out


def outcome_of(chk, e: Exception) -> Outcome:
    """The verdict of a check that raised ``e`` (this kit's and the CNM kit's runners)."""
    if isinstance(e, Skip):
        return Outcome(chk.id, chk.title, chk.spec, "skip", str(e))
    if isinstance(e, CheckFailed):
        return Outcome(chk.id, chk.title, chk.spec, "fail", " ".join(str(e).split()))
    if isinstance(e, CniCallError):
        return Outcome(chk.id, chk.title, chk.spec, "fail", f"unexpected failure: {short_error(e)}")
    return Outcome(chk.id, chk.title, chk.spec, "fail", f"kit error: {e.__class__.__name__}: {e}")


def run_check(session: Session, chk: Check) -> Outcome:
    t0 = time.perf_counter()
    reason = session.skip_reason(chk)
    if reason:
        return Outcome(chk.id, chk.title, chk.spec, "skip", reason, level=chk.level)
    ctx = None
    try:
        ctx = Ctx(session, chk)
        chk.fn(ctx)
        if chk.leak_check:
            ctx.assert_clean()
        out = Outcome(chk.id, chk.title, chk.spec, "pass")
    except Exception as e:  # noqa: BLE001 - a kit error is reported, never hidden
        out = outcome_of(chk, e)
    finally:
        if ctx is not None:
            ctx.close()
    out.seconds = time.perf_counter() - t0
    out.level = chk.level
    return out


def run(cfg: KitConfig, patterns: list[str] | None = None,
        progress: Callable[[Outcome], None] | None = None) -> tuple[Session, list[Outcome]]:
    if os.geteuid() != 0:
        raise SystemExit("splice-conformance: needs root (it creates network namespaces)")
    harness.reap_stale()
    session = Session(cfg)
    outcomes: list[Outcome] = []
    try:
        session.probe()
        for chk in select(patterns):
            o = run_check(session, chk)
            outcomes.append(o)
            if progress:
                progress(o)
    finally:
        session.close()
    return session, outcomes


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    return {k: sum(1 for o in outcomes if o.result == k) for k in ("pass", "fail", "skip")}


def json_report(session: Session, outcomes: list[Outcome], seconds: float) -> dict:
    s = summary(outcomes)
    return {
        "plugin": session.cfg.plugin, "ipam": session.cfg.ipam, "class": session.cfg.plugin_class,
        "master": getattr(session.plugin_class, "master", None),
        "cniPath": session.cfg.cni_path,
        "supportedVersions": {"plugin": list(session.main_versions), "ipam": list(session.ipam_versions)},
        "versions": list(session.versions),
        "results": [o.to_json() for o in outcomes],
        "summary": {"passed": s["pass"], "failed": s["fail"], "skipped": s["skip"]},
        "seconds": round(seconds, 2),
    }


def dumps(obj) -> str:
    return json.dumps(obj, indent=2)
