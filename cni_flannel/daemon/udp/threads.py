"""The udp forwarder's thread plumbing: supervision, priority, profiling and the garbage
collector's settings while forwarding (the loops themselves: forwarder.py, fastpath.py)."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

log = logging.getLogger("cni_flannel.daemon.udp")

PROFILE_ENV = "CNI_FLANNEL_UDP_PROFILE"  # bench/udp: cProfile each loop into <value>.<thread>
NICE_ENV = "FLANNELD_UDP_NICE"
DATA_PLANE_NICE = -10
GC_YOUNG = 20000  # the cyclic collector's young-generation threshold while forwarding (tune_gc)


def thread_main(target: Callable[[], None], name: str, stopping: Callable[[], bool],
                 pause: float = 1.0) -> Callable[[], None]:
    """The body of a forwarding thread: raised priority, optional profiling (PROFILE_ENV), and
    supervision - a loop that dies of a bug is logged with its traceback and started again, so
    the node's data plane never silently stops while the daemon looks healthy."""
    path = os.environ.get(PROFILE_ENV)

    def supervised() -> None:
        raise_priority(name)
        while True:
            try:
                target()
                return
            except Exception:  # noqa: BLE001 - a bug; the traffic must keep flowing
                log.exception("udp forwarder %s failed; restarting it", name)
                if stopping():
                    return
                time.sleep(pause)

    if not path:
        return supervised

    def profiled() -> None:
        import cProfile
        prof = cProfile.Profile(time.thread_time)  # CPU time: waiting for a CPU is not work
        try:
            prof.runcall(supervised)
        finally:
            prof.dump_stats(f"{path}.{name}")
    return profiled


def tune_gc() -> None:
    """The forwarding loop allocates small acyclic objects (tuples, slices) per batch, which
    the cyclic collector's young generation then scans every 700 allocations: everything
    the daemon holds so far is frozen out of the scans and the young generation is collected
    every 20,000.  Measured (bench/udp, 2 pairs): forwarder CPU per packet -3 to -5 %."""
    import gc
    gc.collect()  # garbage now would otherwise be frozen with the rest, never freed
    gc.freeze()
    if gc.get_threshold()[0] < GC_YOUNG:
        gc.set_threshold(GC_YOUNG, 50, 100)


def raise_priority(name: str) -> None:
    """Run the forwarding thread at nice DATA_PLANE_NICE: vxlan's and host-gw's data planes run
    in softirq context, ahead of every process; a userspace data plane left at nice 0 gets a
    busy node's leftovers and queues pods' packets for tens of milliseconds."""
    nice = int(os.environ.get(NICE_ENV, DATA_PLANE_NICE))
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:  # no CAP_SYS_NICE: run at the daemon's priority
        log.info("udp forwarder %s: cannot set nice %d (%s)", name, nice, exc.strerror)
