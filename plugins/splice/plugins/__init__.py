"""splice.plugins: protocol-neutral drivers (bridge, ...) and the CNI / CNM front-ends."""
