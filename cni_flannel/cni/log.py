"""Plugin logging: to a file, never to stdout (stdout carries the result)."""

from __future__ import annotations

import logging
import os

DEFAULT_PATH = "/var/log/cni-flannel.log"
_NAME = "cni-flannel"


def logger() -> logging.Logger:
    log = logging.getLogger(_NAME)
    if not log.handlers:
        path = os.environ.get("CNI_FLANNEL_LOG", DEFAULT_PATH)
        try:
            handler: logging.Handler = logging.FileHandler(path)
            handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
        except OSError:
            handler = logging.NullHandler()
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log
