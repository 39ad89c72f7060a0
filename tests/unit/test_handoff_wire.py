"""The hand-off framing (cni/wire.py) and the agent's decoder: round trips, and fuzzing — no
input may make the decoder raise anything but WireError, nor the agent's worker anything but a
refusal."""

from __future__ import annotations

import socket
from typing import Dict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_flannel.agent import worker
from cni_flannel.cni import wire

FUZZ = settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

env_keys = st.text(st.characters(blacklist_characters="=\x00", blacklist_categories=("Cs",)), min_size=1, max_size=20)
env_values = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=wire.MAX_NAME)


def _request(env: Dict[str, str], stdin: bytes = b"{}", plugin: str = "bridge") -> bytes:
    return wire.encode_request("0.1.0", plugin, env, stdin)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(version=names, plugin=names, env=st.dictionaries(env_keys, env_values, max_size=8), stdin=st.binary())
def test_request_round_trip(version: str, plugin: str, env: Dict[str, str], stdin: bytes) -> None:
    frame = wire.encode_request(version, plugin, env, stdin)
    assert wire.frame_length(frame[:4]) == len(frame) - 4
    assert wire.decode_request(frame[4:]) == (version, plugin, env, stdin)


@FUZZ
@given(body=st.binary(max_size=300))
def test_any_bytes_decode_or_raise_wire_error(body: bytes) -> None:
    for decode in (wire.decode_request, wire.decode_reply):
        try:
            decode(body)
        except wire.WireError:
            pass


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """Valid request bodies with bytes changed, cut off or appended: close to what parses."""
    body = bytearray(_request(draw(st.dictionaries(env_keys, env_values, max_size=4)), draw(st.binary(max_size=20)))[4:])
    for _ in range(draw(st.integers(1, 4))):
        what = draw(st.sampled_from(["flip", "cut", "append"]))
        if what == "flip" and body:
            i = draw(st.integers(0, len(body) - 1))
            body[i] = draw(st.integers(0, 255))
        elif what == "cut":
            del body[draw(st.integers(0, len(body))):]
        else:
            body += draw(st.binary(min_size=1, max_size=8))
    return bytes(body)


@FUZZ
@given(body=mutated_requests())
def test_mutated_requests_decode_or_raise_wire_error(body: bytes) -> None:
    try:
        version, plugin, env, stdin = wire.decode_request(body)
    except wire.WireError:
        return
    # whatever got through has the types the worker relies on
    assert isinstance(version, str) and isinstance(plugin, str) and isinstance(stdin, bytes)
    assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in env.items())


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), mutated_requests().map(lambda b: len(b).to_bytes(4, "big") + b)))
def test_agent_worker_refuses_every_malformed_or_fd_less_request(data: bytes) -> None:
    """The worker's whole receive path (peer check, frame, decode, descriptors) on a socket:
    anything without two namespace descriptors ends in a Refusal, nothing else escapes."""
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(worker.Refusal):
            worker._receive(ours)
    finally:
        ours.close()
        theirs.close()


def test_oversized_frames_are_refused_before_reading_them() -> None:
    with pytest.raises(wire.WireError, match="exceeds"):
        wire.frame_length((wire.MAX_FRAME + 1).to_bytes(4, "big"))
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall((wire.MAX_FRAME + 1).to_bytes(4, "big"))  # and nothing else: no 16 MB wait
        with pytest.raises(worker.Refusal, match="exceeds"):
            worker._receive(ours)
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("body,why", [
    (b"", "0 fields"),
    (wire.encode_frame([b"x"] * 5)[4:], "not a cni-flannel hand-off request"),
    (wire.encode_frame([wire.MAGIC, b"0.1.0", b"bad name", b"", b""])[4:], "plugin is not a short printable name"),
    (wire.encode_frame([wire.MAGIC, b"", b"bridge", b"", b""])[4:], "version is not"),
    (wire.encode_frame([wire.MAGIC, b"0.1.0", b"bridge", b"A=1", b""])[4:], "not NUL-terminated"),
    (wire.encode_frame([wire.MAGIC, b"0.1.0", b"bridge", b"=1\0", b""])[4:], "without KEY="),
    (wire.encode_frame([wire.MAGIC, b"0.1.0", b"bridge", b"NOEQUALS\0", b""])[4:], "without KEY="),
    (wire.encode_frame([wire.MAGIC, b"0.1.0", b"bridge", b"", b"", b"extra"])[4:], "more than 5 fields"),
    (b"\0\0\0\x09abc", "overruns"),
    (b"\0\0", "truncated field header"),
])
def test_malformed_requests_say_what_is_wrong(body: bytes, why: str) -> None:
    with pytest.raises(wire.WireError, match=why):
        wire.decode_request(body)


def test_environment_decodes_as_os_environ_does() -> None:
    raw = b"A=1\0B=x=y\0A=2\0C=\xff\0"
    env = wire.decode_env(raw)
    assert env == {"A": "1", "B": "x=y", "C": "\udcff"}  # first A wins; bytes kept (surrogateescape)
    assert wire.encode_env(env) == b"A=1\0B=x=y\0C=\xff\0"


def test_replies() -> None:
    assert wire.decode_reply(wire.encode_result(7, b'{"code": 7}')[4:]) == (7, b'{"code": 7}')
    assert wire.decode_reply(wire.encode_result(0, b"")[4:]) == (0, b"")
    assert wire.decode_reply(wire.encode_refusal("no")[4:]) is None
    with pytest.raises(wire.WireError):
        wire.encode_result(256, b"")
    for bad in ([b"ok", b"256", b""], [b"ok", b"-1", b""], [b"ok", b"", b""], [b"ok", b"1"], [b"maybe", b"x"]):
        with pytest.raises(wire.WireError):
            wire.decode_reply(wire.encode_frame(bad)[4:])


def test_recv_frame_reads_a_frame_in_pieces_and_detects_truncation() -> None:
    ours, theirs = socket.socketpair()
    try:
        frame = _request({"K": "v" * 100000}, b"x" * 70000)
        theirs.sendall(frame)
        assert wire.recv_frame(ours, []) == frame[4:]
        theirs.sendall(frame[:1000])
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(wire.Truncated):
            wire.recv_frame(ours)
        assert wire.recv_frame(ours) is None  # EOF before a frame: nothing
    finally:
        ours.close()
        theirs.close()
