"""TCP GRO in userspace (cni_flannel.daemon.udp.gro): a UDP_GRO buffer of wire packets is
split into runs, and each run written as one TSO packet must carry exactly the segments'
bytes.  The segments are cut by an independent segmenter here, and the joined packets are
checked with the RFC 1071 reference checksum (tests/unit/test_udp_packet.slow_checksum)."""
from __future__ import annotations

import os
import random
import struct
from typing import List, Tuple

from hypothesis import given, settings, strategies as st

from cni_flannel.daemon.udp import gro
from cni_flannel.daemon.udp.packet import check_ipv4
from tests.unit.test_udp_offload import tcp_checksum, tcp_fields, tcp_packet
from tests.unit.test_udp_packet import slow_checksum

TS = b"\x01\x01\x08\x0a" + bytes(range(8))  # NOP NOP timestamps: 12 option bytes, as Linux sends
# fixed cases in make test (as tests/fuzz/settings.py); CNI_FUZZ_RANDOM=1: new ones each run
PROPERTY = settings(max_examples=60, deadline=None, database=None, derandomize=os.environ.get("CNI_FUZZ_RANDOM") != "1")


def segments(stream: bytes, mss: int, seq: int, psh_last: bool = True, options: bytes = TS) -> List[bytearray]:
    """What a TCP sender puts on the wire for ``stream``: MSS-sized segments, ACK, PSH last."""
    out = []
    for o in range(0, len(stream), mss):
        last = o + mss >= len(stream)
        out.append(tcp_packet(stream[o:o + mss], seq=(seq + o) % (1 << 32), ident=o // mss,
                              flags=0x18 if last and psh_last else 0x10, options=options))
    return out


def gro_buffer(packets: List[bytes]) -> Tuple[memoryview, int, int]:
    """The socket's view: datagrams laid end to end, all of the first one's size but the last."""
    buf = bytearray(b"".join(packets))
    return memoryview(buf), len(buf), len(packets[0])


def written(mv: memoryview, n: int, step: int) -> List[Tuple[str, bytes, Tuple[int, ...]]]:
    """What the forwarder would write for each run: ("tso", packet, vnet header) or ("one", packet, ())."""
    out = []
    for first, count in gro.tcp_runs(mv, n, step):
        off = first * step
        if count == 1:
            out.append(("one", bytes(mv[off:min(n, off + step)]), ()))
            continue
        iov = gro.run_iov(mv, n, step, first, count)
        payload = sum(len(x) for x in iov)
        hdr = gro.tso_header(mv, off, payload, mv[(first + count - 1) * step + 33])
        out.append(("tso", hdr[10:] + b"".join(bytes(x) for x in iov), struct.unpack("<BBHHHH", hdr[:10])))
    return out


def finish(sup: bytes) -> bytes:
    """The TSO packet as the kernel completes it (NEEDS_CSUM): the TCP checksum, by the reference."""
    p = bytearray(sup)
    p[36:38] = tcp_checksum(p).to_bytes(2, "big")
    return bytes(p)


@PROPERTY
@given(size=st.integers(1, 60000), mss=st.integers(100, 1460), seq=st.integers(0, (1 << 32) - 1),
       opts=st.sampled_from([b"", TS]))
def test_segment_then_coalesce_gives_back_the_stream(size, mss, seq, opts):
    stream = random.Random(size ^ mss).randbytes(size)
    packets = segments(stream, mss, seq, options=opts)
    if sum(map(len, packets)) > 65535:
        return
    mv, n, step = gro_buffer(packets)
    writes = written(mv, n, step)
    # one packet: written as it is; several: exactly one TSO packet
    assert [w[0] for w in writes] == (["one"] if len(packets) == 1 else ["tso"])
    kind, pkt, vnet = writes[0]
    if kind == "one":
        assert pkt == bytes(packets[0])
        return
    hl = 40 + len(opts)
    assert vnet == (1, 1, hl, mss, 20, 16)  # NEEDS_CSUM, GSO_TCPV4, header length, MSS, csum at 20+16
    assert tcp_fields(pkt)["payload"] == stream
    f = tcp_fields(pkt)
    assert f["seq"] == seq and f["flags"] == 0x18 and f["ttl"] == 63 and f["id"] == 0
    assert check_ipv4(pkt, len(pkt)) is None
    assert slow_checksum(pkt[:20]) == 0  # the IP header checksum, by the reference
    # the field holds the folded pseudo-header sum, so the finished checksum is the reference's
    pseudo = pkt[12:20] + struct.pack("!BBH", 0, 6, len(pkt) - 20)
    assert ~slow_checksum(pseudo) & 0xFFFF == int.from_bytes(pkt[36:38], "big")
    assert slow_checksum(pseudo + finish(pkt)[20:]) == 0
    # everything else in the header is the first segment's
    first = bytes(packets[0])
    assert pkt[20:33] == first[20:33] and pkt[34:36] == first[34:36] and pkt[38:hl] == first[38:hl]


