"""The udp backend's data plane: raw IPv4 packets between flannel0 and UDP port 8285.

    packet     IPv4 checks, TTL − 1 (RFC 1624), ICMP net unreachable (pure)
    routes     PeerTable: inner destination -> (peer PublicIP, Port), longest prefix (pure)
    offload    TSO super-packets cut into wire packets, GRO trains merged back (pure)
    counters   per-direction totals and drop reasons; the /metrics collector
    forwarder  Forwarder: the two threads (plain path: one packet per syscall)
    fastpath   OffloadForwarder: IFF_VNET_HDR + TSO4 on flannel0, UDP GSO/GRO on the socket

The backend (device, route, peers from leases) is cni_flannel.daemon.backends.udp.
"""
