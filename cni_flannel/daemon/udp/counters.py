"""The udp forwarder's counters: plain integers, one writer thread per direction.

Each forwarding thread adds to its own :class:`Direction` once per batch (not per packet),
so readers (the log line, /metrics) only ever see whole batches.  ``export`` gives
Prometheus-shaped samples: (name, labels, value).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

Sample = Tuple[str, Dict[str, str], float]

# Drop reasons beyond packet.REASONS
UNKNOWN_SOURCE = "unknown_source"   # datagram from an address that is no peer's PublicIP
NOT_FOR_US = "not_for_us"           # inner destination outside this node's subnet
NO_ROUTE = "no_route"               # destination outside the Network (nothing to send it to)
UNREACHABLE = "unreachable"         # in the Network, no lease: ICMP net unreachable sent
OVERSIZED = "oversized"             # datagram larger than the TUN MTU
IO_ERROR = "io_error"               # send / write failed (peer unreachable, device gone)


class Direction:
    """One direction's totals: ``tun_to_udp`` (encapsulated) or ``udp_to_tun`` (decapsulated)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.packets = 0
        self.bytes = 0
        self.wakeups = 0
        self.batched = 0        # packets moved in a batch of several (one GSO send, one TSO write)
        self.partial = 0        # segments sent with a partial TCP checksum (tso.py; peers that finish it)
        self.cpu_seconds = 0.0  # the thread's CPU time so far (user + system)
        self.system_seconds = 0.0  # of which in the kernel (the syscalls: copies, the stack)
        self.drops: Dict[str, int] = {}

    def add(self, packets: int, nbytes: int, drops: Dict[str, int], cpu: float = 0.0, batched: int = 0,
            system: float = 0.0, partial: int = 0) -> None:
        self.packets += packets
        self.batched += batched
        self.partial += partial
        self.bytes += nbytes
        self.wakeups += 1
        self.cpu_seconds = cpu
        self.system_seconds = system
        for reason, n in drops.items():
            self.drops[reason] = self.drops.get(reason, 0) + n

    def export(self) -> List[Sample]:
        d = {"direction": self.name}
        out: List[Sample] = [("flannel_udp_packets_total", d, self.packets),
                             ("flannel_udp_bytes_total", d, self.bytes),
                             ("flannel_udp_wakeups_total", d, self.wakeups),
                             ("flannel_udp_batched_packets_total", d, self.batched),
                             ("flannel_udp_partial_checksum_packets_total", d, self.partial),
                             ("flannel_udp_cpu_seconds_total", d, self.cpu_seconds)]
        out += [("flannel_udp_drops_total", {**d, "reason": r}, n) for r, n in sorted(self.drops.items())]
        return out

    def summary(self) -> str:
        drops = ", ".join(f"{r} {n}" for r, n in sorted(self.drops.items())) or "none"
        return f"{self.name}: {self.packets} packets, {self.bytes} bytes; dropped: {drops}"


class Counters:
    def __init__(self) -> None:
        self.tun_to_udp = Direction("tun_to_udp")
        self.udp_to_tun = Direction("udp_to_tun")

    def export(self) -> List[Sample]:
        return self.tun_to_udp.export() + self.udp_to_tun.export()

    def as_dict(self) -> Dict[str, Dict[str, object]]:
        return {d.name: {"packets": d.packets, "bytes": d.bytes, "wakeups": d.wakeups, "batched": d.batched,
                         "partial_checksum": d.partial,
                         "cpu_seconds": round(d.cpu_seconds, 3),
                         "system_seconds": round(d.system_seconds, 3), "drops": dict(d.drops)} for d in (self.tun_to_udp, self.udp_to_tun)}

    def summary(self) -> str:
        return f"{self.tun_to_udp.summary()}; {self.udp_to_tun.summary()}"


HELP = {"flannel_udp_packets_total": "Packets the udp backend forwarded",
        "flannel_udp_bytes_total": "Bytes (inner IP packets) the udp backend forwarded",
        "flannel_udp_wakeups_total": "Times a forwarding thread woke up (packets per wakeup = batching)",
        "flannel_udp_batched_packets_total": "Packets moved several at a time (one UDP GSO send, one TSO write to flannel0)",
        "flannel_udp_partial_checksum_packets_total": "TCP segments sent with a partial checksum, to peers whose lease says PartialChecksums",
        "flannel_udp_cpu_seconds_total": "CPU time of a forwarding thread",
        "flannel_udp_drops_total": "Packets the udp backend dropped, by reason"}


class Collector:
    """A prometheus_client collector over the live forwarder's counters (None: no samples)."""

    def __init__(self, source: "Callable[[], Optional[Counters]]") -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily
        counters = self.source()
        if counters is None:
            return
        families: Dict[str, Any] = {}
        for name, labels, value in counters.export():
            fam = families.get(name)
            if fam is None:
                fam = families[name] = CounterMetricFamily(name[:-len("_total")], HELP[name], labels=sorted(labels))
            fam.add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()


_registered: List[Any] = []


def register(source: "Callable[[], Optional[Counters]]", registry: Any = None) -> bool:
    """Serve the counters on the daemon's /metrics (once per process; the latest source wins)."""
    if _registered:
        _registered[0].source = source
        return True
    try:
        if registry is None:
            from cni_flannel.daemon.metrics import METRICS
            registry = METRICS.registry
        collector = Collector(source)
        registry.register(collector)
    except ImportError:  # no prometheus_client: the log line still carries the counters
        return False
    _registered.append(collector)
    return True
