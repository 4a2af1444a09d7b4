"""The Linux bridge driver (docker0 style): bridge, veth pairs, gateway, masquerade."""
