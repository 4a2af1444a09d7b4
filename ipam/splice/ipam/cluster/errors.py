"""Errors of the cluster store (protocol-neutral; front-ends classify them by base class)."""

from __future__ import annotations

from splice.ipam import errors as ie


class ClusterError(ie.IpamError):
    """Base class of every cluster-store error."""


class ClusterUnavailable(ClusterError, ie.StoreBusy):
    """No etcd endpoint answered in time (transient: try again later). The message names
    every endpoint tried and why it failed."""


class EtcdError(ClusterError):
    """etcd answered, but refused the request (a bad request, an unknown lease, ...)."""

    def __init__(self, msg: str, details: str = "", *, grpc_code: int | None = None) -> None:
        super().__init__(msg, details)
        self.grpc_code = grpc_code


class ClusterConfigError(ClusterError, ie.IpamConfigError):
    """The cluster configuration is invalid (clusterCIDR, subnetLen, endpoints, TLS files),
    or differs from the one the network was created with in etcd."""


class NodeNameInUse(ClusterConfigError):
    """Another host (another state directory) holds a subnet under this node name: node
    names must be unique per host (hosts simulated as namespaces share one host name)."""


class NoFreeSubnet(ClusterError, ie.NoMoreSubnets):
    """Every host subnet of the cluster CIDR is leased by some host."""


class SubnetTaken(ClusterError):
    """The subnet this host held (state file, or its lease expired) is now leased by
    another host: its addresses must not be used any longer."""

    def __init__(self, msg: str, details: str = "", *, subnet=None, holder: str | None = None) -> None:
        super().__init__(msg, details)
        self.subnet = subnet
        self.holder = holder
