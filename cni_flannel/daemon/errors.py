"""The daemon's one error tree (not CNI codes: flanneld talks to an operator, not a runtime).

The raise site picks the class; ``cni_flannel.daemon.cli`` (the one boundary) turns any of them
into one log line and an exit status.  Third-party errors (the etcd client, the Kubernetes
client, pyroute2, iptables) are translated where those libraries are called.

    DaemonError                    exit 1   base: a message an operator can act on
     ├── ConfigError               exit 1   net-conf.json / <prefix>/config / flag values unusable
     ├── PreflightError            exit 1   the node cannot carry this backend (br_netfilter, ...)
     ├── StoreError                exit 1   etcd / the API server failed (after bounded retries)
     │    └── StoreUnavailable              unreachable / timed out: retried with backoff first
     ├── LeaseError                exit 1   no lease can be had
     │    ├── OutOfSubnets                  no free subnet in SubnetMin..SubnetMax
     │    └── LeaseRevoked                  our own lease key disappeared ("... revoked")
     └── BackendError              exit 1   the data plane could not be programmed

Usage errors (unknown or contradictory flags) are click's: exit 2.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2


class DaemonError(Exception):
    """A failure flanneld reports as one log line; ``exit_code`` is what the process exits with."""

    exit_code = EXIT_FAILURE

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg

    def __str__(self) -> str:
        return self.msg


class ConfigError(DaemonError):
    pass


class PreflightError(DaemonError):
    pass


class StoreError(DaemonError):
    pass


class StoreUnavailable(StoreError):
    """The store did not answer (connection refused, timeout, 5xx): worth retrying."""


class LeaseError(DaemonError):
    pass


class OutOfSubnets(LeaseError):
    pass


class LeaseRevoked(LeaseError):
    pass


class BackendError(DaemonError):
    pass