@PROPERTY
@given(data=st.data())
def test_any_mix_is_written_whole_and_in_order(data):
    """Whatever the buffer holds (flows, gaps, flags, corrupt lengths), the runs cover every
    datagram once, in order, and each TSO packet holds exactly its segments' payloads."""
    mss = data.draw(st.integers(200, 600))
    stream = random.Random(mss).randbytes(mss * 20)
    packets = segments(stream, mss, 1000, psh_last=False)[:data.draw(st.integers(2, 20))]
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(packets) - 1))
        what = data.draw(st.sampled_from(["port", "seq", "psh", "syn", "len", "ttl", "opt", "frag"]))
        p = packets[i]
        if what == "port":
            p[20] ^= 1
        elif what == "seq":
            p[27] ^= 4
        elif what == "psh":
            p[33] = 0x18
        elif what == "syn":
            p[33] = 0x12
        elif what == "len":
            p[3] ^= 1
        elif what == "ttl":
            p[8] -= 1
        elif what == "opt":
            p[50] ^= 0xFF
        else:
            p[6] |= 0x20
    mv, n, step = gro_buffer(packets)
    runs = gro.tcp_runs(mv, n, step)
    assert [i for first, count in runs for i in range(first, first + count)] == list(range(len(packets)))
    for (first, count), (kind, pkt, _) in zip(runs, written(mv, n, step)):
        if kind == "tso":
            group = packets[first:first + count]
            assert tcp_fields(pkt)["payload"] == b"".join(tcp_fields(p)["payload"] for p in group)
            assert all(p[33] == 0x10 for p in group[:-1]) and group[-1][33] in (0x10, 0x18)
            free = {2, 3, 4, 5, 10, 11, 24, 25, 26, 27, 33, 36, 37}  # length, id, seq, flags, checksums
            same = [i for i in range(52) if i not in free]
            assert all([p[i] for i in same] == [group[0][i] for i in same] for p in group)
            seqs = [tcp_fields(p)["seq"] for p in group]
            assert seqs == [seqs[0] + mss * k for k in range(count)]


def test_runs_split_where_gro_would():
    mss = 500
    a = segments(random.Random(1).randbytes(mss * 4), mss, 0, psh_last=True)      # PSH ends a run
    b = segments(random.Random(2).randbytes(mss * 3), mss, 9000, psh_last=False)  # a gap in seq
    mv, n, step = gro_buffer(a + b)
    assert gro.tcp_runs(mv, n, step) == [(0, 4), (4, 3)]
    train = segments(random.Random(3).randbytes(mss * 10), mss, 0, psh_last=False)
    train[5][20:22] = (4321).to_bytes(2, "big")                                   # one stranger
    mv, n, step = gro_buffer(train)
    assert gro.tcp_runs(mv, n, step) == [(0, 5), (5, 1), (6, 4)]
    other = segments(b"x" * mss * 2, mss, 2000, psh_last=False)
    other[1][20:22] = (1234).to_bytes(2, "big")                                   # another flow
    mv, n, step = gro_buffer(other)
    assert gro.tcp_runs(mv, n, step) == [(0, 1), (1, 1)]


def test_non_tcp_and_short_buffers_are_written_alone():
    udp = [bytearray(tcp_packet(b"u" * 100, flags=0x10)) for _ in range(3)]
    for p in udp:
        p[9] = 17
    mv, n, step = gro_buffer(udp)
    assert gro.tcp_runs(mv, n, step) == [(0, 1), (1, 1), (2, 1)]
    bare = segments(b"y" * 300, 300, 0, psh_last=False) + [tcp_packet(b"", seq=300, flags=0x10)]
    mv, n, step = gro_buffer(bare)   # a header without payload cannot join a run
    assert gro.tcp_runs(mv, n, step) == [(0, 1), (1, 1)]


def whole(mv: memoryview, n: int, step: int) -> bool:
    hl = 20 + (mv[32] >> 4) * 4
    return gro.whole_run(mv, n, step, [mv[o:o + hl] for o in range(0, n, step)])


