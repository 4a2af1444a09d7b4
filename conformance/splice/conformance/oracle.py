"""Independent oracle: reads kernel state with iproute2 and nft, never with splice code.

Only the standard library and the ``ip``/``nft`` executables are used here, so a bug
in splice.libnet cannot hide itself from the tests and the conformance kit.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any


def _run(argv: list[str]) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def _nsargv(netns: str | None) -> list[str]:
    """argv prefix that runs a command inside netns (a /run/netns name or a path)."""
    if not netns:
        return []
    path = netns if "/" in netns else f"/run/netns/{netns}"
    return ["nsenter", f"--net={path}"]


def ip_json(netns: str | None, *args: str) -> Any:
    out = _run(_nsargv(netns) + ["ip", "-j", "-d", *args])
    return json.loads(out) if out.strip() else []


def links(netns: str | None) -> list[dict]:
    return ip_json(netns, "link", "show")


def link(netns: str | None, name: str) -> dict | None:
    for item in links(netns):
        if item.get("ifname") == name:
            return item
    return None


def link_names(netns: str | None) -> set[str]:
    return {item["ifname"] for item in links(netns)}


def addresses(netns: str | None, name: str | None = None) -> list[str]:
    """CIDR strings of global/link-scope addresses (IPv6 link-local excluded)."""
    args = ["addr", "show"] + (["dev", name] if name else [])
    out = []
    for item in ip_json(netns, *args):
        for a in item.get("addr_info", []):
            if a.get("family") == "inet6" and a.get("scope") == "link":
                continue
            if item.get("ifname") == "lo":
                continue
            out.append(f"{a['local']}/{a['prefixlen']}")
    return out


def routes(netns: str | None, family: str = "-4") -> list[dict]:
    out = _run(_nsargv(netns) + ["ip", "-j", family, "route", "show"])
    return json.loads(out) if out.strip() else []


def sysctl(netns: str | None, key: str) -> str:
    path = "/proc/sys/" + key.replace(".", "/")
    return _run(_nsargv(netns) + ["cat", path]).strip()


def nft_ruleset(netns: str | None) -> list[dict]:
    out = _run(_nsargv(netns) + ["nft", "-j", "list", "ruleset"])
    return json.loads(out).get("nftables", []) if out.strip() else []


def nft_text(netns: str | None) -> str:
    return _run(_nsargv(netns) + ["nft", "list", "ruleset"])


def nft_objects(netns: str | None, kind: str) -> list[dict]:
    """All objects of one kind ("table", "chain", "rule", "set", "map", "element")."""
    return [item[kind] for item in nft_ruleset(netns) if kind in item]


def nft_map_elements(netns: str | None) -> list[tuple[str, str, Any]]:
    """(table, map-or-set name, element) for every element of every set and map."""
    out = []
    for kind in ("set", "map"):
        for obj in nft_objects(netns, kind):
            for elem in obj.get("elem", []) or []:
                out.append((obj["table"], obj["name"], elem))
    return out


def element_parts(e):
    """(key, data, comment) of one set/map element as ``nft -j`` prints it; a concatenated
    key becomes a tuple, data is None for set elements."""
    data = None
    if isinstance(e, list):
        e, data = e
    comment = None
    if isinstance(e, dict) and "elem" in e:
        comment = e["elem"].get("comment")
        e = e["elem"]["val"]
    if isinstance(e, dict) and "concat" in e:
        e = tuple(e["concat"])
    return e, data, comment


def bridge_vlans(netns: str | None) -> list[dict]:
    out = _run(_nsargv(netns) + ["bridge", "-j", "vlan", "show"])
    return json.loads(out) if out.strip() else []


def ping(netns: str | None, address: str, count: int = 1, timeout: int = 2, deadline: int | None = None) -> bool:
    """``count`` replies from ``address`` within ``deadline`` seconds (ping sends one echo a
    second until then: a first reply lost to a slow neighbour resolution on a loaded machine
    is retried). Default deadline: 6 s for the default ``timeout`` (a reachability check),
    ``timeout * count`` for a shorter one (an "unreachable" check stays short)."""
    if deadline is None:
        deadline = 6 if timeout >= 2 else timeout * count
    argv = _nsargv(netns) + ["ping", "-n", "-q", "-c", str(count), "-W", str(timeout), "-w", str(deadline), address]
    return subprocess.run(argv, capture_output=True, timeout=deadline + 10).returncode == 0


# -- helpers for the conformance kit's leak checks ------------------------------------------


def _scalars(obj: Any):
    """Every scalar string/int inside a JSON value."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _scalars(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _scalars(v)
    elif isinstance(obj, (str, int)) and not isinstance(obj, bool):
        yield str(obj)


def _describe(kind: str, obj: dict, token: str) -> str:
    where = f"{obj.get('family', '?')} {obj.get('table', '?')}"
    if kind == "rule":
        target = ""
        for e in obj.get("expr") or []:
            for verb in ("jump", "goto"):
                if isinstance(e, dict) and isinstance(e.get(verb), dict):
                    target = f" ({verb} {e[verb].get('target')})"
        return f"rule in {where} chain {obj.get('chain')} referencing {token}{target}"
    if kind in ("set", "map"):
        return f"{kind} {where} {obj.get('name')} element referencing {token}"
    return f"{kind} {where} {obj.get('name', '')} referencing {token}"


def nft_references(netns: str | None, tokens: set[str] | list[str],
                   ruleset: list[dict] | None = None) -> list[str]:
    """nftables objects (rules, chains, set/map elements) in ``netns`` that reference one of
    ``tokens``: a scalar equal to a token, equal to ``<token>/<len>``, or (for tokens of 8+
    characters that are not addresses, e.g. container IDs) containing it (comments such as
    ``id: "<cid>"``). One line per object, naming the token it references.

    This is how the kit finds per-attachment firewall/NAT state without knowing a plugin's
    table layout; iptables-nft rules show up here too.
    """
    tokens = {t for t in tokens if t}
    if not tokens:
        return []
    long_tokens = [t for t in tokens if len(t) >= 8 and not _looks_like_ip(t)]

    def hit(value: str) -> str | None:
        if value in tokens:
            return value
        if value.split("/")[0] in tokens:
            return value.split("/")[0]
        return next((t for t in long_tokens if t in value), None)

    def first_hit(obj) -> str | None:
        return next((h for h in map(hit, _scalars(obj)) if h), None)

    found = []
    for item in (nft_ruleset(netns) if ruleset is None else ruleset):
        for kind, obj in item.items():
            if not isinstance(obj, dict) or kind in ("metainfo", "table"):
                continue
            if kind in ("set", "map"):
                for elem in obj.get("elem", []) or []:
                    t = first_hit(elem)
                    if t:
                        found.append(_describe(kind, obj, t))
                continue
            if kind == "chain":
                t = hit(str(obj.get("name", "")))
                if t:
                    found.append(_describe(kind, obj, t))
                continue
            t = first_hit({k: v for k, v in obj.items() if k != "handle"})
            if t:
                found.append(_describe(kind, obj, t))
    return found


def _looks_like_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_interface(text)
        return True
    except ValueError:
        return False


def ipv6_addresses(netns: str | None, name: str) -> list[str]:
    return [a for a in addresses(netns, name) if ":" in a]


def all_routes(netns: str | None) -> list[dict]:
    """IPv4 and IPv6 routes of the main table."""
    return routes(netns, "-4") + routes(netns, "-6")
