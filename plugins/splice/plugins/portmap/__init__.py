"""Port mapping (``-p host:container``) on nftables maps: config parsing and the driver."""
