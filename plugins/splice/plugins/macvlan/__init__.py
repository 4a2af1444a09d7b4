"""The macvlan driver (kind ``macvlan``)."""
