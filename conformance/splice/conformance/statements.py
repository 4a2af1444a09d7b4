"""The numbered testable statements every conformance check covers.

Each check (:mod:`splice.conformance.checks`) names the statements it covers by number.
The statements restate the CNI specification (containernetworking/cni ``SPEC.md``, spec
1.1.0, and ``CONVENTIONS.md``) one testable sentence at a time; statements marked ``lib``
describe behaviour of the reference Go library (containernetworking/cni ``pkg/skel``,
``pkg/types``, ``libcni``) that runtimes rely on, and ``inference`` marks a reading of the
spec rather than its words. Every statement names its upstream source.

Statements 1-53 are plugin obligations, each covered by at least one check; 54 is the
runtime's own contract, implemented by :mod:`splice.conformance.runtime`.

``docs/cni-statements.md`` is rendered from this module::

    python -m splice.conformance.statements > docs/cni-statements.md
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from typing import Iterable

# Upstream snapshots the sources below were read at.
CNI_REPO = "https://github.com/containernetworking/cni"
CNI_COMMIT = "3f51e8803ebbdba0ebeed735b42137e4c7302403"  # main, 2026-08-12; SPEC.md says spec 1.1.0
PLUGINS_REPO = "https://github.com/containernetworking/plugins"
PLUGINS_COMMIT = "3d27709faaa4e3619f299b962d9ea24589e28f9c"  # main, 2026-04-13

RUNTIME_ONLY = frozenset({54})  # not a plugin property: runtime.py implements it


@dataclass(frozen=True)
class Statement:
    number: int
    level: str  # MUST, SHOULD, MAY, lib (reference Go library), inference; combined with "/"
    text: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    title: str
    first: int
    last: int


GROUPS = (
    Group("Exit status and errors", 1, 2),
    Group("Environment and configuration decoding", 3, 8),
    Group("Versions and result shape", 9, 12),
    Group("ADD", 13, 19),
    Group("DEL", 20, 26),
    Group("CHECK", 27, 34),
    Group("STATUS", 35, 37),
    Group("GC", 38, 43),
    Group("Concurrency", 44, 45),
    Group("Configuration, arguments, delegation, output", 46, 53),
    Group("Runtime contract", 54, 54),
)


def _s(number: int, level: str, text: str, *sources: str) -> Statement:
    return Statement(number, level, " ".join(text.split()), sources)


STATEMENTS: dict[int, Statement] = {s.number: s for s in (
    # -- exit status and errors
    _s(1, "MUST", """A plugin exits 0 on success and non-zero on failure: "A plugin must exit with a return code
       of 0 on success, and non-zero on failure." """,
       "SPEC.md §2 Errors"),
    _s(2, "SHOULD/lib", """On failure a plugin outputs an error result `{cniVersion, code, msg, details}`. The reference
       library prints it on stdout (the spec's §2 overview says stderr, its STATUS text and spec 0.4.0 say stdout:
       "Errors must be indicated by a non-zero return code and the following JSON being printed to stdout"), and
       libcni reads stdout first.""",
       "SPEC.md §2 Errors", "SPEC.md §5 Error", "SPEC.md at spec-v0.4.0, Result",
       "cni pkg/skel/skel.go (PluginMainFuncs)", "cni pkg/types/types.go (Error.Print)",
       "cni pkg/invoke/raw_exec.go"),
    # -- environment and configuration decoding
    _s(3, "MUST/lib", """A missing `CNI_COMMAND` is rejected with code 4 (code 4: "Invalid necessary environment
       variables, like CNI_COMMAND"); an unknown command is rejected with code 4 too (lib: "unknown
       CNI_COMMAND").""",
       "SPEC.md §2 Parameters", "SPEC.md §5 Error (code 4)", "cni pkg/skel/skel.go"),
    _s(4, "MUST/lib", """ADD, CHECK and DEL without `CNI_CONTAINERID` or `CNI_IFNAME` are rejected with code 4, the
       message naming the variables (lib: "required env variables [...] missing"); so is a container ID that does not
       match the spec's syntax (alphanumeric first, then alphanumerics, `_`, `.`, `-`).""",
       "SPEC.md §2 Parameters", "SPEC.md §2 ADD, DEL, CHECK (required environment parameters)",
       "SPEC.md §5 Error (code 4)", "cni pkg/skel/skel.go (getCmdArgsFromEnv)",
       "cni pkg/utils/utils.go (ValidateContainerID)"),
    _s(5, "MUST", """ADD and CHECK without `CNI_NETNS` are rejected with code 4; for DEL `CNI_NETNS` is optional, so DEL
       without it succeeds (and still releases the IPAM reservation, statement 24).""",
       "SPEC.md §2 ADD, CHECK (CNI_NETNS required)", "SPEC.md §2 DEL (CNI_NETNS optional)", "cni pkg/skel/skel.go"),
    _s(6, "lib", """An interface name the plugin cannot use is an error ("if the plugin is unable to use this interface
       name it must return an error"); the library rejects, with code 4, names that are empty, longer than 15
       characters, `.` or `..`, or contain `/`, `:` or whitespace.""",
       "SPEC.md §2 Parameters (CNI_IFNAME)", "cni pkg/utils/utils.go (ValidateInterfaceName)"),
    _s(7, "lib", """A missing network `name`, or one that does not match the spec's syntax, is rejected with code 7
       ("Invalid network config").""",
       "SPEC.md §1 Configuration format (name)", "SPEC.md §5 Error (code 7)",
       "cni pkg/utils/utils.go (ValidateNetworkName)", "cni pkg/skel/skel.go (validateConfig)"),
    _s(8, "lib", """Configuration on stdin that is not valid JSON is rejected with code 6 ("Failed to decode
       content").""",
       "SPEC.md §5 Error (code 6)", "cni pkg/skel/skel.go (validateConfig)"),
    # -- versions and result shape
    _s(9, "SHOULD", """A configuration whose `cniVersion` the plugin does not support is rejected with code 1: "If the
       cniVersion in the network configuration is not supported by the plugin, the plugin should return an error
       code 1". The library compares the exact string with `supportedVersions`.""",
       "SPEC.md at spec-v0.4.0, Result", "SPEC.md §5 Error (code 1)", "cni pkg/version/reconcile.go"),
    _s(10, "MUST", """VERSION prints `{"cniVersion", "supportedVersions"}` and exits 0, whatever the other
       environment variables and stdin hold (only `CNI_COMMAND` is required).""",
       "SPEC.md §2 VERSION", "SPEC.md §5 VERSION Success"),
    _s(11, "SHOULD", """`supportedVersions` lists every version the plugin can answer; a plugin for today's runtimes
       lists at least 0.3.1, 0.4.0, 1.0.0 and 1.1.0 (the versions of the spec's own example configuration,
       `"cniVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]`; 1.1.0 is the current spec).""",
       "SPEC.md §5 VERSION Success", "SPEC.md §1 Example configuration", "SPEC.md Version",
       "cni pkg/version/version.go"),
    _s(12, "MUST", """The ADD result's `cniVersion` is the configuration's ("The same version supplied on input") and
       its shape is that version's: `ips[].version` present for 0.3.x/0.4.0 and absent from 1.0.0 on; `ip4`/`ip6`
       instead of `interfaces`/`ips` for 0.1.0/0.2.0.""",
       "SPEC.md §5 ADD Success", "SPEC.md Released versions (1.0.0)", "SPEC.md at spec-v0.4.0 and spec-v0.2.0, Result",
       "cni pkg/types/100/types.go (and 040/, 020/)"),
    # -- ADD
    _s(13, "MUST", """ADD of an interface plugin creates `CNI_IFNAME` inside the container at `CNI_NETNS`, configures
       it as the result says, and lists it in `interfaces` with `sandbox` = `CNI_NETNS`.""",
       "SPEC.md §2 ADD", "SPEC.md §5 ADD Success (interfaces[].sandbox)"),
    _s(14, "MUST", """Every `ips[].interface` is an index of an existing entry of the same result's `interfaces`.""",
       "SPEC.md §5 ADD Success (ips[].interface)"),
    _s(15, "MUST", """"If an interface of the requested name already exists in the container, the CNI plugin MUST
       return with an error." """,
       "SPEC.md §2 ADD"),
    _s(16, "MUST", """A chained ADD (with `prevResult`) outputs `prevResult` with its own modifications included; a
       plugin that changes nothing outputs a result equivalent to `prevResult`.""",
       "SPEC.md §2 ADD", "SPEC.md §5 ADD Success"),
    _s(17, "inference", """A plugin handling `prevResult` does not drop the parts it does not understand (other
       plugins' interfaces, addresses, routes, DNS, newer fields): it must pass `prevResult` through or modify
       it.""",
       "SPEC.md §2 ADD (\"passing it through, or modifying it appropriately\")", "SPEC.md §5 ADD Success"),
    _s(18, "MUST", """A delegated IPAM plugin's ADD returns an abbreviated result: no `interfaces`, no
       `ips[].interface`.""",
       "SPEC.md §5 Delegated plugins (IPAM)"),
    _s(19, "SHOULD", """If a delegated (IPAM) plugin fails on ADD, the upper plugin runs it again with DEL before
       returning the failure; likewise a failed ADD removes what the plugin itself created before returning.""",
       "SPEC.md §4 Delegated plugin execution procedure"),
    # -- DEL
    _s(20, "MUST", """A second DEL for the same (`CNI_CONTAINERID`, `CNI_IFNAME`) succeeds: "Plugins MUST accept
       multiple DEL calls for the same (CNI_CONTAINERID, CNI_IFNAME) pair, and return success if the interface in
       question, or any modifications added, are missing." """,
       "SPEC.md §2 DEL", "SPEC.md §3 Lifecycle & Ordering"),
    _s(21, "MUST", """DEL succeeds when the container's network namespace no longer exists (DEL is best effort).""",
       "SPEC.md §2 DEL"),
    _s(22, "MUST", """DEL succeeds when the container interface, or anything else the plugin added, is already
       gone.""",
       "SPEC.md §2 DEL"),
    _s(23, "SHOULD", """DEL succeeds with an empty or absent `prevResult` ("Plugins should still return without error
       if prevResult is empty for a DEL command").""",
       "SPEC.md §2 DEL", "SPEC.md §3 Deriving request configuration from plugin configuration"),
    _s(24, "SHOULD", """DEL releases the IPAM reservation even when the network namespace is gone ("an IPAM plugin
       should generally release an IP allocation and return success even if the container network namespace no
       longer exists"; the bridge plugin "should delegate the DEL action to the IPAM plugin").""",
       "SPEC.md §2 DEL"),
    _s(25, "SHOULD", """DEL removes the host firewall/NAT state the plugin added (masquerade, port mappings) even when
       the namespace, the interface or `prevResult` is missing, finding it by container ID; the reference plugins
       name that state after the network and container ID.""",
       "SPEC.md §2 DEL (\"clean up its own resources even if the container network namespace and/or container "
       "network interface no longer exist\")",
       "plugins pkg/ip/ipmasq_linux.go (TeardownIPMasqForNetworks)", "plugins pkg/ip/ipmasq_nftables_linux.go",
       "plugins pkg/utils/utils.go (FormatChainName, FormatComment)",
       "plugins plugins/meta/portmap/portmap_iptables.go"),
    _s(26, "SHOULD", """DEL of an attachment that was never added (or whose ADD failed) succeeds: the runtime must
       DEL "even if the add fails", and missing modifications are success.""",
       "SPEC.md §3 Lifecycle & Ordering", "SPEC.md §2 DEL"),
    # -- CHECK
    _s(27, "lib", """CHECK with a configuration version below 0.4.0 (the version that introduced CHECK) is rejected
       with code 1 ("config version does not allow CHECK").""",
       "SPEC.md Released versions (0.4.0)", "cni pkg/skel/skel.go"),
    _s(28, "MUST/SHOULD", """CHECK consults `prevResult` ("The plugin must consult the prevResult to determine the
       expected interfaces and addresses"), so it fails without one; it should fail when an interface it created and
       listed is missing, has another MAC or is in another namespace.""",
       "SPEC.md §2 CHECK (plugin considerations)"),
    _s(29, "SHOULD", """CHECK fails when an address or a route it created and listed in `prevResult` is missing.""",
       "SPEC.md §2 CHECK (plugin considerations)"),
    _s(30, "SHOULD", """CHECK fails when resources not tracked in the result are missing: firewall/NAT rules, IP
       reservations.""",
       "SPEC.md §2 CHECK (plugin considerations)"),
    _s(31, "MUST", """CHECK right after a successful ADD succeeds ("The plugin must handle CHECK being called
       immediately after an ADD").""",
       "SPEC.md §2 CHECK (plugin considerations)"),
    _s(32, "MUST", """CHECK tolerates addresses and routes added by a later chained plugin ("must allow for a later
       chained plugin to have modified networking resources, e.g. routes, on ADD").""",
       "SPEC.md §2 CHECK (plugin considerations)"),
    _s(33, "SHOULD", """CHECK runs CHECK on delegated (IPAM) plugins and passes their errors on.""",
       "SPEC.md §2 CHECK (plugin considerations)", "SPEC.md §4 Delegated plugin execution procedure"),
    _s(34, "MUST", """A successful CHECK prints nothing on stdout and exits 0.""",
       "SPEC.md Appendix: Check example (\"produces no output on standard out and exits with a 0 return code\")"),
    # -- STATUS
    _s(35, "lib", """STATUS with a configuration version below 1.1.0 (the version that introduced STATUS) is rejected
       with code 1 ("config version does not allow STATUS").""",
       "cni pkg/skel/skel.go"),
    _s(36, "MUST", """STATUS exits 0 when the plugin can serve ADD; otherwise it exits non-zero with an error, code 50
       (not available) or 51 (not available, existing containers may have limited connectivity). A plugin that
       relies on a delegated (IPAM) plugin forwards STATUS to it and fails when it fails.""",
       "SPEC.md §2 STATUS"),
    _s(37, "MUST", """ADD and DEL keep working after STATUS reported an error ("A plugin MUST NOT rely on STATUS being
       called"; "STATUS does not prevent other runtime requests").""",
       "SPEC.md §2 STATUS (plugin considerations)"),
    # -- GC
    _s(38, "lib", """GC with a configuration version below 1.1.0 (the version that introduced GC) is rejected with
       code 1 ("config version does not allow GC").""",
       "cni pkg/skel/skel.go"),
    _s(39, "SHOULD", """GC removes the IPAM reservations (and other resources) of attachments not listed in
       `cni.dev/valid-attachments` and keeps those listed; GC of one network leaves other networks alone.""",
       "SPEC.md §2 GC", "SPEC.md §3 Garbage-collecting a network"),
    _s(40, "lib", """GC also honours the key `cni.dev/attachments`: the spec-v1.1.0 tag named the list so, and libcni
       sends both names.""",
       "SPEC.md at spec-v1.1.0, §2 GC", "cni libcni/api.go (GCNetworkList)"),
    _s(41, "MUST/SHOULD", """GC is forwarded to delegated plugins ("Plugins MUST, additionally, forward any GC calls to
       delegated plugins"); on an error the plugin continues, removing as much as possible, and reports the
       errors.""",
       "SPEC.md §2 GC", "SPEC.md §4 Delegated plugin execution procedure"),
    _s(42, "inference", """GC with an empty `cni.dev/valid-attachments` removes every reservation of that network: the
       list names all still-valid attachments.""",
       "SPEC.md §2 GC"),
    _s(43, "MUST", """A successful GC prints nothing ("No output on success").""",
       "SPEC.md §2 GC (Output)"),
    # -- concurrency
    _s(44, "MUST", """Concurrent ADDs of different containers on one network never get the same address: "Plugins
       must handle being executed concurrently across different containers. If necessary, they must implement
       locking on shared resources (e.g. IPAM databases)." """,
       "SPEC.md §3 Lifecycle & Ordering"),
    _s(45, "MUST", """Concurrent first ADDs that create shared host objects (the bridge, its address, NAT chains) all
       succeed: "already exists" from a concurrent creator is not an error (the reference bridge tolerates
       EEXIST).""",
       "SPEC.md §3 Lifecycle & Ordering", "plugins plugins/main/bridge/bridge.go (ensureBridge, ensureAddr)"),
    # -- configuration, arguments, delegation, output
    _s(46, "MUST", """Capability arguments arrive only in `runtimeConfig`, and only for capabilities the plugin
       declared; `capabilities` itself "must not be set" in the request, so a plugin neither requires it nor acts on
       capabilities it did not declare.""",
       "SPEC.md §3 Deriving request configuration from plugin configuration", "SPEC.md §3 Deriving runtimeConfig",
       "CNI CONVENTIONS.md (Dynamic Plugin specific fields)"),
    _s(47, "MUST", """A plugin accepts the reserved keys runtimes generate (`runtimeConfig`, `args`, any `cni.dev/*`
       key) and ignores `args` data it does not understand.""",
       "SPEC.md §1 Plugin configuration objects (reserved keys)", "CNI CONVENTIONS.md (\"args\" in network config)"),
    _s(48, "lib", """`CNI_ARGS` with keys the plugin does not know is rejected unless it contains `IgnoreUnknown=1`
       (or `true`).""",
       "cni pkg/types/args.go (LoadArgs)"),
    _s(49, "MUST", """When `args.cni.ips` and `CNI_ARGS` `IP=` are both given, `args` wins: "the plugin must ignore
       the CNI_ARGS Field".""",
       "CNI CONVENTIONS.md (CNI_ARGS)"),
    _s(50, "MUST", """Delegated plugins are looked up in `CNI_PATH`; a missing binary is an error.""",
       "SPEC.md §4 Delegated Plugin protocol", "SPEC.md §3 Adding an attachment (\"If this does not exist, then "
       "this is an error\")", "cni pkg/invoke/find.go (FindInPath)"),
    _s(51, "lib", """A plugin runs in the runtime's network namespace, not the container's: ADD with `CNI_NETNS` equal
       to the plugin's own namespace is refused with code 8 ("plugin's netns and netns from CNI_NETNS should not be
       the same").""",
       "SPEC.md §2 Overview (\"The runtime must execute the plugin in the runtime's networking domain\")",
       "cni pkg/skel/skel.go", "cni pkg/types/types.go (ErrInvalidNetNS = 8)"),
    _s(52, "MUST", """stdout carries only the JSON result or error; logs go to stderr ("stderr can be used for
       unstructured output such as logs").""",
       "SPEC.md §5 Result Types", "SPEC.md §5 Error"),
    _s(53, "MAY", """Results of 1.1.0 and later may carry route `mtu`, `advmss`, `priority`, `table`, `scope` and
       interface `mtu`, `socketPath`, `pciID`; a plugin reading such a `prevResult` accepts them.""",
       "SPEC.md §5 ADD Success"),
    # -- runtime contract
    _s(54, "runtime", """The runtime (here: the kit's `runtime.py`) runs ADD in plugin order, DEL in reverse order,
       CHECK and GC in order; DEL and CHECK get the final ADD result as `prevResult`; GC continues past errors and
       runs only when no ADD or DEL is in flight.""",
       "SPEC.md §3 Lifecycle & Ordering", "SPEC.md §3 Adding / Deleting / Checking an attachment",
       "SPEC.md §3 Garbage-collecting a network", "cni libcni/api.go"),
)}

