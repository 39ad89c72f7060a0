"""Plugin logging: to a file, never to stdout (stdout carries the result).

``logging`` itself is imported on first use (~5 ms), not when a plugin module
that may log is imported: most invocations never write a line.
"""

from __future__ import annotations

import os

DEFAULT_PATH = "/var/log/cni-flannel.log"
_NAME = "cni-flannel"
FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging


def logger() -> "logging.Logger":
    """The plugin logger, writing to $CNI_FLANNEL_LOG (default /var/log/cni-flannel.log).

    An unwritable log path silences logging rather than failing the pod.
    """
    import logging

    path = os.environ.get("CNI_FLANNEL_LOG", DEFAULT_PATH)
    log = logging.getLogger(_NAME)
    if getattr(log, "_cni_path", None) != path:
        for old in list(log.handlers):
            log.removeHandler(old)
            old.close()
        try:
            handler: logging.Handler = logging.FileHandler(path)
            handler.setFormatter(logging.Formatter(FORMAT))
        except OSError:
            handler = logging.NullHandler()
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        log._cni_path = path  # type: ignore[attr-defined]
    return log


def warm_up() -> None:
    """Format one line now (the resident agent, before it forks): the first one in a process
    loads the time zone and compiles the format's checks, ~1 ms that no worker should pay."""
    import logging

    logging.Formatter(FORMAT).format(logging.LogRecord(_NAME, logging.INFO, __file__, 0, "warm", None, None))


def forget() -> None:
    """Close the log file (a resident worker's next caller may live in another mount namespace)."""
    import logging

    log = logging.getLogger(_NAME)
    for old in list(log.handlers):
        log.removeHandler(old)
        old.close()
    log._cni_path = None  # type: ignore[attr-defined]
