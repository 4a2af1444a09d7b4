"""Test helpers shared by the nftables kernel tests."""

from __future__ import annotations

from splice.libnet.nft import Nft


class CountingNft(Nft):
    """An Nft that counts the calls listing a whole table (the O(N) slow paths)."""

    def __init__(self):
        super().__init__()
        self.listings = 0

    def list_json(self, obj):
        self.listings += "table" in obj
        return super().list_json(obj)
