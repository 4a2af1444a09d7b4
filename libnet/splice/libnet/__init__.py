"""splice.libnet: the kernel side of splice (netlink, namespaces, sysctls, nftables).

Knows nothing of CNI or Docker. Every operation names the network namespace it acts
in explicitly (a :class:`~splice.libnet.netns.Netns`); nothing here switches the
namespace of the whole process.
"""
