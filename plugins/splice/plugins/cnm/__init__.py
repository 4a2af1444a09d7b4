"""The CNM front-end: Docker's remote network and IPAM driver (``splice driver``)."""
