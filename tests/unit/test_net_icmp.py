"""cni_flannel.net.icmp: echo packets of the doctor's probe and the harness's ping (pure)."""
from __future__ import annotations

import struct

import pytest

from cni_flannel.net.icmp import checksum, echo_reply, echo_request


def test_checksum_of_the_rfc1071_example() -> None:
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length: padded with a zero byte


def test_v4_request_carries_a_valid_checksum_and_v6_leaves_it_to_the_kernel() -> None:
    v4 = echo_request(4, 0x1234, 7, b"abc")
    assert v4[0] == 8 and struct.unpack("!HH", v4[4:8]) == (0x1234, 7) and v4.endswith(b"abc")
    assert checksum(v4) == 0
    v6 = echo_request(6, 0x1234, 7, b"abc")
    assert v6[0] == 128 and v6[2:4] == b"\0\0"


def reply(kind: int, ident: int, seq: int) -> bytes:
    return struct.pack("!BBHHH", kind, 0, 0, ident, seq) + b"payload"


@pytest.mark.parametrize("version,data,want", [
    (4, bytes([0x45]) + bytes(19) + reply(0, 5, 9), (5, 9)),      # IPv4 raw: the IP header first
    (4, bytes([0x46]) + bytes(23) + reply(0, 5, 9), (5, 9)),      # with IP options (IHL 6)
    (6, reply(129, 5, 9), (5, 9)),
    (4, bytes([0x45]) + bytes(19) + reply(8, 5, 9), None),        # a request (e.g. our own, looped back)
    (6, reply(128, 5, 9), None),
    (4, bytes([0x45]) + bytes(19) + b"\0\0", None),               # too short
    (6, b"", None),
])
def test_echo_reply(version: int, data: bytes, want) -> None:
    assert echo_reply(version, data) == want
