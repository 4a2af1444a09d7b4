"""The cluster store of multi-host networks: etcd (v3 JSON gateway, stdlib HTTP), host subnet
leases (subnets.py) and the peer registry (peers.py). Nothing of CNI, Docker or the kernel.
Modules are imported on use: this file imports nothing."""
