"""The checks. Each covers numbered testable statements of :mod:`splice.conformance.statements`
(rendered as docs/cni-statements.md: the CNI SPEC.md and CNI CONVENTIONS.md one testable
sentence at a time, each with its upstream source) and fails with a one-line reason. Every
check runs in fresh namespaces with a fresh IPAM dataDir and (unless it says otherwise) ends
with the leak check of :meth:`splice.conformance.kit.Ctx.assert_clean`.

Statement 53 (consumers accept 1.1.0 result fields) is exercised through ADD-05, whose
prevResult carries them at 1.1.0; statement 54 is the runtime's own contract, not a plugin
property (runtime.py implements it: DEL in reverse, CHECK/GC forward, prevResult = the cached
final ADD result).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import threading

from splice.conformance import oracle
from splice.conformance.helper_plugins import PREV_ADDR, PREV_DNS, PREV_IF, PREV_ROUTE
from splice.conformance.kit import (
    CheckFailed,
    Ctx,
    Skip,
    check,
    describe_call,
    expect_error,
    expect_ok,
    result_addresses,
    result_problems,
    sandbox_index,
)
from splice.conformance.profiles import BRIDGE2, NETWORK2, PREV_PLUGIN, ROUTE_DST, SUBNET2
from splice.conformance.runtime import ALL_VERSIONS, CniCallError, Runtime, version_tuple

MODERN = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
Q_REQUIRED = "SPEC §2 Parameters: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME required for ADD/CHECK"
Q_DEL = ("SPEC DEL: \"Plugins MUST accept multiple DEL calls for the same (CNI_CONTAINERID, CNI_IFNAME) pair, "
         "and return success if the interface in question, or any modifications added, are missing.\"")
Q_DEL_CLEAN = ("SPEC DEL: \"the bridge plugin should delegate the DEL action to the IPAM plugin and clean up its own "
               "resources even if the container network namespace and/or container network interface "
               "no longer exist.\"")
Q_CHECK = ("SPEC CHECK: \"The plugin should return an error if a resource included in the CNI Result type (interface, "
           "address or route) was created by the plugin, and is listed in prevResult, but is missing or in an "
           "invalid state.\"")


def _sandbox_conf(ctx: Ctx, version: str | None = None, **opts) -> tuple[dict, dict]:
    """(conflist, the plugin's execution config) for direct calls."""
    conf = ctx.conflist(version, **opts)
    return conf, ctx.plugin_conf(conf)


def _nothing_made(ctx: Ctx, *sandboxes, what: str) -> None:
    problems = ctx.leaks()
    for sb in sandboxes:
        if sb.exists() and oracle.link_names(sb.name) - {"lo"}:
            problems.append(f"sandbox has {sorted(oracle.link_names(sb.name) - {'lo'})}")
    if problems:
        raise CheckFailed(f"{what} left state behind: {'; '.join(dict.fromkeys(problems))}")


def _env(ctx: Ctx, sb, cid: str | None = "", ifname: str | None = "eth0") -> dict:
    return {"container_id": ctx.cid() if cid == "" else cid, "netns": sb.path if sb else None, "ifname": ifname}


# =========================================================================== environment


@check("ENV-01", "missing CNI_COMMAND is rejected with code 4", [3],
       "SPEC §2: CNI_COMMAND is a required parameter; (lib) code 4 \"required env variables missing\"")
def env_missing_command(ctx: Ctx):
    _, pc = _sandbox_conf(ctx)
    sb = ctx.sandbox()
    c = ctx.call(None, None, pc, **_env(ctx, sb))
    expect_error(c, [4], "no CNI_COMMAND")
    _nothing_made(ctx, sb, what="call without CNI_COMMAND")


@check("ENV-02", "unknown CNI_COMMAND is rejected with code 4", [3],
       "(lib) skel: unknown CNI_COMMAND -> code 4 (ErrInvalidEnvironmentVariables)", level="lib")
def env_unknown_command(ctx: Ctx):
    _, pc = _sandbox_conf(ctx)
    sb = ctx.sandbox()
    expect_error(ctx.call(None, "SPCBOGUS", pc, **_env(ctx, sb)), [4], "CNI_COMMAND=SPCBOGUS")
    _nothing_made(ctx, sb, what="unknown command")


def _commands(ctx: Ctx) -> list[str]:
    return ["ADD", "DEL"] + (["CHECK"] if version_tuple(ctx.version) >= (0, 4, 0) else [])


@check("ENV-03", "missing CNI_CONTAINERID is rejected with code 4 (ADD, DEL, CHECK)", [4], Q_REQUIRED)
def env_missing_cid(ctx: Ctx):
    _, pc = _sandbox_conf(ctx)
    sb = ctx.sandbox()
    for cmd in _commands(ctx):
        expect_error(ctx.call(None, cmd, pc, **_env(ctx, sb, cid=None)), [4], f"{cmd} without CNI_CONTAINERID")
    _nothing_made(ctx, sb, what="calls without CNI_CONTAINERID")


@check("ENV-04", "missing CNI_IFNAME is rejected with code 4 (ADD, DEL, CHECK)", [4], Q_REQUIRED)
def env_missing_ifname(ctx: Ctx):
    _, pc = _sandbox_conf(ctx)
    sb = ctx.sandbox()
    for cmd in _commands(ctx):
        expect_error(ctx.call(None, cmd, pc, **_env(ctx, sb, ifname=None)), [4], f"{cmd} without CNI_IFNAME")
    _nothing_made(ctx, sb, what="calls without CNI_IFNAME")


@check("ENV-05", "missing CNI_NETNS is rejected with code 4 (ADD, CHECK)", [5], Q_REQUIRED)
def env_missing_netns(ctx: Ctx):
    _, pc = _sandbox_conf(ctx)
    for cmd in [c for c in _commands(ctx) if c != "DEL"]:
        expect_error(ctx.call(None, cmd, pc, **_env(ctx, None)), [4], f"{cmd} without CNI_NETNS")
    _nothing_made(ctx, what="calls without CNI_NETNS")


@check("ENV-06", "invalid CNI_CONTAINERID is rejected with code 4", [4],
       "SPEC §2: CNI_CONTAINERID \"Must start with an alphanumeric character, optionally followed by any "
       "combination of one or more alphanumeric characters, underscore (_), dot (.) or hyphen (-)\"", level="lib")
def env_bad_cid(ctx: Ctx):
    _, pc = _sandbox_conf(ctx)
    sb = ctx.sandbox()
    for bad in ("-spc", "spc bad", "spc/bad", ".spc"):
        expect_error(ctx.call(None, "ADD", pc, **_env(ctx, sb, cid=bad)), [4], f"ADD with CNI_CONTAINERID={bad!r}")
    _nothing_made(ctx, sb, what="ADD with invalid container IDs")


@check("ENV-07", "invalid CNI_IFNAME is rejected with code 4", [6],
       "SPEC §2: \"if the plugin is unable to use this interface name it must return an error\"; (lib) code 4 for "
       ">15 chars, '.', '..', '/', ':' or whitespace", level="lib")
def env_bad_ifname(ctx: Ctx):
    _, pc = _sandbox_conf(ctx)
    sb = ctx.sandbox()
    for bad in ("spc" + "x" * 13, ".", "..", "a/b", "a:b", "a b"):
        expect_error(ctx.call(None, "ADD", pc, **_env(ctx, sb, ifname=bad)), [4], f"ADD with CNI_IFNAME={bad!r}")
    _nothing_made(ctx, sb, what="ADD with invalid interface names")


@check("ENV-08", "invalid or missing network name is rejected with code 7", [7],
       "SPEC §1: name \"Must start with an alphanumeric character, optionally followed by ... alphanumeric "
       "characters, underscore, dot or hyphen\"; (lib) code 7", level="lib")
def env_bad_name(ctx: Ctx):
    _, pc = _sandbox_conf(ctx)
    sb = ctx.sandbox()
    for bad in ("spc net", "-spcnet", "spc/net"):
        expect_error(ctx.call(None, "ADD", {**pc, "name": bad}, **_env(ctx, sb)), [7], f"ADD with name {bad!r}")
    no_name = {k: v for k, v in pc.items() if k != "name"}
    expect_error(ctx.call(None, "ADD", no_name, **_env(ctx, sb)), [7], "ADD without a network name")
    _nothing_made(ctx, sb, what="ADD with invalid network names")


@check("ENV-09", "unparseable configuration is rejected with code 6", [8],
       "SPEC Well-known Error Codes: 6 \"Failed to decode content\"", level="lib")
def env_bad_json(ctx: Ctx):
    sb = ctx.sandbox()
    expect_error(ctx.call(None, "ADD", b'{"cniVersion": "1.0.0", "name": ', **_env(ctx, sb)), [6],
                 "ADD with truncated JSON on stdin")
    _nothing_made(ctx, sb, what="ADD with bad JSON")


@check("ENV-10", "CNI_ARGS: unknown keys rejected unless IgnoreUnknown=1", [48],
       "(lib) types.LoadArgs: unknown CNI_ARGS keys are an error unless IgnoreUnknown=1 (Kubernetes runtimes "
       "always set it)", needs=["ipam"], level="lib")
def env_cni_args(ctx: Ctx):
    conf, pc = _sandbox_conf(ctx)
    sb = ctx.sandbox()
    expect_error(ctx.call(None, "ADD", pc, cni_args="SPC_UNKNOWN_KEY=1", **_env(ctx, sb)), None,
                 "ADD with CNI_ARGS=SPC_UNKNOWN_KEY=1")
    _nothing_made(ctx, sb, what="rejected CNI_ARGS")
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=spc;K8S_POD_NAME=spc-pod;SPC_UNKNOWN_KEY=1"
    cid = ctx.cid()
    ctx.add(conf, cid, sb, cni_args=args)
    ctx.delete(conf, cid, sb, cni_args=args)


@check("ENV-11", "ADD with CNI_NETNS = the plugin's own namespace is refused", [51],
       "(lib) skel: \"plugin's netns and netns from CNI_NETNS should not be the same\" (code 8)", level="lib")
def env_own_netns(ctx: Ctx):
    conf, pc = _sandbox_conf(ctx)
    cid = ctx.cid()
    c = ctx.call(None, "ADD", pc, container_id=cid, netns=ctx.host.path, ifname="spc9")
    if c.rc == 0:
        ctx.track(c.json if c.stdout.strip() else None)
        ctx.call(None, "DEL", pc, container_id=cid, netns=ctx.host.path, ifname="spc9")
        raise CheckFailed("ADD with CNI_NETNS = the plugin's own network namespace succeeded")
    expect_error(c, None, "ADD into the plugin's own namespace")
    ctx.call(None, "DEL", pc, container_id=cid, netns=ctx.host.path, ifname="spc9")
    if "spc9" in oracle.link_names(ctx.host.name):
        raise CheckFailed("refused ADD still created spc9 in the plugin's namespace")


# =========================================================================== versions


def _version_call_problems(c, what: str) -> list[str]:
    if c.rc != 0:
        return [f"{what}: {describe_call(c)}"]
    try:
        out = c.json
    except ValueError:
        return [f"{what}: stdout is not one JSON document"]
    if not isinstance(out, dict) or not isinstance(out.get("cniVersion"), str):
        return [f"{what}: no cniVersion string"]
    sv = out.get("supportedVersions")
    if not isinstance(sv, list) or not sv or not all(isinstance(v, str) for v in sv):
        return [f"{what}: supportedVersions is not a non-empty list of strings"]
    return []


@check("VER-01", "VERSION answers {cniVersion, supportedVersions} whatever the env and stdin", [10],
       "SPEC VERSION: \"The plugin should output via standard-out a json-serialized version result object\"; "
       "only CNI_COMMAND is required", leak_check=False)
def ver_version(ctx: Ctx):
    problems = _version_call_problems(ctx.call(None, "VERSION", {"cniVersion": ctx.version}), "VERSION")
    problems += _version_call_problems(
        ctx.call(None, "VERSION", b"not json", container_id="-bad id", ifname="x" * 20, cni_args="garbage"),
        "VERSION with invalid env and non-JSON stdin")
    if problems:
        raise CheckFailed("; ".join(problems))


@check("VER-02", "supportedVersions lists the versions modern runtimes use", [11],
       "statement 11: supportedVersions SHOULD include 0.3.1, 0.4.0, 1.0.0, 1.1.0 (the cniVersions of SPEC §1's "
       "example; SPEC 1.1.0 is current)",
       leak_check=False, level="SHOULD")
def ver_supported(ctx: Ctx):
    sv = ctx.s.main_versions
    unknown = [v for v in sv if v not in ALL_VERSIONS]
    missing = [v for v in MODERN if v not in sv]
    problems = []
    if missing:
        problems.append(f"supportedVersions lacks {', '.join(missing)} (has {', '.join(sv)})")
    if unknown:
        problems.append(f"supportedVersions has unknown spec versions {unknown}")
    if problems:
        raise CheckFailed("; ".join(problems))


@check("VER-03", "a cniVersion the plugin does not support is rejected with code 1", [9],
       "SPEC Result: \"If the cniVersion in the network configuration is not supported by the plugin, the plugin "
       "should return an error code 1\"", level="SHOULD")
def ver_unsupported(ctx: Ctx):
    _, pc = _sandbox_conf(ctx)
    sb = ctx.sandbox()
    bad = ["99.0.0"] + [v for v in ALL_VERSIONS if v not in ctx.s.main_versions]
    for v in bad:
        expect_error(ctx.call(None, "ADD", {**pc, "cniVersion": v}, **_env(ctx, sb)), [1], f"ADD with cniVersion {v}")
    expect_error(ctx.call(None, "DEL", {**pc, "cniVersion": "99.0.0"}, **_env(ctx, sb)), [1],
                 "DEL with cniVersion 99.0.0")
    _nothing_made(ctx, sb, what="calls with unsupported versions")


def _result_shape(version: str):
    def run(ctx: Ctx):
        conf = ctx.conflist(version)
        sb = ctx.sandbox()
        cid = ctx.cid()
        res = ctx.add(conf, cid, sb)
        problems = result_problems(res, version)
        if version_tuple(version) >= (0, 3, 0) and sandbox_index(res, "eth0", sb.path) is None:
            problems.append("interfaces has no entry {name: eth0, sandbox: CNI_NETNS}")
        have = sorted(oracle.addresses(sb.name, "eth0")) if "eth0" in oracle.link_names(sb.name) else []
        want = sorted(result_addresses(res))
        if want != have:
            problems.append(f"result addresses {want} but eth0 has {have}")
        if problems:
            raise CheckFailed(f"{version} ADD result: " + "; ".join(problems))
        if version_tuple(version) >= (0, 4, 0):
            ctx.check_ok(conf, cid, sb)
        ctx.delete(conf, cid, sb)

    return run


for _v in ALL_VERSIONS:
    check(f"RES-{_v}", f"ADD/CHECK/DEL at {_v}: result version and shape", [12, 13],
          "SPEC Result: \"the cniVersion returned by the plugin in the result must be consistent with the cniVersion "
          "specified in Network Configuration\"; shape per version (ip4/ip6 <= 0.2.0, ips[].version 0.3.x-0.4.0, "
          "none from 1.0.0)", needs=["ipam", f"version:{_v}"])(_result_shape(_v))


# =========================================================================== ADD


def _add_one(ctx: Ctx, ifname: str = "eth0", **opts):
    conf = ctx.conflist(**opts)
    sb = ctx.sandbox()
    cid = ctx.cid()
    res = ctx.add(conf, cid, sb, ifname)
    return conf, sb, cid, res


@check("ADD-01", "ADD creates CNI_IFNAME in CNI_NETNS and lists it with sandbox", [13],
       "SPEC ADD: create \"the interface defined by CNI_IFNAME inside the container at CNI_NETNS\"; interfaces[]."
       "sandbox \"must be provided for interfaces created or moved into a sandbox\"", needs=["chain"])
def add_creates_iface(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx, "net1")
    link = oracle.link(sb.name, "net1")
    if link is None:
        raise CheckFailed(f"no interface net1 in the sandbox (has {sorted(oracle.link_names(sb.name))})")
    idx = sandbox_index(res, "net1", sb.path)
    if idx is None:
        names = [(i.get("name"), i.get("sandbox")) for i in res.get("interfaces") or []]
        raise CheckFailed(f"interfaces lists no {{name: net1, sandbox: {sb.path}}}: {names}")
    mac = res["interfaces"][idx].get("mac")
    if mac and mac.lower() != str(link.get("address", "")).lower():
        raise CheckFailed(f"result mac {mac} but net1 has {link.get('address')}")
    if "UP" not in (link.get("flags") or []):
        raise CheckFailed("net1 is not up after ADD")
    ctx.delete(conf, cid, sb, "net1")


@check("ADD-02", "ips[].interface indexes the sandbox interface", [14],
       "SPEC Result: ips[].interface is the \"numeric index into 'interfaces' list\"; the plugin \"should fill in "
       "the interface indexes appropriately\"", needs=["ipam", "chain"], level="SHOULD")
def add_ip_index(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    itfs = res.get("interfaces") or []
    for i, ip in enumerate(res.get("ips") or []):
        idx = ip.get("interface")
        if idx is None:
            raise CheckFailed(f"ips[{i}] ({ip.get('address')}) has no 'interface' index")
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < len(itfs):
            raise CheckFailed(f"ips[{i}].interface={idx!r} does not index interfaces (len {len(itfs)})")
        if itfs[idx].get("sandbox") != sb.path or itfs[idx].get("name") != "eth0":
            raise CheckFailed(f"ips[{i}].interface={idx} points at {itfs[idx].get('name')!r}, not the sandbox eth0")
    ctx.delete(conf, cid, sb)


@check("ADD-03", "the kernel matches the ADD result (addresses, routes)", [13],
       "SPEC ADD: the plugin configures the interface; Result \"ips\"/\"routes\" describe what was configured",
       needs=["ipam", "chain"])
def add_kernel_matches(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    have = sorted(oracle.addresses(sb.name, "eth0"))
    want = sorted(result_addresses(res))
    if have != want:
        raise CheckFailed(f"result addresses {want}, eth0 has {have}")
    routes = oracle.all_routes(sb.name)
    dsts = {("default" if r.get("dst") in ("default", "0.0.0.0/0", "::/0") else r.get("dst")) for r in routes}
    for r in res.get("routes") or []:
        d = r.get("dst")
        key = "default" if d in ("0.0.0.0/0", "::/0") else str(ipaddress.ip_network(d, strict=False))
        if key not in dsts and key.split("/")[0] not in dsts:
            raise CheckFailed(f"result route {d} is not in the sandbox routing table")
    ctx.delete(conf, cid, sb)


@check("ADD-04", "ADD fails if CNI_IFNAME exists in the sandbox, and rolls back", [15, 19],
       "SPEC ADD: \"If an interface of the requested name already exists in the container, the CNI plugin MUST "
       "return with an error.\"", needs=["ipam"])
def add_duplicate_iface(ctx: Ctx):
    conf, sb, cid_a, res_a = _add_one(ctx)
    addr_a = sorted(oracle.addresses(sb.name, "eth0"))
    hosts_before = oracle.link_names(ctx.host.name)
    resv_before = ctx.reservations()
    cid_b = ctx.cid()
    try:
        res_b = ctx.rt.add(conf, cid_b, sb.path, "eth0")
    except CniCallError:
        res_b = None
    if res_b is not None:
        ctx.track(res_b)
        raise CheckFailed("second ADD with an existing eth0 in the sandbox succeeded")
    problems = []
    if sorted(oracle.addresses(sb.name, "eth0")) != addr_a:
        problems.append("the failed ADD changed the existing eth0's addresses")
    if oracle.link_names(sb.name) != {"lo", "eth0"}:
        problems.append(f"sandbox links now {sorted(oracle.link_names(sb.name))}")
    if oracle.link_names(ctx.host.name) != hosts_before:
        problems.append(f"host links changed: {sorted(oracle.link_names(ctx.host.name) ^ hosts_before)}")
    if ctx.reservations() != resv_before:
        problems.append(f"IPAM reservations {resv_before} -> {ctx.reservations()}")
    refs = oracle.nft_references(ctx.host.name, {cid_b})
    if refs:
        problems.append(f"nftables state for the failed ADD: {refs[0]}")
    if problems:
        raise CheckFailed("failed ADD was not rolled back (statement 19): " + "; ".join(problems))
    # The existing attachment's DEL first: the spec does not say who owns a shared ifname.
    ctx.delete(conf, cid_a, sb)
    ctx.delete(conf, cid_b, sb, what="DEL after the failed ADD", use_cache=False)


def _prev_entry(ctx: Ctx) -> dict:
    return {"type": PREV_PLUGIN}


Q_PREV_MUST = ("SPEC 1.0.0 §5 Success: \"Plugins provided a prevResult key as part of their request configuration "
               "must output it as their result, with any possible modifications made by that plugin included.\"")


@check("ADD-05", "chained after another plugin: handles prevResult (ADD, CHECK, DEL)", [16, 53],
       "SPEC: \"plugins that support a version of the CNI specification that includes the prevResult field MUST "
       "handle prevResult\"; 1.1.0 results may carry route table/scope and interface mtu", needs=["chain"])
def add_chained(ctx: Ctx):
    conf = ctx.conflist(chain_before=[_prev_entry(ctx)])
    sb = ctx.sandbox()
    cid = ctx.cid()
    res = ctx.add(conf, cid, sb)
    problems = result_problems(res, ctx.version) if ctx.s.ipam else []
    if sandbox_index(res, "eth0", sb.path) is None:
        problems.append("result lists no sandbox eth0")
    if problems:
        raise CheckFailed("chained ADD result: " + "; ".join(problems))
    if version_tuple(ctx.version) >= (0, 4, 0):
        ctx.check_ok(conf, cid, sb, what="CHECK of the chain")
    ctx.delete(conf, cid, sb, what="DEL of the chain")


@check("ADD-06", "chained ADD outputs prevResult with its own additions", [16, 17],
       Q_PREV_MUST + " (before 1.0.0: \"SHOULD echo ... unless they wish to modify or suppress\")", needs=["chain"])
def add_chained_passthrough(ctx: Ctx):
    conf = ctx.conflist(chain_before=[_prev_entry(ctx)])
    sb = ctx.sandbox()
    cid = ctx.cid()
    res = ctx.add(conf, cid, sb)
    ctx.delete(conf, cid, sb)
    names = [i.get("name") for i in res.get("interfaces") or []]
    if PREV_IF not in names:
        if version_tuple(ctx.version) < (1, 0, 0):
            raise Skip(f"the plugin suppresses prevResult, which {ctx.version} allows (\"unless they wish to modify "
                       "or suppress a previous result\")")
        raise CheckFailed(f"{ctx.version} result drops prevResult: no {PREV_IF} in interfaces {names}")
    problems = []
    pidx = names.index(PREV_IF)
    ips = [ip for ip in res.get("ips") or [] if ip.get("address") == PREV_ADDR]
    if not ips:
        problems.append(f"prevResult address {PREV_ADDR} dropped")
    elif ips[0].get("interface") != pidx:
        problems.append(f"{PREV_ADDR} now points at interfaces[{ips[0].get('interface')}], not {PREV_IF}")
    routes = [r for r in res.get("routes") or [] if r.get("dst") == PREV_ROUTE]
    if not routes:
        problems.append(f"prevResult route {PREV_ROUTE} dropped")
    elif version_tuple(ctx.version) >= (1, 1, 0) and (routes[0].get("table"), routes[0].get("scope")) != (254, 253):
        problems.append("1.1.0 route attributes table/scope dropped (statement 17)")
    dns = res.get("dns") or {}
    if not set(PREV_DNS["nameservers"]) <= set(dns.get("nameservers") or []):
        problems.append("prevResult dns.nameservers dropped")
    if sandbox_index(res, "eth0", sb.path) is None:
        problems.append("the plugin's own sandbox eth0 is missing")
    if problems:
        raise CheckFailed("; ".join(problems))


def _exhausted_pool(ctx: Ctx):
    """A one-address range whose address is taken: (conf, the holder's sandbox, the holder's cid)."""
    conf = ctx.conflist(ipam=ctx.ipam_section(range_start="10.247.0.10", range_end="10.247.0.10"))
    sb, cid = ctx.sandbox(), ctx.cid()
    ctx.add(conf, cid, sb)
    return conf, sb, cid


def _failing_add(ctx: Ctx, conf: dict, sb, cid: str, what: str) -> CniCallError:
    try:
        res = ctx.rt.add(conf, cid, sb.path)
    except CniCallError as e:
        if e.error is None:
            raise CheckFailed(f"ADD {what} failed without a CNI error object (exit {e.rc})") from None
        return e
    ctx.track(res)
    raise CheckFailed(f"ADD {what} succeeded")


@check("ADD-07", "pool exhausted: ADD fails with an error; DEL afterwards cleans up", [19, 24],
       "SPEC ADD: \"If the CNI plugin is unable to successfully complete, it MUST return with a non-zero exit code "
       "and the error result\"; the runtime then calls DEL (\"A delete must still be executed even if the add "
       "fails\")", needs=["ipam", "ranges"])
def add_pool_exhausted(ctx: Ctx):
    conf, sb_a, cid_a = _exhausted_pool(ctx)
    sb, cid = ctx.sandbox(), ctx.cid()
    _failing_add(ctx, conf, sb, cid, "with the only address of the range taken")
    ctx.delete(conf, cid, sb, what="DEL after the failed ADD", use_cache=False)
    if ctx.reservations() != 1:
        raise CheckFailed(f"{ctx.reservations()} reservations after the failed ADD and its DEL (expected 1)")
    ctx.delete(conf, cid_a, sb_a)


@check("ADD-08", "a missing IPAM plugin is an error", [50],
       "SPEC Adding an attachment: \"Look up the executable specified in the type field. If this does not exist, "
       "then this is an error.\"; delegated plugins are found via CNI_PATH")
def add_missing_delegate(ctx: Ctx):
    conf = ctx.conflist(ipam={"type": "spc-no-such-ipam", "dataDir": str(ctx.data_dir)})
    sb, cid = ctx.sandbox(), ctx.cid()
    _failing_add(ctx, conf, sb, cid, "with a missing IPAM binary")
    ctx.call(None, "DEL", ctx.plugin_conf(conf), container_id=cid, netns=sb.path, ifname="eth0")
    sb.delete()  # the runtime's cleanup: whatever the failed ADD left in the sandbox goes with it


@check("ADD-09", "a failed ADD rolls back its own resources before returning", [19],
       "SPEC §4: \"If, on ADD, a delegated plugin fails, the upper plugin should execute again with DEL before "
       "returning failure\"; statement 19: on any ADD failure the plugin SHOULD roll back its own resources",
       needs=["ipam", "ranges"], level="SHOULD")
def add_rollback(ctx: Ctx):
    conf, sb_a, cid_a = _exhausted_pool(ctx)
    cases = [("when IPAM is out of addresses", conf),
             ("when the IPAM binary is missing",
              ctx.conflist(ipam={"type": "spc-no-such-ipam", "dataDir": str(ctx.data_dir)}))]
    for what, c in cases:
        sb, cid = ctx.sandbox(), ctx.cid()
        host_before = oracle.link_names(ctx.host.name)
        resv_before = ctx.reservations()
        _failing_add(ctx, c, sb, cid, what)
        problems = []
        if oracle.link_names(sb.name) != {"lo"}:
            problems.append(f"sandbox keeps {sorted(oracle.link_names(sb.name) - {'lo'})}")
        if oracle.link_names(ctx.host.name) != host_before:
            problems.append(f"host links changed: {sorted(oracle.link_names(ctx.host.name) ^ host_before)}")
        if ctx.reservations() != resv_before:
            problems.append(f"IPAM reservations {resv_before} -> {ctx.reservations()}")
        if oracle.nft_references(ctx.host.name, {cid}):
            problems.append("nftables state for the failed attachment")
        if problems:
            raise CheckFailed(f"failed ADD {what} not rolled back (before the runtime's DEL): " + "; ".join(problems))
        ctx.call(None, "DEL", ctx.plugin_conf(c), container_id=cid, netns=sb.path, ifname="eth0")
        sb.delete()
    ctx.delete(conf, cid_a, sb_a)


# =========================================================================== DEL


@check("DEL-01", "DEL twice succeeds", [20], Q_DEL, needs=["ipam"])
def del_twice(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    ctx.delete(conf, cid, sb, prev_result=res, what="first DEL")
    ctx.delete(conf, cid, sb, prev_result=res, what="second DEL (same prevResult)")
    ctx.delete(conf, cid, sb, use_cache=False, what="third DEL (no prevResult)")


@check("DEL-02", "DEL succeeds and cleans up when the netns is gone", [21, 24, 25], Q_DEL_CLEAN, needs=["ipam"],
       level="MUST/SHOULD")
def del_netns_gone(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    sb.delete()
    ctx.delete(conf, cid, sb.path, what="DEL with CNI_NETNS pointing at a deleted namespace")


@check("DEL-03", "DEL without CNI_NETNS succeeds and releases everything", [5, 24, 25],
       "SPEC DEL: CNI_NETNS is optional; " + Q_DEL_CLEAN, needs=["ipam"], level="MUST/SHOULD")
def del_no_netns(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    ctx.delete(conf, cid, None, what="DEL without CNI_NETNS")
    if ctx.reservations():
        raise CheckFailed("DEL without CNI_NETNS kept the IPAM reservation (statement 24)")
    sb.delete()  # the runtime removes the sandbox afterwards, taking the container end with it


@check("DEL-04", "DEL succeeds and cleans up when the interface is already gone", [22, 25], Q_DEL_CLEAN,
       needs=["ipam"], level="MUST/SHOULD")
def del_iface_gone(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    sb.sh("ip", "link", "del", "eth0")
    ctx.delete(conf, cid, sb, what="DEL after the interface was removed")


@check("DEL-05", "DEL without prevResult succeeds and cleans up", [23, 25],
       "SPEC: the runtime MUST add prevResult on DEL \"except that it may be omitted for DEL if not available\"",
       needs=["ipam", "check"], level="MUST/SHOULD")
def del_no_prev(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    ctx.delete(conf, cid, sb, use_cache=False, what="DEL without prevResult")


@check("DEL-06", "DEL of an attachment never added succeeds", [26], Q_DEL)
def del_never_added(ctx: Ctx):
    conf = ctx.conflist()
    sb = ctx.sandbox()
    ctx.delete(conf, ctx.cid(), sb, what="DEL of a never-added attachment")
    ctx.delete(conf, ctx.cid(), None, what="DEL of a never-added attachment without CNI_NETNS")


@check("DEL-07", "DEL succeeds when the plugin's firewall/NAT state is already gone", [20, 22], Q_DEL,
       needs=["ipam"])
def del_rules_gone(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    if not _has_rules(ctx, cid, res):
        ctx.delete(conf, cid, sb)
        raise Skip("the plugin installed no nftables/iptables state for the attachment (ipMasq unsupported?)")
    ctx.host.sh("nft", "flush", "ruleset")
    ctx.delete(conf, cid, sb, what="DEL after the host ruleset was flushed")


# =========================================================================== CHECK


def _check_fails(ctx: Ctx, conf, cid, sb, what: str, **kw) -> None:
    try:
        ctx.rt.check(conf, cid, sb.path, **kw)
    except CniCallError as e:
        if e.error is None:
            raise CheckFailed(f"CHECK {what} failed without a CNI error object (exit {e.rc})") from None
        return
    raise CheckFailed(f"CHECK succeeded although {what}")


@check("CHK-01", "CHECK with a config version below 0.4.0 is rejected with code 1", [27],
       "SPEC 0.4.0 introduced CHECK; (lib) \"config version does not allow CHECK\" code 1", level="lib")
def chk_old_version(ctx: Ctx):
    old = [v for v in ctx.s.main_versions if v in ALL_VERSIONS and version_tuple(v) < (0, 4, 0)]
    if not old:
        raise Skip("the plugin supports no version below 0.4.0")
    _, pc = _sandbox_conf(ctx, old[-1])
    sb = ctx.sandbox()
    expect_error(ctx.call(None, "CHECK", pc, **_env(ctx, sb)), [1], f"CHECK with cniVersion {old[-1]}")


@check("CHK-02", "CHECK right after ADD succeeds and prints nothing", [31, 34],
       "SPEC CHECK: \"The plugin must handle CHECK being called immediately after an ADD\"; success prints nothing",
       needs=["check"])
def chk_after_add(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    c = ctx.call(None, "CHECK", ctx.plugin_conf(conf, prev_result=res), container_id=cid, netns=sb.path,
                 ifname="eth0")
    expect_ok(c, "CHECK right after ADD")
    if c.stdout.strip():
        raise CheckFailed(f"CHECK printed on stdout: {' '.join(c.stdout.split())[:100]}")
    ctx.delete(conf, cid, sb)


@check("CHK-03", "CHECK without prevResult fails", [28],
       "SPEC CHECK: \"The plugin must consult the prevResult to determine the expected interfaces and addresses.\"",
       needs=["check"])
def chk_no_prev(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    c = ctx.call(None, "CHECK", ctx.plugin_conf(conf), container_id=cid, netns=sb.path, ifname="eth0")
    expect_error(c, None, "CHECK without prevResult")
    ctx.delete(conf, cid, sb)


def _broken_then_check(ctx: Ctx, breaker, what: str, *, strict_teardown: bool = True, **opts) -> None:
    """ADD, CHECK, break one thing, CHECK must fail, DEL. With ``strict_teardown=False`` (the
    breakage removes what a DEL may legitimately rely on) the DEL is best effort and the check
    has no leak check: teardown of damaged attachments is what DEL-02..DEL-07 judge."""
    conf, sb, cid, res = _add_one(ctx, **opts)
    ctx.check_ok(conf, cid, sb, what="CHECK before breaking anything")
    breaker(ctx, sb, res)
    _check_fails(ctx, conf, cid, sb, what)
    if strict_teardown:
        ctx.delete(conf, cid, sb)
    else:
        ctx.call(None, "DEL", ctx.plugin_conf(conf, prev_result=res), container_id=cid, netns=sb.path, ifname="eth0")


@check("CHK-04", "CHECK fails when the interface is missing", [28], Q_CHECK, needs=["check"], level="SHOULD",
       leak_check=False)
def chk_iface_missing(ctx: Ctx):
    _broken_then_check(ctx, lambda c, sb, r: sb.sh("ip", "link", "del", "eth0"), "eth0 was deleted",
                       strict_teardown=False)


@check("CHK-05", "CHECK fails when the interface has another MAC", [28], Q_CHECK, needs=["check"], level="SHOULD")
def chk_wrong_mac(ctx: Ctx):
    _broken_then_check(ctx, lambda c, sb, r: sb.sh("ip", "link", "set", "eth0", "address", "02:53:50:43:00:01"),
                       "eth0's MAC was changed")


@check("CHK-06", "CHECK fails when an address is missing", [29], Q_CHECK, needs=["ipam", "check"], level="SHOULD",
       leak_check=False)
def chk_addr_missing(ctx: Ctx):
    def breaker(c, sb, res):
        for a in result_addresses(res):
            sb.sh("ip", "addr", "del", a, "dev", "eth0")

    _broken_then_check(ctx, breaker, "the addresses of eth0 were removed", strict_teardown=False)


@check("CHK-07", "CHECK fails when a route is missing", [29], Q_CHECK, needs=["ipam", "check"], level="SHOULD")
def chk_route_missing(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    dsts = [r.get("dst") for r in res.get("routes") or []]
    if ROUTE_DST not in dsts:
        ctx.delete(conf, cid, sb)
        raise CheckFailed(f"ADD result does not list the IPAM route {ROUTE_DST} (routes: {dsts})")
    ctx.check_ok(conf, cid, sb, what="CHECK before breaking anything")
    sb.sh("ip", "route", "del", ROUTE_DST)
    _check_fails(ctx, conf, cid, sb, f"route {ROUTE_DST} was removed")
    ctx.delete(conf, cid, sb)


@check("CHK-08", "CHECK fails when the IPAM reservation is gone (IPAM CHECK is called)", [30, 33],
       "SPEC CHECK: \"should return an error if ... IP reservations ... are missing\"; \"should call CHECK on any "
       "delegated (e.g. IPAM) plugins and pass any errors on to its caller\"", needs=["ipam", "check"], level="SHOULD")
def chk_reservation_gone(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    ctx.check_ok(conf, cid, sb, what="CHECK before breaking anything")
    c = ctx.call(ctx.ipam_type, "DEL", ctx.plugin_conf(conf, prev_result=res), container_id=cid, netns=sb.path,
                 ifname="eth0")
    expect_ok(c, "IPAM DEL (run directly, to drop the reservation)")
    if ctx.reservations():
        raise CheckFailed("IPAM DEL run directly did not release the reservation")
    _check_fails(ctx, conf, cid, sb, "the IPAM reservation was released")
    ctx.delete(conf, cid, sb)


@check("CHK-09", "CHECK fails when the plugin's firewall/NAT rules are gone", [30],
       "SPEC CHECK: \"The plugin should return an error if other resources not tracked in the Result type such as "
       "the following are missing or are in an invalid state: Firewall rules ...\"", needs=["ipam", "check"],
       level="SHOULD", leak_check=False)
def chk_rules_gone(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    if not _has_rules(ctx, cid, res):
        ctx.delete(conf, cid, sb)
        raise Skip("the plugin installed no nftables/iptables state for the attachment (ipMasq unsupported?)")
    ctx.check_ok(conf, cid, sb, what="CHECK before breaking anything")
    ctx.host.sh("nft", "flush", "ruleset")
    _check_fails(ctx, conf, cid, sb, "the host's nftables ruleset was flushed")
    ctx.call(None, "DEL", ctx.plugin_conf(conf, prev_result=res), container_id=cid, netns=sb.path, ifname="eth0")


def _has_rules(ctx: Ctx, cid: str, res: dict) -> bool:
    tokens = {cid, *(a.split("/")[0] for a in result_addresses(res))}
    return bool(oracle.nft_references(ctx.host.name, tokens))


@check("CHK-10", "CHECK tolerates an address and a route added by a later chained plugin", [32],
       "SPEC CHECK: \"The plugin must allow for a later chained plugin to have modified networking resources, e.g. "
       "routes, on ADD.\"", needs=["ipam", "check"])
def chk_later_plugin(ctx: Ctx):
    conf, sb, cid, res = _add_one(ctx)
    idx = sandbox_index(res, "eth0", sb.path)
    sb.sh("ip", "addr", "add", "198.51.100.77/24", "dev", "eth0")
    sb.sh("ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.1", "dev", "eth0")
    final = copy.deepcopy(res)
    ip = {"address": "198.51.100.77/24"}
    if idx is not None:
        ip["interface"] = idx
    if version_tuple(ctx.version) < (1, 0, 0):
        ip["version"] = "4"
    final.setdefault("ips", []).append(ip)
    final.setdefault("routes", []).append({"dst": "203.0.113.0/24", "gw": "198.51.100.1"})
    ctx.check_ok(conf, cid, sb, prev_result=final, what="CHECK with a later plugin's address and route")
    # DEL runs in reverse order: the later plugin removes its address and route first
    sb.sh("ip", "route", "del", "203.0.113.0/24", "via", "198.51.100.1", "dev", "eth0")
    sb.sh("ip", "addr", "del", "198.51.100.77/24", "dev", "eth0")
    ctx.delete(conf, cid, sb, prev_result=final)


@check("CHK-11", "CHECK right after ADD passes with an IPAM route without gw", [31, 29],
       "SPEC CHECK: \"The plugin must handle CHECK being called immediately after an ADD\"; routes[].gw: \"If unset, "
       "a value in gateway in the ips array may be used\" (the SPEC's own examples use {\"dst\": ...} only)",
       needs=["ipam", "check"])
def chk_route_without_gw(ctx: Ctx):
    conf = ctx.conflist(ipam=ctx.ipam_section(routes="nogw"))
    sb, cid = ctx.sandbox(), ctx.cid()
    ctx.add(conf, cid, sb)
    ctx.check_ok(conf, cid, sb, what="CHECK after ADD (IPAM route without gw)")
    ctx.delete(conf, cid, sb)


# =========================================================================== STATUS


def _status_conf(ctx: Ctx, **kw) -> dict:
    return ctx.plugin_conf(ctx.conflist(**kw))


@check("STA-01", "STATUS with a config version below 1.1.0 is rejected with code 1", [35],
       "SPEC 1.1.0 introduced STATUS; (lib) skel: code 1 for older configs", needs=["status"], level="lib")
def sta_old_version(ctx: Ctx):
    pc = _status_conf(ctx, version="1.0.0")
    expect_error(ctx.call(None, "STATUS", pc), [1], "STATUS with cniVersion 1.0.0")


@check("STA-02", "STATUS succeeds silently when the plugin is ready", [36],
       "SPEC STATUS: \"If the plugin is ready to service ADD requests, it must exit with code 0\"",
       needs=["status", "ipam"])
def sta_ready(ctx: Ctx):
    conf = ctx.conflist()
    pc = ctx.plugin_conf(conf)
    c = ctx.call(None, "STATUS", pc)
    expect_ok(c, "STATUS on a fresh network")
    if c.stdout.strip():
        raise CheckFailed(f"STATUS printed on stdout: {' '.join(c.stdout.split())[:100]}")
    sb, cid = ctx.sandbox(), ctx.cid()
    ctx.add(conf, cid, sb)
    expect_ok(ctx.call(None, "STATUS", pc), "STATUS with one attachment")
    ctx.delete(conf, cid, sb)


@check("STA-03", "STATUS is forwarded to the IPAM plugin and fails when it fails", [36],
       "SPEC STATUS: \"Plugins that delegate ... must forward STATUS\"; not ready -> code 50/51",
       needs=["status"])
def sta_forward(ctx: Ctx):
    pc = _status_conf(ctx, ipam=ctx.ipam_section(fake=True, fail_on=("STATUS",)))
    c = ctx.call(None, "STATUS", pc)
    log = (ctx.data_dir / "spc-net" / "calls.log")
    called = log.exists() and '"STATUS"' in log.read_text()
    if not called:
        raise CheckFailed("STATUS was not forwarded to the IPAM plugin")
    expect_error(c, [50, 51], "STATUS while the IPAM plugin answers 50")


def _exhausted(ctx: Ctx):
    conf = ctx.conflist(ipam=ctx.ipam_section(range_start="10.247.0.10", range_end="10.247.0.10"))
    sb, cid = ctx.sandbox(), ctx.cid()
    ctx.add(conf, cid, sb)
    return conf, sb, cid


@check("STA-04", "STATUS reports an exhausted pool with code 50/51", [36],
       "SPEC STATUS: \"If the plugin is not able to service ADD requests, it must exit with a non-zero code\" "
       "(50: plugin not available)", needs=["status", "ipam", "ranges"])
def sta_exhausted(ctx: Ctx):
    conf, sb, cid = _exhausted(ctx)
    expect_error(ctx.call(None, "STATUS", ctx.plugin_conf(conf)), [50, 51], "STATUS with the pool exhausted")
    ctx.delete(conf, cid, sb)


@check("STA-05", "ADD and DEL still work after STATUS reported an error", [37],
       "SPEC STATUS: \"the plugin must not rely on STATUS being called\" (it is purely informational)",
       needs=["status", "ipam", "ranges"])
def sta_then_work(ctx: Ctx):
    conf, sb, cid = _exhausted(ctx)
    ctx.call(None, "STATUS", ctx.plugin_conf(conf))
    ctx.delete(conf, cid, sb, what="DEL after a failed STATUS")
    expect_ok(ctx.call(None, "STATUS", ctx.plugin_conf(conf)), "STATUS after the pool was freed")
    sb2, cid2 = ctx.sandbox(), ctx.cid()
    ctx.add(conf, cid2, sb2)
    ctx.delete(conf, cid2, sb2)


# =========================================================================== GC


def _gc_call(ctx: Ctx, conf: dict, valid, *, current: bool = True, legacy: bool = True, rt: Runtime | None = None):
    pc = ctx.plugin_conf(conf)
    items = [{"containerID": c, "ifname": i} for c, i in valid]
    if current:
        pc["cni.dev/valid-attachments"] = items
    if legacy:
        pc["cni.dev/attachments"] = items
    return ctx.call(None, "GC", pc, rt=rt)


@check("GC-01", "GC with a config version below 1.1.0 is rejected with code 1", [38],
       "SPEC 1.1.0 introduced GC; (lib) skel: code 1 for older configs", needs=["gc"], level="lib")
def gc_old_version(ctx: Ctx):
    conf = ctx.conflist("1.0.0")
    expect_error(_gc_call(ctx, conf, []), [1], "GC with cniVersion 1.0.0")


def _keep_and_stale(ctx: Ctx, conf: dict):
    keep, stale = ctx.sandbox(), ctx.sandbox()
    cid_keep, cid_stale = ctx.cid(), ctx.cid()
    ctx.add(conf, cid_keep, keep)
    res_stale = ctx.add(conf, cid_stale, stale)
    stale.delete()  # the container died without a DEL (crash, reboot)
    return keep, cid_keep, cid_stale, res_stale


def _assert_stale_gone(ctx: Ctx, cid_stale: str, res_stale: dict, expect_resv: int, what: str) -> None:
    tokens = {cid_stale, *(a.split("/")[0] for a in result_addresses(res_stale))}
    refs = oracle.nft_references(ctx.host.name, tokens)
    if refs:
        raise CheckFailed(f"{what}: nftables state of the stale attachment left: {refs[0]}")
    n = ctx.reservations()
    if n != expect_resv:
        raise CheckFailed(f"{what}: {n} IPAM reservations, expected {expect_resv}")


@check("GC-02", "GC removes stale attachments, keeps valid ones, prints nothing", [39, 43],
       "SPEC GC: \"plugins should remove as many stale resources as possible\" for attachments not in "
       "cni.dev/valid-attachments", needs=["gc", "ipam"], level="SHOULD")
def gc_stale(ctx: Ctx):
    conf = ctx.conflist()
    keep, cid_keep, cid_stale, res_stale = _keep_and_stale(ctx, conf)
    c = _gc_call(ctx, conf, [(cid_keep, "eth0")], legacy=False)
    expect_ok(c, "GC")
    if c.stdout.strip():
        raise CheckFailed(f"GC printed on stdout: {' '.join(c.stdout.split())[:100]}")
    _assert_stale_gone(ctx, cid_stale, res_stale, 1, "after GC")
    ctx.check_ok(conf, cid_keep, keep, what="CHECK of the kept attachment after GC") \
        if version_tuple(ctx.version) >= (0, 4, 0) else None
    ctx.delete(conf, cid_keep, keep)


@check("GC-03", "GC honours the legacy key cni.dev/attachments", [40],
       "(lib) libcni sends both cni.dev/valid-attachments and the pre-rename cni.dev/attachments",
       needs=["gc", "ipam"], level="lib")
def gc_legacy(ctx: Ctx):
    conf = ctx.conflist()
    keep, cid_keep, cid_stale, res_stale = _keep_and_stale(ctx, conf)
    c = _gc_call(ctx, conf, [(cid_keep, "eth0")], current=False)
    expect_ok(c, "GC with only cni.dev/attachments")
    _assert_stale_gone(ctx, cid_stale, res_stale, 1, "after GC with the legacy key")
    ctx.delete(conf, cid_keep, keep)


@check("GC-04", "GC is forwarded to IPAM and continues past its failure", [41],
       "SPEC GC: \"Plugins that delegate ... MUST forward GC\"; \"should continue on errors and report them\"",
       needs=["gc"])
def gc_forward(ctx: Ctx):
    conf = ctx.conflist(ipam=ctx.ipam_section(fake=True, fail_on=("GC",)))
    sb, cid = ctx.sandbox(), ctx.cid()
    res = ctx.add(conf, cid, sb)
    sb.delete()
    c = _gc_call(ctx, conf, [])
    log = ctx.data_dir / "spc-net" / "calls.log"
    if not (log.exists() and '"GC"' in log.read_text()):
        raise CheckFailed("GC was not forwarded to the IPAM plugin")
    if c.rc == 0:
        raise CheckFailed("GC succeeded although the IPAM plugin's GC failed (errors must be reported)")
    tokens = {cid, *(a.split("/")[0] for a in result_addresses(res))}
    refs = oracle.nft_references(ctx.host.name, tokens)
    if refs:
        raise CheckFailed(f"GC stopped at the IPAM failure: own stale state left: {refs[0]}")
    ctx.delete(conf, cid, sb.path, what="DEL of the stale attachment")


@check("GC-05", "GC with an empty valid list removes every attachment of the network", [42],
       "SPEC GC: cni.dev/valid-attachments lists all still-valid attachments; none listed = none valid",
       needs=["gc", "ipam"], level="SHOULD")
def gc_empty(ctx: Ctx):
    conf = ctx.conflist()
    sbs = [ctx.sandbox(), ctx.sandbox()]
    results = [(ctx.cid(), None) for _ in sbs]
    results = [(cid, ctx.add(conf, cid, sb)) for (cid, _), sb in zip(results, sbs)]
    for sb in sbs:
        sb.delete()
    expect_ok(_gc_call(ctx, conf, []), "GC with an empty list")
    for cid, res in results:
        _assert_stale_gone(ctx, cid, res, 0, "after GC with an empty list")


@check("GC-06", "GC of one network leaves other networks alone", [39],
       "SPEC GC: the keep-list is per network; GC \"of that network\" only", needs=["gc", "ipam"], level="MUST")
def gc_other_network(ctx: Ctx):
    conf_a = ctx.conflist()
    conf_b = ctx.conflist(name=NETWORK2, bridge=BRIDGE2, ipam=ctx.ipam_section(subnet=SUBNET2))
    sb_a, sb_b = ctx.sandbox(), ctx.sandbox()
    cid_a, cid_b = ctx.cid(), ctx.cid()
    res_a = ctx.add(conf_a, cid_a, sb_a)
    res_b = ctx.add(conf_b, cid_b, sb_b)
    tokens_b = {cid_b, *(a.split("/")[0] for a in result_addresses(res_b))}
    rules_b = oracle.nft_references(ctx.host.name, tokens_b)
    sb_a.delete()
    expect_ok(_gc_call(ctx, conf_a, []), f"GC of network {conf_a['name']}")
    _assert_stale_gone(ctx, cid_a, res_a, 0, "after GC")
    if ctx.reservations(NETWORK2) != 1:
        raise CheckFailed(f"GC of {conf_a['name']} removed the reservation of network {NETWORK2}")
    if rules_b and oracle.nft_references(ctx.host.name, tokens_b) != rules_b:
        raise CheckFailed(f"GC of {conf_a['name']} changed the nftables state of network {NETWORK2}")
    if version_tuple(ctx.version) >= (0, 4, 0):
        ctx.check_ok(conf_b, cid_b, sb_b, what=f"CHECK of the {NETWORK2} attachment after GC of {conf_a['name']}")
    ctx.delete(conf_b, cid_b, sb_b)


# =========================================================================== concurrency


def _parallel(fn, n: int) -> list:
    out: list = [None] * n
    errs: list = []

    def go(i):
        try:
            out[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errs.append(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errs:
        e = errs[0]
        raise CheckFailed(f"{len(errs)} of {n} parallel calls failed: {e}") from None
    return out


@check("CON-01", "16 parallel ADDs get distinct addresses; parallel DELs leave nothing", [44],
       "SPEC Lifecycle: \"Plugins must handle being executed concurrently across different containers. If "
       "necessary, they must implement locking on shared resources (e.g. IPAM databases).\"", needs=["ipam"])
def con_parallel(ctx: Ctx):
    n = 16
    conf = ctx.conflist()
    sbs = [ctx.sandbox() for _ in range(n)]
    cids = [ctx.cid() for _ in range(n)]
    results = _parallel(lambda i: ctx.add(conf, cids[i], sbs[i]), n)
    addrs = [tuple(result_addresses(r)) for r in results]
    dup = {a for a in addrs if addrs.count(a) > 1}
    if dup:
        raise CheckFailed(f"duplicate addresses handed out: {sorted(dup)}")
    for i in range(n):
        have = sorted(oracle.addresses(sbs[i].name, "eth0"))
        if have != sorted(addrs[i]):
            raise CheckFailed(f"container {i}: result {list(addrs[i])} but eth0 has {have}")
    if ctx.reservations() != n:
        raise CheckFailed(f"{ctx.reservations()} reservations for {n} attachments")
    _parallel(lambda i: ctx.delete(conf, cids[i], sbs[i]), n)


@check("CON-02", "the first two ADDs on a fresh host race and both succeed (3 rounds)", [45],
       "SPEC Lifecycle: \"Plugins must handle being executed concurrently across different containers\"; "
       "statement 45: concurrent first ADDs creating shared host objects (bridge, gateway address, NAT chains) "
       "must both succeed (plugins#366)")
def con_first_race(ctx: Ctx):
    for rnd in range(3):
        host, rt = (ctx.host, ctx.rt) if rnd == 0 else ctx.new_host()
        conf = ctx.conflist()
        sbs = [ctx.sandbox(), ctx.sandbox()]
        cids = [ctx.cid(), ctx.cid()]
        try:
            results = _parallel(lambda i: ctx.add(conf, cids[i], sbs[i], rt=rt), 2)
        except CheckFailed as e:
            raise CheckFailed(f"round {rnd + 1}: {e}") from None
        if ctx.s.ipam and result_addresses(results[0]) == result_addresses(results[1]):
            raise CheckFailed(f"round {rnd + 1}: both got {result_addresses(results[0])}")
        for i in range(2):
            ctx.delete(conf, cids[i], sbs[i], rt=rt)


# =========================================================================== config / args


@check("CFG-01", "capability args the plugin did not declare are ignored", [46],
       "SPEC: runtimeConfig carries capability args the plugin declared; CNI CONVENTIONS.md: plugins ignore what "
       "they do not understand")
def cfg_capabilities(ctx: Ctx):
    conf = ctx.conflist()
    sb, cid = ctx.sandbox(), ctx.cid()
    pc = ctx.plugin_conf(conf)
    pc["runtimeConfig"] = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                           "bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000},
                           "spcUnknownCapability": {"x": 1}}
    c = ctx.call(None, "ADD", pc, container_id=cid, netns=sb.path, ifname="eth0")
    expect_ok(c, "ADD with undeclared runtimeConfig capabilities")
    ctx.track(c.json)
    d = ctx.call(None, "DEL", {**pc, "prevResult": c.json} if version_tuple(ctx.version) >= (0, 4, 0) else pc,
                 container_id=cid, netns=sb.path, ifname="eth0")
    expect_ok(d, "DEL with undeclared runtimeConfig capabilities")


@check("CFG-02", "reserved keys added by runtimes (args, runtimeConfig, cni.dev/*) are accepted", [47],
       "SPEC: args may carry arbitrary data \"which should be ignored by plugins if not understood\"; runtimeConfig, "
       "args and cni.dev/* are reserved, generated by the runtime")
def cfg_reserved(ctx: Ctx):
    conf = ctx.conflist(args={"cni": {"labels": [{"key": "app", "value": "spc"}], "spcUnknownArg": True},
                              "spc": "x"})
    conf["plugins"][-1]["cni.dev/spc-test"] = {"x": [1, 2]}
    sb, cid = ctx.sandbox(), ctx.cid()
    ctx.add(conf, cid, sb)
    if version_tuple(ctx.version) >= (0, 4, 0):
        ctx.check_ok(conf, cid, sb)
    ctx.delete(conf, cid, sb)


@check("CFG-03", "args.cni.ips wins over CNI_ARGS IP=", [49],
       "CNI CONVENTIONS.md: \"If a runtime passes an equivalent key via args (eg the ips args Area and the CNI_ARGS IP "
       "Field) and the plugin understands args, the plugin must ignore the CNI_ARGS Field.\"",
       needs=["ipam", "ip_args"])
def cfg_args_precedence(ctx: Ctx):
    conf = ctx.conflist(args={"cni": {"ips": ["10.247.0.42"]}})
    sb, cid = ctx.sandbox(), ctx.cid()
    res = ctx.add(conf, cid, sb, cni_args="IgnoreUnknown=1;IP=10.247.0.43")
    got = [a.split("/")[0] for a in result_addresses(res)]
    ctx.delete(conf, cid, sb, cni_args="IgnoreUnknown=1;IP=10.247.0.43")
    if got != ["10.247.0.42"]:
        raise CheckFailed(f"got {got}, expected args.cni.ips 10.247.0.42 (CNI_ARGS asked for 10.247.0.43)")


# =========================================================================== output


def _one_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


@check("OUT-01", "stdout carries only the JSON result or error (logs go to stderr)", [52, 34],
       "SPEC: success and error JSON are printed to stdout; \"In addition, stderr can be used for unstructured "
       "output such as logs.\"", needs=["ipam"])
def out_stdout_json(ctx: Ctx):
    conf = ctx.conflist()
    pc = ctx.plugin_conf(conf)
    sb, cid = ctx.sandbox(), ctx.cid()
    problems = []
    env = {"container_id": cid, "netns": sb.path, "ifname": "eth0"}
    add = ctx.call(None, "ADD", pc, **env)
    expect_ok(add, "ADD")
    if not _one_json(add.stdout):
        problems.append("ADD stdout is not exactly one JSON document")
    else:
        ctx.track(add.json)
    prev = add.json if _one_json(add.stdout) else None
    calls = []
    if version_tuple(ctx.version) >= (0, 4, 0) and prev is not None:
        calls.append(("CHECK", ctx.call(None, "CHECK", {**pc, "prevResult": prev}, **env)))
    calls.append(("DEL", ctx.call(None, "DEL", {**pc, "prevResult": prev} if prev and
                                  version_tuple(ctx.version) >= (0, 4, 0) else pc, **env)))
    calls.append(("second DEL", ctx.call(None, "DEL", pc, **env)))
    for what, c in calls:
        if c.stdout.strip() and not _one_json(c.stdout):
            problems.append(f"{what} stdout is not JSON: {' '.join(c.stdout.split())[:60]!r}")
        elif c.rc == 0 and c.stdout.strip() and what.startswith("CHECK"):
            problems.append("CHECK success printed output")
    err = ctx.call(None, "ADD", {**pc, "cniVersion": "99.0.0"}, **env)
    if err.stdout.strip() and not _one_json(err.stdout):
        problems.append(f"error stdout is not one JSON document: {' '.join(err.stdout.split())[:60]!r}")
    ver = ctx.call(None, "VERSION", {"cniVersion": ctx.version})
    if not _one_json(ver.stdout):
        problems.append("VERSION stdout is not exactly one JSON document")
    if problems:
        raise CheckFailed("; ".join(problems))


@check("OUT-02", "errors: non-zero exit and {code, msg} JSON on stdout", [1, 2],
       "SPEC: \"Errors must be indicated by a non-zero return code and the following JSON being printed to stdout: "
       "{cniVersion, code, msg, details}\"")
def out_error_json(ctx: Ctx):
    _, pc = _sandbox_conf(ctx)
    sb = ctx.sandbox()
    cases = [
        ("ADD with cniVersion 99.0.0", ctx.call(None, "ADD", {**pc, "cniVersion": "99.0.0"}, **_env(ctx, sb))),
        ("ADD with truncated JSON", ctx.call(None, "ADD", b"{", **_env(ctx, sb))),
        ("ADD without CNI_IFNAME", ctx.call(None, "ADD", pc, **_env(ctx, sb, ifname=None))),
    ]
    for what, c in cases:
        if c.rc == 0:
            raise CheckFailed(f"{what}: exit 0")
        try:
            err = json.loads(c.stdout)
        except ValueError:
            where = "stderr" if c.error else "neither stdout nor stderr"
            raise CheckFailed(f"{what}: error JSON not on stdout (found on {where})") from None
        if not isinstance(err, dict) or not isinstance(err.get("code"), int) or isinstance(err.get("code"), bool):
            raise CheckFailed(f"{what}: error has no integer code: {c.stdout.strip()[:80]}")
        if not isinstance(err.get("msg"), str) or not err["msg"]:
            raise CheckFailed(f"{what}: error has no msg")


# =========================================================================== IPAM plugin run directly


def _ipam_conf(ctx: Ctx, version: str | None = None) -> dict:
    return ctx.plugin_conf(ctx.conflist(version))


@check("IPM-01", "IPAM ADD returns an abbreviated result (no interfaces, no ips[].interface)", [18],
       "SPEC: \"IPAM plugins should return an abbreviated Result structure\" (interfaces \"omitted by IPAM plugins\")",
       needs=["ipam", "chain"])
def ipm_abbreviated(ctx: Ctx):
    pc = _ipam_conf(ctx)
    sb, cid = ctx.sandbox(), ctx.cid()
    env = {"container_id": cid, "netns": sb.path, "ifname": "eth0"}
    c = ctx.call(ctx.ipam_type, "ADD", pc, **env)
    expect_ok(c, "IPAM ADD")
    res = c.json
    ctx.track(res)
    problems = result_problems(res, ctx.version, ipam_only=True)
    if problems:
        ctx.call(ctx.ipam_type, "DEL", pc, **env)
        raise CheckFailed("IPAM result: " + "; ".join(problems))
    if ctx.reservations() != 1:
        raise CheckFailed(f"{ctx.reservations()} reservations after one IPAM ADD")
    expect_ok(ctx.call(ctx.ipam_type, "DEL", pc, **env), "IPAM DEL")


@check("IPM-02", "IPAM VERSION and supportedVersions", [10, 11],
       "SPEC VERSION; statement 11 (0.3.1, 0.4.0, 1.0.0, 1.1.0)", needs=["ipam"], leak_check=False, level="MUST/SHOULD")
def ipm_version(ctx: Ctx):
    c = ctx.call(ctx.ipam_type, "VERSION", {"cniVersion": ctx.version})
    problems = _version_call_problems(c, "IPAM VERSION")
    if not problems:
        missing = [v for v in MODERN if v not in (c.json.get("supportedVersions") or [])]
        if missing:
            problems.append(f"IPAM supportedVersions lacks {', '.join(missing)}")
    if problems:
        raise CheckFailed("; ".join(problems))


@check("IPM-03", "IPAM DEL is idempotent and works for never-added attachments", [20, 26], Q_DEL,
       needs=["ipam"])
def ipm_del(ctx: Ctx):
    pc = _ipam_conf(ctx)
    sb = ctx.sandbox()
    expect_ok(ctx.call(ctx.ipam_type, "DEL", pc, container_id=ctx.cid(), netns=sb.path, ifname="eth0"),
              "IPAM DEL of a never-added attachment")
    cid = ctx.cid()
    env = {"container_id": cid, "netns": None, "ifname": "eth0"}
    add = ctx.call(ctx.ipam_type, "ADD", pc, **{**env, "netns": sb.path})
    expect_ok(add, "IPAM ADD")
    ctx.track(add.json)
    expect_ok(ctx.call(ctx.ipam_type, "DEL", pc, **env), "IPAM DEL (no CNI_NETNS)")
    expect_ok(ctx.call(ctx.ipam_type, "DEL", pc, **env), "second IPAM DEL")


@check("IPM-04", "IPAM GC releases what is not in the valid list", [39, 42, 43],
       "SPEC GC: IPAM plugins release reservations not in cni.dev/valid-attachments", needs=["ipam", "gc_ipam"],
       level="SHOULD")
def ipm_gc(ctx: Ctx):
    pc = _ipam_conf(ctx, "1.1.0")
    cids = [ctx.cid(), ctx.cid()]
    sb = ctx.sandbox()
    for cid in cids:
        c = ctx.call(ctx.ipam_type, "ADD", pc, container_id=cid, netns=sb.path, ifname="eth0")
        expect_ok(c, "IPAM ADD")
        ctx.track(c.json)
    gc = {**pc, "cni.dev/valid-attachments": [{"containerID": cids[0], "ifname": "eth0"}]}
    c = ctx.call(ctx.ipam_type, "GC", gc)
    expect_ok(c, "IPAM GC")
    if c.stdout.strip():
        raise CheckFailed("IPAM GC printed on stdout")
    if ctx.reservations() != 1:
        raise CheckFailed(f"{ctx.reservations()} reservations after GC keeping one of two")
    expect_ok(ctx.call(ctx.ipam_type, "GC", {**pc, "cni.dev/valid-attachments": []}), "IPAM GC with an empty list")
    if ctx.reservations():
        raise CheckFailed("IPAM GC with an empty list kept reservations")

