"""The pieces of the portmap plugin (containernetworking/plugins plugins/meta/portmap).

    config      stdin -> PortmapConfig: options, port mappings, backend choice and
                the container addresses from prevResult; every value validated
    conditions  conditionsV4/V6: the subset of iptables/nft matches we can check
    iptables    the reference iptables layout as firewall RuleSets (nat table)
    nftables    the reference nftables layout (ip/ip6 cni_hostport) as RuleSets
    conntrack   drop stale UDP conntrack entries for the mapped host ports
    localnet    route_localnet=1 on the interface that routes to the pod

Everything here is pure or stdlib-only: no pyroute2 on the portmap path.  Rules
are written through :mod:`cni_flannel.firewall`, one transaction per family.
"""
