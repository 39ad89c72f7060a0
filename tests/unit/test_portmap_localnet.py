"""route_localnet's interface: the most specific up route to the pod in /proc/net/route."""
from __future__ import annotations

from cni_flannel.portmap.localnet import routable_interface

ROUTES = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000012C6\t00000000\t0001\t0\t0\t0\t0000FEFF\t0\t0\t0
cni0\t0001F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
down0\t0501F40A\t00000000\t0000\t0\t0\t0\tFFFFFFFF\t0\t0\t0
slow0\t0001F40A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
"""


def test_longest_prefix_then_metric_wins():
    assert routable_interface("10.244.1.5", ROUTES) == "cni0"      # /24 beats the default; down0 is not up
    assert routable_interface("198.18.3.4", ROUTES) == "eth0"      # 198.18.0.0/15
    assert routable_interface("8.8.8.8", ROUTES) == "eth0"         # default route


def test_no_route():
    assert routable_interface("10.0.0.1", ROUTES.splitlines()[0]) is None
