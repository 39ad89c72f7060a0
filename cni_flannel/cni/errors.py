"""The one CNI error hierarchy.

Every failure a plugin reports is a :class:`CNIError`; the raise site picks the
class, and so the spec's code.  The dispatcher (``skel``) prints it as the
spec's error JSON on stdout and exits 1.  Third-party errors (pyroute2's
NetlinkError, failing iptables/nft) are translated at their own boundary
(``net``, ``firewall``) into one of these.

    CNIError                       code
     ├── IncompatibleVersion          1
     ├── UnsupportedField             2
     ├── UnknownContainer             3
     ├── InvalidEnvironment           4
     ├── IOFailure                    5
     ├── DecodeFailure                6
     ├── InvalidConfig                7
     ├── InvalidNetNS                 8   (CNI_NETNS is the plugin's own namespace)
     ├── TryAgainLater               11
     ├── NotAvailable                50   (STATUS: not ready)
     ├── NotAvailableAffecting       51   (STATUS: not ready, existing containers affected)
     ├── PluginError            100-998   (plugin-specific; code given at the raise site)
     └── InternalError              999
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~10 ms to import; the error path must start fast
if TYPE_CHECKING:
    from typing import Any, Dict, Optional


class CNIError(Exception):
    """A failure reported to the runtime as ``{cniVersion, code, msg, details}``."""

    code = 999

    def __init__(self, msg: str, details: str = "", code: Optional[int] = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self, cni_version: str) -> Dict[str, Any]:
        out: Dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg


class IncompatibleVersion(CNIError):
    code = 1


class UnsupportedField(CNIError):
    code = 2


class UnknownContainer(CNIError):
    code = 3


class InvalidEnvironment(CNIError):
    code = 4


class IOFailure(CNIError):
    code = 5


class DecodeFailure(CNIError):
    code = 6


class InvalidConfig(CNIError):
    code = 7


class InvalidNetNS(CNIError):
    code = 8


class TryAgainLater(CNIError):
    code = 11


class NotAvailable(CNIError):
    code = 50


class NotAvailableAffecting(CNIError):
    code = 51


class PluginError(CNIError):
    """Plugin-specific failure; pass ``code`` (100-998) at the raise site."""

    code = 100


class InternalError(CNIError):
    code = 999