PLUGIN_STATEMENTS = frozenset(STATEMENTS) - RUNTIME_ONLY


def coverage(checks: Iterable) -> dict[int, list[str]]:
    """Statement number -> ids of the checks that claim it (every statement, in order)."""
    out: dict[int, list[str]] = {n: [] for n in sorted(STATEMENTS)}
    for c in checks:
        for n in c.statements:
            out.setdefault(n, []).append(c.id)
    return out


def problems(checks: Iterable) -> list[str]:
    """Drift between the checks and the statements: unknown numbers, uncovered plugin statements."""
    checks = list(checks)
    p = [f"{c.id} claims statement {n}, which does not exist" for c in checks for n in c.statements
         if n not in STATEMENTS]
    cov = coverage(checks)
    p += [f"statement {n} is covered by no check" for n in sorted(PLUGIN_STATEMENTS) if not cov.get(n)]
    return p


def _files(sources: Iterable[str]) -> list[tuple[str, str]]:
    """(label, URL) of the upstream files named by ``cni …`` / ``plugins …`` sources."""
    out: dict[str, str] = {}
    for src in sources:
        for prefix, repo, commit in (("cni ", CNI_REPO, CNI_COMMIT), ("plugins ", PLUGINS_REPO, PLUGINS_COMMIT)):
            if src.startswith(prefix):
                path = src[len(prefix):].split(" (")[0]
                out[f"{prefix}{path}"] = f"{repo}/blob/{commit}/{path}"
    return sorted(out.items())


