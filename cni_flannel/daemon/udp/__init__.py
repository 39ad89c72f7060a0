"""The udp backend's data plane: raw IPv4 packets between flannel0 and UDP port 8285.

    packet     IPv4 checks, TTL − 1 (RFC 1624), ICMP net unreachable (pure)
    routes     PeerTable: inner destination -> (peer PublicIP, Port), longest prefix (pure)
    offload    virtio_net_hdr / UDP GSO-GRO constants, partial checksums completed (pure)
    gro        TCP GRO in userspace: a UDP_GRO buffer's runs of one flow -> TSO writes (pure)
    counters   per-direction totals and drop reasons; the /metrics collector
    forwarder  Forwarder: the two threads (plain path: one packet per syscall)
    fastpath   OffloadForwarder: work per batch - UDP_SEGMENT sends, UDP_GRO receives,
               TSO writes to flannel0 (IFF_VNET_HDR)

The backend (device, route, peers from leases) is cni_flannel.daemon.backends.udp.
"""
