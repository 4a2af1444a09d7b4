"""``conditionsV4`` / ``conditionsV6``: nft match expressions a network's mappings must meet.

Policy of the portmap driver: :func:`check_conditions` screens the strings (no kernel
access, config time); :func:`parse_conditions` has libnftables translate them into JSON
match expressions and accepts nothing else (no statements, no verdicts);
:func:`conditions_for` gives the kernel mechanism the per-family
:class:`~splice.libnet.portmap.model.Conditions`, which parse only when their chain has
to be built.
"""

from __future__ import annotations

import json
from typing import Iterable

from splice.libnet.errors import NftError
from splice.libnet.portmap.model import Conditions
from splice.plugins.portmap.mapping import PortMappingError

FORBIDDEN = (";", "\n", "\r", "\0", "#")


def check_conditions(conditions: Iterable[str]) -> tuple[str, ...]:
    """Syntactic screening of conditionsV4/V6 (the full parse happens in libnftables):
    strings without command separators or comments."""
    out = []
    for c in conditions:
        if not isinstance(c, str) or not c.strip():
            raise PortMappingError(f"invalid condition {c!r}: must be a non-empty string")
        bad = [ch for ch in FORBIDDEN if ch in c]
        if bad:
            raise PortMappingError(f"invalid condition {c!r}: must not contain {bad[0]!r}")
        out.append(c.strip())
    return tuple(out)


def parse_conditions(conditions: Iterable[str]) -> list[dict]:
    """Translate nft match expressions (text) into libnftables JSON expressions.

    libnftables parses them in-process: a scratch table ``inet splice_portmap_parse_<rand>``
    gets one unhooked chain with the rule, the rule is read back as JSON and the table is
    deleted. Only ``match`` expressions are accepted (no statements or verdicts).
    """
    conds = check_conditions(conditions)
    if not conds:
        return []
    import secrets

    from splice.libnet import nft as N

    ctx = N._new_context()
    name = "splice_portmap_parse_" + secrets.token_hex(4)
    text = " ".join(conds)
    try:
        rc, _out, err = ctx.cmd(f"add table inet {name}\nadd chain inet {name} c\nadd rule inet {name} c {text}")
        if rc != 0:
            msg = " ".join(line.strip() for line in (err or "").splitlines() if line.strip())
            raise PortMappingError(f"invalid conditions {text!r}: {msg}")
        rc, out, err = ctx.cmd(f"list chain inet {name} c")
        if rc != 0:
            raise NftError(f"cannot read back conditions {text!r}: {err.strip()}")
        rules = [item["rule"] for item in json.loads(out).get("nftables", []) if "rule" in item]
    finally:
        ctx.cmd(f"delete table inet {name}")
    exprs = rules[0]["expr"] if rules else []
    if len(rules) != 1 or not exprs or any(set(e) != {"match"} for e in exprs):
        raise PortMappingError(f"invalid conditions {text!r}: only match expressions are allowed")
    return exprs


def conditions_for(conditions_v4: Iterable[str], conditions_v6: Iterable[str]) -> dict[int, Conditions]:
    """version -> Conditions, for the families with a non-empty list (screened here)."""
    out = {}
    for v, texts in ((4, check_conditions(conditions_v4)), (6, check_conditions(conditions_v6))):
        if texts:
            out[v] = Conditions(v, texts, parse_conditions)
    return out
