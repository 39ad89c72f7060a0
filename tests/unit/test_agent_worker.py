"""An agent worker goes home after a request only when the request left nothing behind."""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading

from cni_flannel.agent import worker
from cni_flannel.cni import log


def _home() -> worker.Home:
    count = mmap.mmap(-1, 8)
    home = worker.Home(count)
    home.fds = worker._own_fds()
    return home


def test_a_clean_worker_goes_home_with_the_agents_environment() -> None:
    home = _home()
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update({"CNI_COMMAND": "ADD", "CNI_FLANNEL_LOG": "/nonexistent/x.log"})
        log.logger()  # a caller's log file (here: none can be opened, a NullHandler)
        assert home.go_back()
        assert dict(os.environ) == home.environ
        assert not logging.getLogger("cni-flannel").handlers  # the caller's log file is closed
    finally:
        os.environ.clear()
        os.environ.update(saved)
        log.forget()


def test_a_left_over_descriptor_keeps_the_worker_from_serving_again() -> None:
    home = _home()
    r, w = os.pipe()
    try:
        assert not home.go_back()
    finally:
        os.close(r)
        os.close(w)
    assert home.go_back()


def test_a_left_over_thread_keeps_the_worker_from_serving_again() -> None:
    home = _home()
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not home.go_back()
    finally:
        stop.set()
        t.join()
    assert home.go_back()


def test_a_changed_umask_keeps_the_worker_from_serving_again() -> None:
    home = _home()
    old = os.umask(0o077 if home.umask != 0o077 else 0o022)
    try:
        assert not home.go_back()
        assert os.umask(old) == home.umask  # and it was put back
    finally:
        os.umask(old)


def test_idle_workers_are_read_from_the_agents_shared_count() -> None:
    home = _home()
    struct.pack_into("=q", home.idle_count, 0, 3)
    assert home.idle_workers() == 3