@PROPERTY
@given(data=st.data())
def test_the_fast_whole_run_check_never_says_yes_where_tcp_runs_says_no(data):
    """whole_run (block compares) is a shortcut for tcp_runs == [(0, all)]: mutate any field
    of any segment and it must not accept what the field-by-field rules split."""
    mss = data.draw(st.integers(200, 1400))
    seq = data.draw(st.sampled_from([1000, (1 << 32) - 3 * mss, data.draw(st.integers(0, (1 << 32) - 1))]))
    count = data.draw(st.integers(2, 40))
    stream = random.Random(mss).randbytes(mss * count - data.draw(st.integers(0, mss - 1)))
    packets = segments(stream, mss, seq, psh_last=data.draw(st.booleans()),
                       options=data.draw(st.sampled_from([b"", TS])))
    if sum(map(len, packets)) > 65535:
        return
    clean = gro_buffer([bytes(p) for p in packets])
    for _ in range(data.draw(st.integers(0, 3))):
        p = packets[data.draw(st.integers(0, len(packets) - 1))]
        at = data.draw(st.integers(0, len(p) - 1 if len(p) < 60 else 59))
        p[at] ^= 1 << data.draw(st.integers(0, 7))
    mv, n, step = gro_buffer(packets)
    if whole(mv, n, step):
        assert gro.tcp_runs(mv, n, step) == [(0, len(packets))]
    if seq + (count - 1) * mss < 1 << 32:  # untouched and not wrapping: the shortcut is taken
        assert whole(*clean) and gro.tcp_runs(*clean) == [(0, len(packets))]


def test_the_whole_run_check_ignores_ids_and_checksums_only():
    packets = segments(random.Random(7).randbytes(500 * 6), 500, 77, psh_last=True)
    for i, p in enumerate(packets):  # a sender with fixed ids and partial checksums
        p[4:6] = b"\0\0"
        p[36:38] = (i * 977).to_bytes(2, "big")
    assert whole(*gro_buffer(packets))
    for at, why in ((8, "TTL"), (1, "TOS"), (47, "window"), (50, "an option")):
        bad = [bytearray(p) for p in packets]
        bad[3][at] ^= 1
        assert not whole(*gro_buffer(bad)), why
    bad = [bytearray(p) for p in packets]
    bad[2][33] = 0x18  # PSH before the last
    assert not whole(*gro_buffer(bad))


def test_the_two_trains_of_one_super_packet_are_joined_and_nothing_else():
    mss = 1000
    packets = segments(random.Random(9).randbytes(mss * 46), mss, 5000, psh_last=True)
    head, tail = gro_buffer(packets[:44]), gro_buffer(packets[44:])
    assert whole(*head) and whole(*tail)
    (p, p_n, step), (q, q_n, _) = head, tail
    assert gro.continues(p, p_n, q, q_n, step)
    # the joined TSO packet carries the stream: header of the first, payloads in order
    iov = gro.run_iov(p, p_n, step, 0, 44) + gro.run_iov(q, q_n, step, 0, 2)
    hdr = gro.tso_header(p, 0, sum(len(x) for x in iov), q[q_n - step + 33] if q_n >= step else q[33])
    joined = hdr[10:] + b"".join(bytes(x) for x in iov)
    assert tcp_fields(joined)["payload"] == random.Random(9).randbytes(mss * 46)
    assert len(joined) <= 65535 and check_ipv4(joined, len(joined)) is None
    for what in ("seq", "port", "ack", "ts", "ttl"):
        bad = [bytearray(x) for x in packets[44:]]
        for x in bad:
            if what == "seq":
                x[24:28] = (int.from_bytes(x[24:28], "big") + 1).to_bytes(4, "big")
            elif what == "port":
                x[21] ^= 1
            elif what == "ack":
                x[31] ^= 1
            elif what == "ts":
                x[48] ^= 1
            else:
                x[8] -= 1
        q2, q2_n, _ = gro_buffer(bad)
        assert not gro.continues(p, p_n, q2, q2_n, step), what
    small, small_n, small_step = gro_buffer(segments(b"z" * 2000, 1000, 64 * 1000, psh_last=False))
    big = gro_buffer(segments(random.Random(9).randbytes(mss * 64), mss, 0, psh_last=False)[:64])
    assert not gro.continues(big[0], big[1], small, small_n, small_step)  # over 64 KB together
