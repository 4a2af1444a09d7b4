"""The owned-table base (splice.libnet.nftowned): parsing, owner-checked deletes, GC."""

from __future__ import annotations

import pytest

from splice.libnet import nft as N
from splice.libnet.errors import NftError
from splice.libnet.nftowned import OwnedTable, digest

T = OwnedTable("inet", "t", owners="owners")
A, B = "n1 a eth0", "n1 b eth0"


def elem(key, comment=None, data=None):
    k = {"elem": {"val": key, "comment": comment}} if comment else key
    return [k, data] if data is not None else k


def pair(set_name, key, owner):
    return elem({"concat": [T.key_digest(set_name, key), digest(owner)]}, owner)


def listing():
    ka, kb = {"concat": ["br0", "10.0.0.2"]}, {"concat": ["br1", "10.0.0.2"]}
    return [
        {"table": {"family": "inet", "name": "t"}},
        {"set": {"family": "inet", "table": "t", "name": "src", "type": ["ifname", "ipv4_addr"],
                 "elem": [elem(ka, A), elem(kb, B)]}},
        {"map": {"family": "inet", "table": "t", "name": "m", "type": "ipv4_addr", "map": "verdict",
                 "elem": [elem("10.0.0.9", A, {"accept": None})]}},
        {"set": {"family": "inet", "table": "t", "name": "owners", "type": ["ifname", "ifname"],
                 "elem": [pair("src", ka, A), pair("src", kb, B), pair("src", {"concat": ["br2", "10.0.0.3"]}, A)]}},
        {"counter": {"family": "inet", "table": "t", "name": "users", "packets": 0, "bytes": 0}},
        {"chain": {"family": "inet", "table": "t", "name": "c"}},
        {"rule": {"family": "inet", "table": "t", "chain": "c", "expr": [{"accept": None}]}},
    ]


def test_parse_listing():
    st = T.parse(listing())
    assert st.exists and set(st.chains) == {"c"} and len(st.rules["c"]) == 1
    assert st.objects == {"counter": {"users"}}
    assert set(st.elems["src"]) == {("br0", "10.0.0.2"), ("br1", "10.0.0.2")}
    e = st.get("src", N.concat("br0", "10.0.0.2"))
    assert e.comment == A and e.key == {"concat": ["br0", "10.0.0.2"]}
    assert st.get("m", "10.0.0.9").data == {"accept": None}
    assert st.has_pair(e, A) and not st.has_pair(e, B)
    assert "owners" not in st.elems and len(st.pairs) == 3
    assert {o: len(es) for o, es in T.owners(st).items()} == {A: 2, B: 1}
    assert not T.parse(None).exists


def test_remove_owned_is_strict_with_a_pair_and_quiet_without():
    st = T.parse(listing())
    cmds, owners = T.remove_owned(st, lambda c: c == A)
    assert owners == {A}
    deletes = [c["delete"]["element"] for c in cmds if "delete" in c]
    adds = [c["add"]["element"] for c in cmds if "add" in c]
    # the src element goes with its pair (strict), the map element without one (quiet,
    # with its data), the pair of br2 . 10.0.0.3 (no element) is an orphan (quiet)
    assert T.pair("src", N.concat("br0", "10.0.0.2"), A) in deletes
    assert T.elem("src", {"concat": ["br0", "10.0.0.2"]}) in deletes
    assert T.elem("m", "10.0.0.9", None, {"accept": None}) in adds
    orphan = T.elem("owners", N.concat(T.key_digest("src", N.concat("br2", "10.0.0.3")), digest(A)))
    assert orphan in adds and orphan in deletes
    assert not any("br1" in str(c) for c in cmds)  # B's element and pair untouched


def test_remove_owned_restricted_to_keys():
    st = T.parse(listing())
    keys = {("src", ("br0", "10.0.0.2"))}
    cmds, owners = T.remove_owned(st, lambda c: c == A, keys)
    assert owners == {A}
    assert "10.0.0.9" not in str(cmds) and "br2" not in str(cmds)
    assert T.pair("src", N.concat("br0", "10.0.0.2"), A) in [c["delete"]["element"] for c in cmds if "delete" in c]


def test_converge_rereads_after_a_failed_transaction():
    reads, applied = [], []

    class FakeNft:
        def list_table(self, family, name):
            reads.append(name)
            return listing()

        def apply(self, cmds):
            applied.append(cmds)
            if len(applied) == 1:
                raise NftError("concurrent change")

    T.converge(FakeNft(), lambda st: [N.add("table", N.table("inet", "t"))])
    assert len(reads) == 2 and len(applied) == 2
    with pytest.raises(NftError):
        applied.clear()

        class Failing(FakeNft):
            def apply(self, cmds):
                raise NftError("always")

        T.converge(Failing(), lambda st: [N.add("table", N.table("inet", "t"))], attempts=3)
