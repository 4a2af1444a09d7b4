"""splice.ipam: address management (host-local compatible configuration, embedded store)."""
