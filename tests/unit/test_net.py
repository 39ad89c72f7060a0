"""cni_flannel.net without root: error translation, namespace identity, message
encoding, reply parsing, and the import-cost promise."""
from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys

import pytest

from cni_flannel.cni.errors import CNIError, InvalidConfig
from cni_flannel.net import _nl, ns, sysctl
from cni_flannel.net._routes import RTNH_F_ONLINK, RouteOps
from cni_flannel.net.errors import (Exists, NetFailure, NetlinkError, NetNSNotFound, NotFound,
                                    failure, translate, translated)
from cni_flannel.net.types import RT_SCOPE_LINK, Route, normalize_cidr

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": ROOT}).stdout.strip()


def test_importing_the_package_imports_no_pyroute2():
    out = _python("import sys, cni_flannel.net, cni_flannel.net.handle, cni_flannel.plugins.loopback, "
                  "cni_flannel.plugins.bridge; print(any(m.startswith('pyroute2') for m in sys.modules))")
    assert out == "False"


def test_message_classes_load_without_pyroute2_init():
    out = _python("import sys; from cni_flannel.net import _nl; _nl.messages(); "
                  "print('asyncio' in sys.modules, 'pyroute2.ndb' in sys.modules, 'pyroute2.netlink.rtnl.ifinfmsg' in sys.modules)")
    assert out == "False False True"


def test_full_pyroute2_still_importable_after_the_stub():
    out = _python("from cni_flannel.net import _nl; _nl.messages(); from pyroute2 import IPRoute; print(IPRoute.__name__)")
    assert out == "IPRoute"


@pytest.mark.parametrize("err,cls", [(errno.ENODEV, NotFound), (errno.ENOENT, NotFound),
                                     (errno.ESRCH, NotFound), (errno.EADDRNOTAVAIL, NotFound),
                                     (errno.EEXIST, Exists), (errno.EPERM, NetFailure),
                                     (errno.EOPNOTSUPP, NetFailure)])
def test_failure_classes(err, cls):
    exc = failure('link "cni0"', err)
    assert type(exc) is cls and exc.errno == err and exc.code == 999
    assert exc.msg == f'link "cni0": {os.strerror(err)}'


def test_translate_names_the_object_and_keeps_cni_errors():
    with pytest.raises(NotFound) as info:
        with translate("route 10.0.0.0/8 via 10.1.1.1"):
            raise NetlinkError(errno.ESRCH, "x")
    assert info.value.msg == "route 10.0.0.0/8 via 10.1.1.1: No such process"
    with pytest.raises(InvalidConfig):
        with translate("anything"):
            raise InvalidConfig("bad")

    @translated(lambda name: f"link {name!r}")
    def boom(name):
        raise OSError(errno.EBUSY, "busy")

    with pytest.raises(NetFailure, match="link 'x': Device or resource busy"):
        boom("x")


