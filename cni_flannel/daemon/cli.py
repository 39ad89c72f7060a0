"""``flanneld``: upstream's command line, and the one place errors become exit codes.

Flags are upstream's (main.go), with the same defaults and ``FLANNELD_<FLAG>`` environment
forms (FLANNELD_IFACE, FLANNELD_IP_MASQ=true ...; a flag on the command line wins).  They are
parsed the way Go's flag package accepts them: ``-flag`` or ``--flag``, ``--flag=value`` or
``--flag value``, booleans as ``--ip-masq`` / ``--ip-masq=false``.

    flanneld --etcd-endpoints=http://192.0.2.1:2379 --iface=eth0 --ip-masq
    flanneld --ip-masq --kube-subnet-mgr --healthz-port=8081      (kube-flannel.yml)
    flanneld doctor ...                                            (cni_flannel.doctor)

Exit codes: 0 after SIGTERM/SIGINT; 1 for a DaemonError (one log line naming what to fix);
2 for unknown, malformed or contradictory flags (one line).  No traceback reaches the operator.

Subnet managers are a registry (``MANAGERS``): "etcd" (cni_flannel.daemon.etcd) and "kube"
(cni_flannel.daemon.kube, imported only with --kube-subnet-mgr).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

import click

from . import errors

log = logging.getLogger("flanneld")

VERSION = "v0.28.9-cni-flannel"  # upstream release we match, and that we are not it

BOOL_FLAGS = ("ip-masq", "ip-masq-fully-random-disable", "iptables-forward-rules", "kube-subnet-mgr",
              "set-node-network-unavailable", "version")
ETCD_ONLY = ("etcd_endpoints", "etcd_prefix", "etcd_keyfile", "etcd_certfile", "etcd_cafile",
             "etcd_username", "etcd_password")
KUBE_ONLY = ("kube_api_url", "kubeconfig_file")
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class UsageError(Exception):
    pass


def go_style(argv: Sequence[str]) -> List[str]:
    """Go flag syntax -> click's: single dashes, ``--bool=false``, ``-v=2``."""
    out: List[str] = []
    for arg in argv:
        if arg in ("-", "--") or not arg.startswith("-"):
            out.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if name in ("h", "help"):
            out.append("--help")
        elif name == "v":
            out += ["-v", value] if eq else ["-v"]
        elif name in BOOL_FLAGS:
            if not eq or value in _GO_TRUE:
                out.append(f"--{name}")
            elif value in _GO_FALSE:
                out.append(f"--no-{name}")
            else:
                raise UsageError(f"invalid boolean value {value!r} for -{name}: use true or false")
        else:
            out.append(f"--{name}={value}" if eq else f"--{name}")
    return out


def _env(name: str) -> str:
    return "FLANNELD_" + name.upper().replace("-", "_")


def _opt(name: str, **kw: Any) -> Callable:
    if name in BOOL_FLAGS:
        return click.option(f"--{name}/--no-{name}", envvar=_env(name), show_envvar=True, **kw)
    return click.option(f"--{name}", envvar=_env(name), show_envvar=True, **kw)


def _hidden(name: str, **kw: Any) -> Callable:
    return click.option(f"--{name}", envvar=_env(name), hidden=True, **kw)