def _cite(src: str) -> str:
    """``cni pkg/x.go (F)`` -> ``cni `pkg/x.go` (F)``; spec sections stay as they are."""
    repo, _, rest = src.partition(" ")
    if repo not in ("cni", "plugins"):
        return src
    path, sep, note = rest.partition(" (")
    return f"{repo} `{path}`" + (f" ({note}" if sep else "")


WIDTH = 100  # of the rendered Markdown lines (links excepted)


def _item(first: str, text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=indent, break_on_hyphens=False,
                         break_long_words=False)


def markdown(checks: Iterable) -> str:
    """docs/cni-statements.md: every statement with its level, sources and the checks covering it."""
    cov = coverage(checks)
    out = [
        "# CNI testable statements (conformance kit)",
        "",
        "<!-- Generated by `python -m splice.conformance.statements > docs/cni-statements.md` from",
        "     conformance/splice/conformance/statements.py: edit that file, not this one. -->",
        "",
        "The conformance kit (`splice-conformance`, see [conformance.md](conformance.md)) derives every",
        "check from one or more of the numbered statements below: the numbers `splice-conformance --list`",
        "prints next to each check, and the `spec` field of its JSON report.",
        "`splice-conformance --statements` prints this list.",
        "",
        "Each statement restates one requirement of the CNI specification — `SPEC.md` (spec 1.1.0) and",
        "`CONVENTIONS.md` of [containernetworking/cni](" + CNI_REPO + ") — in our words or as a short",
        "quotation, and names its upstream source. Levels:",
        "",
        "- **MUST**, **SHOULD**, **MAY**: the requirement level of the spec's sentence (RFC 2119, as SPEC.md",
        "  uses it);",
        "- **lib**: behaviour of the reference Go library (containernetworking/cni `pkg/skel`, `pkg/types`,",
        "  `pkg/utils`, `pkg/version`, `libcni`) that runtimes and the reference plugins rely on;",
        "- **inference**: our reading of the spec where it has no sentence for the case;",
        "- **runtime**: an obligation of the runtime, not of a plugin.",
        "",
        "Sources: \"SPEC.md §N Title\" is the part of that title in Section N of",
        "[SPEC.md](" + CNI_REPO + "/blob/main/SPEC.md) (\"SPEC.md Title\": outside the numbered sections);",
        "\"SPEC.md at spec-vX\" is SPEC.md at that git tag of containernetworking/cni; \"CNI CONVENTIONS.md\"",
        "is [CONVENTIONS.md](" + CNI_REPO + "/blob/main/CONVENTIONS.md); `cni …` and `plugins …` are source",
        "files of containernetworking/cni and containernetworking/plugins (links at the end).",
        "",
        "Statements 1–53 are plugin obligations, each covered by at least one check. Statement 54 is the",
        "runtime's contract, which the kit's runtime (`conformance/splice/conformance/runtime.py`)",
        "implements.",
    ]
    for g in GROUPS:
        out += ["", f"## {g.first}–{g.last}: {g.title}" if g.first != g.last else f"## {g.first}: {g.title}", ""]
        for n in range(g.first, g.last + 1):
            st = STATEMENTS[n]
            ind = " " * len(f"{n}. ")
            out += _item(f"{n}. ", f"**{st.level}** — {st.text}", ind)
            out += _item(ind, "Source: " + "; ".join(_cite(x) for x in st.sources) + ".", ind)
            out += _item(ind, "Checks: " + (", ".join(cov[n]) if cov[n] else "none (`runtime.py`)") + ".", ind)
    out += ["", "## Source files", "",
            f"Read at containernetworking/cni `{CNI_COMMIT[:8]}` and containernetworking/plugins "
            f"`{PLUGINS_COMMIT[:8]}`:", ""]
    out += [f"- [{_cite(label)}]({url})" for label, url in _files(x for st in STATEMENTS.values() for x in st.sources)]
    return "\n".join(out) + "\n"


def main() -> int:
    from splice.conformance import kit

    sys.stdout.write(markdown(kit.select(None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
