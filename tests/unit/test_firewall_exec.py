"""The firewall's command runner and the iptables-save tokenizer: fast paths, same answers."""

from __future__ import annotations

import random
import shlex
import threading

import pytest

from cni_flannel.cni.errors import TryAgainLater
from cni_flannel.firewall import _exec, _iptables
from cni_flannel.firewall._exec import Runner


def test_runner_returns_output_and_exit_code_and_leaves_no_thread() -> None:
    before = threading.active_count()
    done = Runner().run(["sh", "-c", "cat; echo err >&2; exit 3"], stdin="in\n", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, "in\n", "err\n")
    assert threading.active_count() == before  # the timeout timer is gone (an agent worker goes home)


def test_runner_kills_a_command_that_overstays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_exec, "TIMEOUT", 0.2)
    with pytest.raises(TryAgainLater, match="did not finish"):
        Runner().run(["sleep", "30"])


def _shlex(spec: str):
    try:
        return tuple(shlex.split(spec))
    except ValueError:
        return None


def test_tokens_split_like_shlex() -> None:
    rng = random.Random(15)
    alphabet = ["a", "-", " ", " ", '"', "'", "\\", "\t", "\x0b", "\n", "é", "\xa0"]
    for _ in range(20000):
        spec = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        _iptables.tokens.cache_clear()
        assert _iptables.tokens(spec) == _shlex(spec), repr(spec)


def test_a_quoted_comment_needs_no_shlex(monkeypatch: pytest.MonkeyPatch) -> None:
    line = '-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"cbr0\\" id: \\"x\\"" -j CNI-DN-1'
    plain = '-A CNI-DN-1 -p tcp -m comment --comment "cni portmap cbr0 abc" -j DNAT'
    _iptables.tokens.cache_clear()
    want = _shlex(plain)

    def no_shlex(spec: str):
        raise AssertionError("shlex used")

    monkeypatch.setattr(shlex, "split", no_shlex)
    assert _iptables.tokens(plain) == want
    assert want[-3] == "cni portmap cbr0 abc"
    monkeypatch.undo()
    _iptables.tokens.cache_clear()
    assert _iptables.tokens(line) == _shlex(line)  # backslashes: shlex decides