OPTIONS = [
    _opt("etcd-endpoints", default="http://127.0.0.1:4001,http://127.0.0.1:2379",
         help="a comma-delimited list of etcd endpoints"),
    _opt("etcd-prefix", default="/coreos.com/network", help="etcd prefix"),
    _opt("etcd-keyfile", default="", help="SSL key file used to secure etcd communication"),
    _opt("etcd-certfile", default="", help="SSL certification file used to secure etcd communication"),
    _opt("etcd-cafile", default="", help="SSL Certificate Authority file used to secure etcd communication"),
    _opt("etcd-username", default="", help="username for BasicAuth to etcd"),
    _opt("etcd-password", default="", help="password for BasicAuth to etcd"),
    _opt("iface", multiple=True, help="interface to use (IP or name) for inter-host communication (repeatable)"),
    _opt("iface-regex", multiple=True, help="regex of the interface (name or IP) to use (repeatable)"),
    _opt("iface-can-reach", default="", help="detect the interface to use by the route to this address"),
    _opt("subnet-file", default="/run/flannel/subnet.env", help="filename where env variables are written"),
    _opt("public-ip", default="", help="IPv4 address that other hosts use to reach this one"),
    _opt("public-ipv6", default="", help="IPv6 address that other hosts use to reach this one"),
    _opt("subnet-lease-renew-margin", type=int, default=60,
         help="subnet lease renewal margin, in minutes, ranging from 1 to 1439"),
    _opt("ip-masq", default=False, help="setup IP masquerade rule for traffic destined outside of overlay network"),
    _opt("ip-masq-fully-random-disable", default=False, help="disable fully-random mode for MASQUERADE"),
    _opt("iptables-resync", type=int, default=5, help="resync period for iptables rules and devices, in seconds"),
    _opt("iptables-forward-rules", default=True, help="add default accept rules to the FORWARD chain"),
    _opt("kube-subnet-mgr", default=False, help="contact the Kubernetes API for subnet assignment instead of etcd"),
    _opt("kube-api-url", default="", help="Kubernetes API server URL (not needed in a cluster)"),
    _opt("kubeconfig-file", default="", help="kubeconfig file location (not needed in a cluster)"),
    _opt("kube-annotation-prefix", default="flannel.alpha.coreos.com",
         help="Kubernetes annotation prefix (fqdn/[0-9a-z-_]*)"),
    _opt("net-config-path", default="/etc/kube-flannel/net-conf.json", help="path to the network configuration (kube mode)"),
    _opt("set-node-network-unavailable", default=True,
         help="set the node's NetworkUnavailable condition to False once flannel is up (kube mode)"),
    _opt("healthz-ip", default="0.0.0.0", help="the IP address for the healthz server to listen on"),
    _opt("healthz-port", type=int, default=0, help="the port for the healthz server to listen on (0 to disable)"),
    _opt("version", default=False, help="print version and exit"),
    click.option("-v", "verbosity", type=int, default=0, envvar="FLANNELD_V", help="log level for V logs"),
    # Our knobs for tests and benchmarks (not upstream flags).
    _hidden("subnet-lease-ttl", type=int, default=24 * 3600),
    _hidden("lease-renew-retry", type=float, default=60.0),
    _hidden("startup-timeout", type=float, default=300.0),
]


