"""``conditionsV4`` / ``conditionsV6``: nft match expressions a network's mappings must meet.

Policy of the portmap driver: :func:`check_conditions` screens the strings (no kernel
access, config time); :func:`parse_conditions` has libnftables translate them into JSON
match expressions and accepts nothing else (no statements, no verdicts);
:func:`conditions_for` gives the kernel mechanism the per-family
:class:`~splice.libnet.portmap.model.Conditions`, which parse only when their chain has
to be built.
"""

from __future__ import annotations

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

    libnftables parses them as one rule in a private network namespace
    (:func:`splice.libnet.nftexpr.rule_exprs`): nothing is ever added to the host's
    ruleset, not even for a moment, and a process killed half-way leaves nothing behind.
    Only ``match`` expressions are accepted (no statements or verdicts).
    """
    conds = check_conditions(conditions)
    if not conds:
        return []
    from splice.libnet.nftexpr import rule_exprs

    text = " ".join(conds)
    try:
        rules = rule_exprs(text)
    except NftError as e:
        hint = (" (conditions are parsed without the host's interfaces: match them by name, "
                "iifname/oifname)" if "Interface does not exist" in str(e) else "")
        raise PortMappingError(f"invalid conditions {text!r}: {e}{hint}") from None
    exprs = rules[0] if rules else []
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
