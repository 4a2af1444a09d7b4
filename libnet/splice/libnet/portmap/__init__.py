"""Port publishing (host port -> container address:port) on nftables maps: O(1) per mapping.

The kernel mechanism only. What to publish is decided by the caller (the portmap driver,
``splice.plugins.portmap``: mapping validation and expansion, condition parsing); this
package applies a list of already-expanded :class:`~.model.Published` entries for one
owner string. Like every libnet piece it works in the calling thread's network namespace
(use it inside ``Netns.run`` of the host).

Modules (this ``__init__`` imports none of them):

* :mod:`.model` - names of the table's objects, value objects (:class:`~.model.Published`,
  :class:`~.model.Masq`, :class:`~.model.Conditions`), key digests,
  :class:`~.model.PortConflict`;
* :mod:`.builders` - pure builders of libnftables commands (scaffolding, base chains,
  element transactions);
* :mod:`.state` - the owned table ``T`` (:class:`splice.libnet.nftowned.OwnedTable`) and
  the table read back from a listing (a ``TableState``): the slow paths' converge helpers;
* :mod:`.publisher` - :class:`~.publisher.PortPublisher`: publish, unpublish, check, gc.

Kernel objects (one table owned by splice; the packet path and every update are lookups
in hash maps, whatever the number of mappings)::

    table inet splice_portmap {
        # DNAT targets: one element per published port, comment = owner
        map dnat4    { type inet_proto . inet_service : ipv4_addr . inet_service }          # tcp . 8080 : 10.77.0.2 . 80
        map dnat4_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service } # hostIP given
        map dnat6    { type inet_proto . inet_service : ipv6_addr . inet_service }
        map dnat6_ip { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service }
        # port claims: 1 = published on every local address, 2 = on given addresses only
        map claim4   { type inet_proto . inet_service : mark }
        map claim6   { type inet_proto . inet_service : mark }
        # mappings of networks with conditionsV4/V6: same keys -> jump cond4-<hash>
        map cond4 / cond4_ip / cond6 / cond6_ip { ... : verdict }
        # masquerade registrations (snat): iface . address . address -> "users4:<iface>" (a
        # named counter; its use count is the number of containers that need the
        # interface's entries below). Looked up as a set for the self-hairpin rule.
        map ifrefs4  { type ifname . ipv4_addr . ipv4_addr : counter }  # "cni0" . 10.77.0.2 . 10.77.0.2 : "users4:cni0"
        map ifrefs6  { type ifname . ipv6_addr . ipv6_addr : counter }  # masqAll: "all6:cni0"
        # (tables made before the interface was in the key also have refs4/refs6,
        # ``address . address : counter``, until GC finds them empty)
        counter users4:<iface>, users6:<iface>, all4:<iface>, all6:<iface>
        # interfaces with published containers, for the masquerade rules
        set hairpin   { type ifname . ifname }                     # "cni0" . "cni0"
        set localhost { type ifname }                              # IPv4 localhost allowed out of it
        set masq_all  { type ifname }                              # masqAll networks
        # interfaces on which splice switched route_localnet on
        set localnet  { type ifname }
        # ownership pairs: digest(map, key) . digest(owner), comment = owner
        set owners    { type ifname . ifname }

        chain prerouting  { type nat hook prerouting priority dstnat; jump hostports }
        chain output      { type nat hook output priority dstnat; jump hostports }
        chain hostports {
            ip daddr . meta l4proto . th dport vmap @cond4_ip
            dnat ip to ip daddr . meta l4proto . th dport map @dnat4_ip
            ip6 daddr . meta l4proto . th dport vmap @cond6_ip
            dnat ip6 to ip6 daddr . meta l4proto . th dport map @dnat6_ip
            fib daddr type != local return
            meta nfproto ipv4 meta l4proto . th dport vmap @cond4
            meta nfproto ipv4 dnat ip to meta l4proto . th dport map @dnat4
            meta nfproto ipv6 meta l4proto . th dport vmap @cond6
            meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @dnat6
        }
        chain cond4-<hash> { <conditionsV4> return; accept }      # one per distinct condition list
        chain postrouting { type nat hook postrouting priority srcnat;
            ct status dnat oifname @masq_all masquerade
            ct status dnat iifname . oifname @hairpin masquerade
            ct status dnat oifname . ip saddr . ip daddr @ifrefs4 masquerade
            ct status dnat oifname . ip6 saddr . ip6 daddr @ifrefs6 masquerade
            [ct status dnat ip saddr . ip daddr @refs4 masquerade, and refs6: legacy maps only]
            ct status dnat ip saddr 127.0.0.0/8 oifname @localhost masquerade }
        chain localnet_guard { type filter hook prerouting priority filter;
            iifname @localnet ip daddr 127.0.0.0/8 ct status ! dnat drop }
    }

Semantics:

* A :class:`~.model.Published` entry without ``host_ip`` is published on every local
  address of its family (``fib daddr type local``, prerouting and output); one with a
  ``host_ip`` matches that destination address exactly (prerouting and output, no local
  check, as the reference portmap plugin).
* ``snat`` (default on) masquerades three kinds of DNATed connections, so that the reply
  comes back through the host's conntrack: (1) one leaving through the interface it came
  in by (a container reaching a published port through the host, routed back out of its
  bridge; ``iifname`` is set in postrouting for forwarded packets only); (2) one from a
  container to itself (source = destination = a registered address: with br_netfilter
  on, the DNATed packet is bridged straight back and postrouting sees no input
  interface; a neighbour's connection needs nothing then, br_netfilter de-NATs the
  bridged reply and the neighbour's address is kept); (3) one from 127.0.0.0/8 (IPv4
  localhost). With ``masq_all`` every DNATed connection leaving through the container's
  interface is masqueraded (macvlan/ipvlan style). The interface is the one the route to
  the container address uses (the bridge), found with one RTM_GETROUTE, unless the
  caller names the attachment's host interfaces and the route leads to none of them
  (overlapping subnets on two bridges, a VRF): then the first of those
  (:func:`~.publisher.masq_iface`). An address with no interface is not registered.
  These entries are per interface: the packet path holds no per-container masquerade
  rule or verdict; two networks sharing one bridge share them too (the most permissive
  setting wins).
* route_localnet: IPv4 localhost needs ``route_localnet=1`` on that interface. splice
  sets it when it was 0, records the interface in ``@localnet``, drops packets to
  127.0.0.0/8 arriving there that are not replies of a DNATed connection (the
  CVE-2020-8558 guard kube-proxy also installs), and switches it back to 0 when the last
  container needing it is gone. An interface whose route_localnet was already 1 is left
  alone. IPv6 has no route_localnet: ``::1`` cannot be DNATed to another host, so IPv6
  mappings are reachable from every other address.
* Registrations are keyed ``iface . address . address`` (the self-hairpin packet's
  ``oifname . saddr . daddr`` at postrouting; with br_netfilter the bridged packet's
  output interface is the bridge): two containers with the same address on two bridges
  each keep their own through the other's ADD and DEL.
* Reference counts kept by the kernel: each container with snat registers its address
  in ``ifrefs4``/``ifrefs6`` with a named counter of its interface as data; the object's
  use count (one nfnetlink dump) is the number of containers needing the interface's
  ``hairpin``/``localhost``/``masq_all`` entries and route_localnet. (Object maps, not
  verdict maps: an element jumping to a chain makes the kernel re-validate every
  reachable verdict map at each commit, O(N).)
* Conflicts. A port already published on the same key by another owner, and a port
  published on every address vs. on a given address of the same family, are refused
  with :class:`~.model.PortConflict` naming the owner, and nothing changes: the elements
  are written with ``create`` (EEXIST) and the claims with ``create``/``add`` (a wildcard
  claim is ``create 1``; a given-address claim is ``add 2``, which fails on a 1), all in
  one transaction.
* Ownership. Element comments carry the owner (<= 127 bytes); the kernel ignores
  comments when comparing, so, as in masq.py, each element has an ownership pair
  ``digest(map, key) . digest(owner)`` in ``@owners``: deleting pair and element in one
  transaction deletes nothing unless the element is still the owner's.

Costs (the common paths never list the table; nft.py explains why a listing is O(N)):

* publish: one transaction of ``create``/``add`` elements. When it fails: ``list chains``
  (cheap) finds missing scaffolding/chains (created once with ``create``, concurrency
  safe) and the transaction is retried with them; otherwise (a conflict, a repeated call,
  a stale entry for a reused container address) the table is listed (O(N)) and
  converged in one transaction, or :class:`~.model.PortConflict` is raised.
* unpublish with entries: one compare-and-delete transaction; a repeated call fails it
  and a create-then-delete probe of the pairs says "none of ours left". Without them (no
  prevResult) the table is listed. Afterwards: a claim of a port published on given
  addresses is released when no such mapping is left (lists the ``dnat*_ip`` maps, which
  only hold given-address mappings), and when an ``ifrefs`` element went, the interface
  entries are re-counted (one object dump) and the unneeded ones removed (re-counted
  after removal: a concurrent publish is restored).
* Conditions: a mapping of a network with conditions also gets a ``cond*`` verdict
  element; adding one re-validates the reachable verdict maps (the ``cond*`` maps only),
  so conditioned mappings cost O(number of conditioned mappings) per conditioned ADD.
* check, owners, gc list the table.

Upgrade from a table with ``refs4``/``refs6`` (before the interface was in the key):
the first publish after the upgrade fails its fast transaction (no ``ifrefs`` maps),
adds the maps and resets ``postrouting`` to the current rules plus lookups of the legacy
maps, so containers published before keep their self-hairpin masquerade (their counters
are the same objects, so the interface entries stay while they need them). Their DEL
fails the fast transaction (no ``ifrefs`` element) and goes down the listing path, which
removes every element of the owner, legacy ones included; GC removes them by owner too.
When GC finds the legacy maps empty it drops them and their rules.

Measured figures: docs/perf.md ("Port mapping").
"""