def _apply(options: List[Callable]) -> Callable:
    def deco(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return deco


@click.command(name="flanneld", context_settings={"help_option_names": ["--help"]})
@_apply(OPTIONS)
@click.pass_context
def command(ctx: click.Context, **flags: Any) -> Dict[str, Any]:
    given = {name for name in flags if ctx.get_parameter_source(name) not in
             (click.core.ParameterSource.DEFAULT, None)}
    flags["_given"] = given
    return flags


def check(flags: Dict[str, Any]) -> None:
    """Values and combinations flanneld cannot work with: UsageError (exit 2)."""
    margin = flags["subnet_lease_renew_margin"]
    if not 1 <= margin <= 1439:
        raise UsageError(f"--subnet-lease-renew-margin={margin} is out of range: give 1 to 1439 minutes")
    if flags["iptables_resync"] < 1:
        raise UsageError(f"--iptables-resync={flags['iptables_resync']} must be at least 1 second")
    if not 0 <= flags["healthz_port"] <= 65535:
        raise UsageError(f"--healthz-port={flags['healthz_port']} is not a TCP port (0 disables it)")
    for flag, version in (("public_ip", 4), ("public_ipv6", 6), ("healthz_ip", 0)):
        value = flags[flag]
        if value:
            try:
                ok = version in (0, ipaddress.ip_address(value.strip("[]")).version)
            except ValueError:
                ok = False
            if not ok:
                raise UsageError(f"--{flag.replace('_', '-')}={value} is not an IPv{version or '4 or IPv6'} address")
    if bool(flags["etcd_keyfile"]) != bool(flags["etcd_certfile"]):
        raise UsageError("--etcd-certfile and --etcd-keyfile go together: give both or neither")
    given = flags["_given"]
    if flags["kube_subnet_mgr"]:
        clash = sorted(f for f in ETCD_ONLY if f in given)
        if clash:
            raise UsageError(f"--kube-subnet-mgr contradicts --{clash[0].replace('_', '-')}: "
                             "the subnet manager is either Kubernetes or etcd")
    else:
        clash = sorted(f for f in KUBE_ONLY if f in given)
        if clash:
            raise UsageError(f"--{clash[0].replace('_', '-')} needs --kube-subnet-mgr")
    if flags["subnet_lease_ttl"] < 10:
        raise UsageError(f"--subnet-lease-ttl={flags['subnet_lease_ttl']} must be at least 10 seconds")


# --- subnet managers: a registry, so the kube one only adds a factory ---------------------

def etcd_manager(flags: Dict[str, Any]) -> Any:
    from .etcd import EtcdSubnetManager
    from .etcd.options import EtcdOptions
    opts = EtcdOptions(endpoints=flags["etcd_endpoints"], prefix=flags["etcd_prefix"],
                       keyfile=flags["etcd_keyfile"], certfile=flags["etcd_certfile"],
                       cafile=flags["etcd_cafile"], username=flags["etcd_username"],
                       password=flags["etcd_password"], ttl=flags["subnet_lease_ttl"],
                       renew_margin=renew_margin(flags))
    return EtcdSubnetManager(opts)


def kube_manager(flags: Dict[str, Any]) -> Any:
    try:
        from .kube import make_kube_manager  # type: ignore[attr-defined]
    except ImportError:
        raise errors.ConfigError("--kube-subnet-mgr: this build has no Kubernetes subnet manager yet") from None
    return make_kube_manager(flags)


MANAGERS: Dict[str, Callable[[Dict[str, Any]], Any]] = {"etcd": etcd_manager, "kube": kube_manager}


def renew_margin(flags: Dict[str, Any]) -> int:
    """Seconds; a test TTL (--subnet-lease-ttl) shorter than the margin renews at a third of it."""
    margin, ttl = flags["subnet_lease_renew_margin"] * 60, flags["subnet_lease_ttl"]
    return margin if margin < ttl else max(1, ttl // 3)


# --- running -----------------------------------------------------------------------------

def setup_logging(verbosity: int) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbosity > 0 else logging.INFO,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s")


def daemon_options(flags: Dict[str, Any]) -> Any:
    from . import iface
    from .run import Options
    return Options(subnet_file=flags["subnet_file"], ip_masq=flags["ip_masq"],
                   random_fully=not flags["ip_masq_fully_random_disable"],
                   forward_rules=flags["iptables_forward_rules"], resync=float(flags["iptables_resync"]),
                   renew_margin=float(renew_margin(flags)), renew_retry=flags["lease_renew_retry"],
                   startup_timeout=flags["startup_timeout"],
                   iface=iface.Request(ifaces=_split(flags["iface"]), regexes=_split(flags["iface_regex"]),
                                       can_reach=flags["iface_can_reach"], public_ip=flags["public_ip"],
                                       public_ipv6=flags["public_ipv6"]))


def _split(values: Sequence[str]) -> List[str]:
    return [v for value in values for v in value.split(",") if v]


def serve(flags: Dict[str, Any]) -> int:
    from .health import Status, serve as serve_health
    from .metrics import METRICS
    from .run import Daemon
    manager = MANAGERS["kube" if flags["kube_subnet_mgr"] else "etcd"](flags)
    status = Status()
    daemon = Daemon(daemon_options(flags), manager, status=status)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: daemon.request_stop())
    serve_health(flags["healthz_ip"], flags["healthz_port"], status, METRICS.registry)
    log.info("flanneld %s starting (%s subnet manager)", VERSION, manager.name or "etcd")
    return daemon.run()


def doctor(argv: Sequence[str]) -> int:
    try:
        from cni_flannel.doctor.cli import doctor as command_
    except ImportError:
        print("flanneld: error: 'flanneld doctor' is not part of this build", file=sys.stderr)
        return errors.EXIT_USAGE
    try:
        return int(command_.main(args=list(argv), prog_name="flanneld doctor", standalone_mode=False) or 0)
    except click.ClickException as exc:
        print(f"flanneld doctor: error: {exc.format_message().splitlines()[0]}", file=sys.stderr)
        return errors.EXIT_USAGE


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["doctor"]:
        return doctor(args[1:])
    try:
        flags = command.main(args=go_style(args), prog_name="flanneld", standalone_mode=False)
        if not isinstance(flags, dict):  # --help printed
            return 0
        check(flags)
    except (UsageError, click.ClickException) as exc:
        text = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        print(f"flanneld: error: {text.splitlines()[0] if text else exc}", file=sys.stderr)
        return errors.EXIT_USAGE
    if flags["version"]:
        print(VERSION)
        return 0
    setup_logging(flags["verbosity"])
    try:
        return serve(flags)
    except errors.DaemonError as exc:
        log.error("%s", exc.msg)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # noqa: BLE001 - a bug: still one line for the operator
        log.debug("internal error", exc_info=True)
        log.error("internal error: %s: %s (run with -v=1 for the traceback)", type(exc).__name__, exc)
        return errors.EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
