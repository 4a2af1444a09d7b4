"""nft rule text -> libnftables JSON expressions, without touching any ruleset in use.

libnftables 1.0.6 has no way to translate text into JSON without the kernel: a JSON
listing is a kernel dump, and neither its dry-run mode (``nft --check``, which sends the
batch without the final commit message, so nothing is ever committed) nor echo mode
(echo prints the kernel's NLM_F_ECHO replies of a committed batch) gives the parsed
rule back. So the rule is committed, but in a network namespace of its own: a helper
thread ``unshare(CLONE_NEWNET)``s (only that thread changes namespace), adds a table,
a chain and the rule there with a fresh libnftables context, lists the chain as JSON,
and exits. Nothing is ever added to the caller's ruleset, and nothing can be left
behind: the namespace goes away with its last user, the thread (or the process, if it
is killed half-way).

Consequence: names resolved at parse time refer to the private namespace, which has
only ``lo``: ``iif``/``oif`` (interface indexes) of other interfaces fail with
"Interface does not exist"; ``iifname``/``oifname`` match by name and work.
Needs CAP_SYS_ADMIN (unshare(2)), which every caller of splice's nftables code has.
"""

from __future__ import annotations

import json

from . import nft as N
from .errors import NetError, NftError
from .netns import run_private

_FAMILY = "inet"
_TABLE = "p"
_CHAIN = "c"

def _message(err: str | None) -> str:
    return " ".join(line.strip() for line in (err or "").splitlines() if line.strip())


def _parse_here(text: str) -> list[list[dict]]:
    ctx = N._new_context()
    try:
        rc, _out, err = ctx.cmd(f"add table {_FAMILY} {_TABLE}\nadd chain {_FAMILY} {_TABLE} {_CHAIN}")
        if rc != 0:
            raise NetError(f"libnftables cannot create a scratch chain in a private namespace: {_message(err)}")
        rc, _out, err = ctx.cmd(f"add rule {_FAMILY} {_TABLE} {_CHAIN} {text}")
        if rc != 0:
            raise NftError(_message(err) or f"libnftables failed (rc={rc})")
        rc, out, err = ctx.cmd(f"list chain {_FAMILY} {_TABLE} {_CHAIN}")
        if rc != 0:
            raise NetError(f"libnftables cannot list the rule back: {_message(err)}")
        return [item["rule"].get("expr") or [] for item in json.loads(out).get("nftables", []) if "rule" in item]
    finally:
        del ctx  # closes its netlink socket here, in the private namespace's thread


def rule_exprs(text: str) -> list[list[dict]]:
    """The expression lists (libnftables JSON) of the rules ``text`` makes in an
    ``inet`` chain (usually one rule). Raises :class:`NftError` with libnftables' message
    when it rejects the text, :class:`NetError` when no private namespace can be made."""
    return run_private(_parse_here, text)
