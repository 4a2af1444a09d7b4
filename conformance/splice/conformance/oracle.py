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


def bridge_vlans(netns: str | None) -> list[dict]:
    out = _run(_nsargv(netns) + ["bridge", "-j", "vlan", "show"])
    return json.loads(out) if out.strip() else []


def ping(netns: str | None, address: str, count: int = 1, timeout: int = 2) -> bool:
    argv = _nsargv(netns) + ["ping", "-n", "-q", "-c", str(count), "-W", str(timeout), address]
    return subprocess.run(argv, capture_output=True, timeout=timeout * count + 10).returncode == 0