def test_netns_identity(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("")
    assert not ns.exists("")
    assert not ns.exists(str(tmp_path / "missing"))
    assert not ns.exists(str(plain))
    assert ns.exists("/proc/self/ns/net")
    assert ns.is_current("/proc/self/ns/net")
    assert not ns.is_current(str(plain))
    with pytest.raises(NetNSNotFound) as info:
        ns.open_fd(str(plain))
    assert info.value.code == 4 and "is not a network namespace" in info.value.msg
    with pytest.raises(NetNSNotFound, match="failed to open netns"):
        ns.open_fd(str(tmp_path / "missing"))
    with pytest.raises(NetNSNotFound):
        ns.open_fd("/proc/self/ns/uts")  # a namespace, but not a network one


def test_enter_own_namespace_is_a_no_op():
    own = os.stat("/proc/self/ns/net").st_ino
    with ns.enter("/proc/self/ns/net"):
        assert os.stat("/proc/thread-self/ns/net").st_ino == own
    with ns.enter(None):
        assert os.stat("/proc/thread-self/ns/net").st_ino == own
    assert os.stat("/proc/thread-self/ns/net").st_ino == own


def test_sysctl_keys_are_paths():
    assert sysctl._path("net/ipv4/conf/eth0.100/arp_notify") == "/proc/sys/net/ipv4/conf/eth0.100/arp_notify"
    for bad in ("net/../../etc/passwd", "net//x", "/"):
        with pytest.raises(ValueError):
            sysctl._path(bad)
    assert sysctl.read("kernel/ostype") == "Linux"


def test_normalize_cidr():
    assert normalize_cidr("default") == "0.0.0.0/0"
    assert normalize_cidr("10.244.1.5/16") == "10.244.0.0/16"
    assert normalize_cidr("10.244.1.5") == "10.244.1.5/32"
    assert normalize_cidr("fd00::1") == "fd00::1/128"


def _roundtrip(kind: str, msg):
    msg["header"]["type"] = 16
    msg.encode()
    back = _nl.messages()[kind](bytearray(msg.data))
    back.decode()
    return back


def test_veth_message_carries_peer_name_netns_and_mtu():
    from cni_flannel.net._links import LinkOps

    sent = []

    class Rec(LinkOps):
        netns = None

        class _nl:  # noqa: N801 - stands in for the Socket
            @staticmethod
            def request(msg, mtype, flags=0, dump=False, raw=False):
                sent.append((msg, mtype, flags))
                if mtype == _nl.RTM_GETLINK:
                    raise NetlinkError(errno.ENODEV, "x")
                return []

    with pytest.raises(NotFound):  # the re-read after creation fails in this stub
        Rec().add_veth("veth01234567", "eth0", peer_netns_fd=7, mtu=1450, peer_mac="0A:58:00:00:00:01")
    msg, mtype, flags = sent[0]
    assert mtype == _nl.RTM_NEWLINK and flags == _nl.NLM_F_CREATE | _nl.NLM_F_EXCL
    back = _roundtrip("link", msg)
    assert back.get_attr("IFLA_IFNAME") == "veth01234567" and back.get_attr("IFLA_MTU") == 1450
    info = back.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "eth0"
    assert peer.get_attr("IFLA_NET_NS_FD") == 7
    assert peer.get_attr("IFLA_ADDRESS") == "0a:58:00:00:00:01"


def test_route_messages():
    ops = RouteOps()
    m = ops._route_msg(Route(dst="10.96.0.0/12", index=3))
    assert m["scope"] == RT_SCOPE_LINK and m["dst_len"] == 12
    m = _roundtrip("route", ops._route_msg(Route(dst="192.0.2.0/24", gw="10.244.1.1", index=3,
                                                  onlink=True, mtu=1400)))
    assert m["flags"] & RTNH_F_ONLINK and m["scope"] == 0
    assert m.get_attr("RTA_GATEWAY") == "10.244.1.1" and m.get_attr("RTA_OIF") == 3
    assert m.get_attr("RTA_METRICS").get_attr("RTAX_MTU") == 1400
    m = ops._route_msg(Route(dst="::/0", gw="fd00::1"))
    assert m["family"] == 10 and m["dst_len"] == 0 and m.get_attr("RTA_DST") is None


def test_address_message_has_broadcast_for_ipv4_only():
    ops = RouteOps()
    m = ops._addr_msg(2, "10.244.1.1/24")
    assert m.get_attr("IFA_BROADCAST") == "10.244.1.255" and m.get_attr("IFA_LOCAL") == "10.244.1.1"
    m = ops._addr_msg(2, "fd00::1/64", nodad=True)
    assert m.get_attr("IFA_BROADCAST") is None and m.get_attr("IFA_FLAGS") == 2


class _FakeSock:
    def __init__(self, *chunks):
        self.chunks = list(chunks)

    def recv_into(self, buf):
        chunk = self.chunks.pop(0)
        buf[:len(chunk)] = chunk
        return len(chunk)


def _hdr(mtype, seq, payload=b""):
    return struct.pack("=IHHII", 16 + len(payload), mtype, 0, seq, 0) + payload


def _socket(*chunks):
    s = object.__new__(_nl.Socket)
    s._sock = _FakeSock(*chunks)
    return s


def test_reply_parsing_errors_stale_replies_and_done():
    s = _socket(_hdr(_nl.NLMSG_ERROR, 1, struct.pack("=i", -errno.ENODEV) + b"\0" * 16))
    with pytest.raises(NetlinkError) as info:
        s._collect(1)
    assert info.value.errno == errno.ENODEV
    # a stale reply (other sequence number) is skipped; ACK (error 0) ends the request
    s = _socket(_hdr(_nl.NLMSG_ERROR, 1, struct.pack("=i", -1) + b"\0" * 16) +
                _hdr(_nl.NLMSG_ERROR, 2, struct.pack("=i", 0) + b"\0" * 16))
    assert s._collect(2) == []
    s = _socket(_hdr(_nl.NLMSG_DONE, 3, b"\0\0\0\0"))
    assert s._collect(3) == []


def test_errors_are_cni_errors():
    assert issubclass(NetFailure, CNIError) and NetNSNotFound.code == 4
