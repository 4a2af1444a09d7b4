"""VXLAN overlay network configuration (framework kind ``vxlan``, CNI ``splice-vxlan``).

:func:`parse_vxlan_config` validates a network config and returns a frozen
:class:`VxlanConfig`. Pure: no kernel access, no etcd contact; errors are
:class:`~splice.plugins.errors.ConfigError` (the etcd/cluster fields raise the cluster
store's ``ClusterConfigError``, code 7 as well).

Keys:

* ``vni`` (required, 1-16777215); ``port`` (UDP, default 4789, IANA's: the kernel's own
  default is 8472); ``vtepInterface`` (the underlay link; default the interface of the
  default route, looked up when the VTEP is made); ``mtu`` (default: the underlay link's
  MTU - 50 for an IPv4 underlay, - 70 for IPv6: the outer headers);
* ``bridge`` (default ``spvxbr<vni>``), ``device`` (the VXLAN device, default ``spvx<vni>``);
* ``ipMasq`` (masquerade what leaves ``clusterCIDR``), ``isDefaultGateway`` (default true:
  the containers' default route via the bridge; false: a route to ``clusterCIDR`` only),
  ``hairpinMode``, ``enabledad``, ``macspoofchk`` (as splice-bridge);
* ``clusterCIDR`` (required), ``subnetLen`` (default 24), ``leaseTTL`` (seconds, default
  20: how long a host that stopped renewing keeps its subnet and its peers' routes),
  ``etcd`` (``{"endpoints", "prefix", "caFile", "certFile", "keyFile", "timeout"}``).

Keys the bridge has and an overlay cannot honour (``vlan``, ``vlanTrunk``, ``isGateway``
false, ``promiscMode``, ``forceAddress``, ``disableContainerInterface``) are
``UnsupportedField``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from splice.libnet.names import ifname_problem
from splice.plugins.confkeys import boolean, fmt, integer
from splice.plugins.errors import ConfigError, UnsupportedField

DEFAULT_PORT = 4789
MAX_VNI = (1 << 24) - 1
DEFAULT_TTL = 20
OVERHEAD = {4: 50, 6: 70}  # outer Ethernet + IP + UDP + VXLAN headers
_UNSUPPORTED = ("vlan", "vlanTrunk", "promiscMode", "forceAddress", "disableContainerInterface", "portIsolation")


@dataclass(frozen=True)
class VxlanConfig:
    network: str
    vni: int
    cluster_cidr: str
    subnet_len: int = 24
    port: int = DEFAULT_PORT
    vtep_interface: str | None = None
    mtu: int | None = None
    bridge: str = ""
    device: str = ""
    ip_masq: bool = False
    is_default_gateway: bool = True
    hairpin_mode: bool = False
    enable_dad: bool = False
    mac_spoof_check: bool = False
    lease_ttl: int = DEFAULT_TTL
    etcd: Any = None  # splice.ipam.cluster.config.EtcdConfig

    @property
    def cidr(self) -> Any:
        import ipaddress

        return ipaddress.ip_network(self.cluster_cidr)

    def identity(self) -> tuple:
        """What two calls for one network must agree on (the agent runs one overlay per network)."""
        e = self.etcd
        return (self.vni, self.port, self.vtep_interface, self.mtu, self.bridge, self.device, self.cluster_cidr,
                self.subnet_len, self.lease_ttl, e.endpoints, e.prefix, e.ca_file, e.cert_file, e.key_file)


def _name(conf: dict, key: str, default: str) -> str:
    v = conf.get(key) or default
    if not isinstance(v, str):
        raise ConfigError(f"{key} must be an interface name, got {fmt(v)}")
    problem = ifname_problem(v)
    if problem:
        raise ConfigError(f"{key} {fmt(v)} is not a valid interface name: it {problem}")
    return v


def parse_vxlan_config(conf: dict) -> VxlanConfig:
    if not isinstance(conf, dict):
        raise ConfigError(f"the network configuration must be a JSON object, got {fmt(conf)}")
    network = conf.get("name")
    if not isinstance(network, str) or not network:
        raise ConfigError("the network configuration needs a name")
    for key in _UNSUPPORTED:
        if conf.get(key) not in (None, False, 0, []):
            raise UnsupportedField(f"{key} is not supported by splice-vxlan (got {fmt(conf[key])})")
    if conf.get("isGateway") is False:
        raise UnsupportedField("isGateway false is not supported by splice-vxlan: the bridge routes to the overlay")
    backend = conf.get("ipMasqBackend")
    if backend not in (None, "nftables"):
        raise UnsupportedField(f"ipMasqBackend {fmt(backend)}: splice masquerades with nftables only")
    if "vni" not in conf or conf["vni"] is None:
        raise ConfigError("vni is required (the VXLAN network identifier, 1-16777215)")
    vni = integer(conf, "vni", None, 1, MAX_VNI)
    port = integer(conf, "port", DEFAULT_PORT, 1, 65535)
    mtu = integer(conf, "mtu", 0, 0, 65535) or None
    if mtu is not None and mtu < 68:
        raise ConfigError(f"mtu must be between 68 and 65535 (or 0: the underlay's - 50), got {mtu}")
    vtep = conf.get("vtepInterface")
    if vtep is not None:
        vtep = _name(conf, "vtepInterface", "")
    bridge = _name(conf, "bridge", f"spvxbr{vni}")
    device = _name(conf, "device", f"spvx{vni}")
    if device == bridge:
        raise ConfigError(f"bridge and device must differ, both are {bridge!r}")
    ttl = integer(conf, "leaseTTL", DEFAULT_TTL, 2, 3600)

    from splice.ipam.cluster.config import parse_etcd
    from splice.ipam.cluster.subnets import SubnetSpace

    cidr = conf.get("clusterCIDR")
    if not isinstance(cidr, str) or not cidr:
        raise ConfigError("clusterCIDR is required (the overlay's address space, cut into subnetLen host subnets)")
    subnet_len = integer(conf, "subnetLen", 24, 1, 128)
    space = SubnetSpace.parse(cidr, subnet_len)  # ClusterConfigError (code 7)
    if "etcd" not in conf:
        raise ConfigError("etcd is required: {\"endpoints\": [\"http://HOST:2379\", ...], \"prefix\": \"/splice\"}")
    etcd = parse_etcd(conf["etcd"])
    ipam = conf.get("ipam")
    if ipam and (not isinstance(ipam, dict) or ipam.get("type", "splice-ipam") != "splice-ipam"):
        raise ConfigError("splice-vxlan takes addresses from its host subnet with splice-ipam: leave ipam out or "
                          f"use {{\"type\": \"splice-ipam\"}}, got {fmt(ipam)}")
    if isinstance(ipam, dict) and (ipam.get("ranges") or ipam.get("subnet")):
        raise ConfigError("splice-vxlan: ipam must not set ranges/subnet: the range is the host's leased subnet")
    return VxlanConfig(
        network=network, vni=vni, cluster_cidr=str(space.cidr), subnet_len=subnet_len, port=port,  # type: ignore[arg-type]
        vtep_interface=vtep, mtu=mtu, bridge=bridge, device=device, ip_masq=boolean(conf, "ipMasq", False),
        is_default_gateway=boolean(conf, "isDefaultGateway", True), hairpin_mode=boolean(conf, "hairpinMode", False),
        enable_dad=boolean(conf, "enabledad", False), mac_spoof_check=boolean(conf, "macspoofchk", False),
        lease_ttl=ttl, etcd=etcd)  # type: ignore[arg-type]
