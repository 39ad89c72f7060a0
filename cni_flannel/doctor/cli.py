"""``flanneld doctor`` / ``cni-flannel doctor``: explain this node in plain words."""

from __future__ import annotations

import os
import sys
from typing import Optional, Tuple

import click


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for tools).")
@click.option("-v", "--verbose", is_flag=True, help="Show every item of every check.")
@click.option("--subnet-file", default="/run/flannel/subnet.env", show_default=True)
@click.option("--net-config-path", default="/etc/kube-flannel/net-conf.json", show_default=True)
@click.option("--healthz-ip", default="127.0.0.1", show_default=True, help="Where flanneld's health server answers.")
@click.option("--healthz-port", type=click.IntRange(1, 65535), default=None,
              help="flanneld's --healthz-port (default: try kube-flannel's 8081; '!' if nothing answers).")
@click.option("--etcd-endpoints", default="", help="Comma-separated etcd URLs: compare with the etcd lease.")
@click.option("--etcd-prefix", default="/coreos.com/network", show_default=True)
@click.option("--kube-api-url", default="", help="Kubernetes API URL: compare with the Node's podCIDR.")
@click.option("--kube-token-file", default="", help="Bearer token file (default: the in-cluster one if present).")
@click.option("--kube-ca-file", default="", help="CA bundle for the API (default: the in-cluster one if present).")
@click.option("--node-name", default="", envvar="NODE_NAME", help="This node's name in Kubernetes.")
@click.option("--cni-conf-dir", default="/etc/cni/net.d", show_default=True)
@click.option("--cni-bin-dir", default="/opt/cni/bin", show_default=True)
@click.option("--ipam-dir", default="/var/lib/cni/networks", show_default=True)
@click.option("--flannel-data-dir", default="/var/lib/cni/flannel", show_default=True)
@click.option("--proc-root", default="/proc", show_default=True,
              help="Where sysctls and the kernel release are read (for checking a prepared copy).")
@click.option("--no-probe", is_flag=True, help="Do not ping the peers.")
@click.option("--probe-timeout", type=click.FloatRange(0.05, 10), default=1.0, show_default=True,
              help="Seconds to wait for all peers' answers together.")
def doctor(as_json: bool, verbose: bool, subnet_file: str, net_config_path: str, healthz_ip: str,
           healthz_port: Optional[int], etcd_endpoints: str, etcd_prefix: str, kube_api_url: str,
           kube_token_file: str, kube_ca_file: str, node_name: str, cni_conf_dir: str, cni_bin_dir: str,
           ipam_dir: str, flannel_data_dir: str, proc_root: str, no_probe: bool, probe_timeout: float) -> None:
    """Check this node's flannel networking and say what is wrong and how to fix it.

    Read-only. Exit status: 0 nothing failed, 1 a check failed, 2 the node could not be inspected.
    """
    from .collect import Options
    from .render import table, to_json
    from .run import diagnose

    endpoints: Tuple[str, ...] = tuple(e.strip() for e in etcd_endpoints.split(",") if e.strip())
    opts = Options(subnet_file=subnet_file, net_config_path=net_config_path, cni_conf_dir=cni_conf_dir,
                   ipam_dir=ipam_dir, flannel_dir=flannel_data_dir, bin_dir=cni_bin_dir, proc_root=proc_root,
                   healthz_ip=healthz_ip, healthz_port=healthz_port, etcd_endpoints=endpoints,
                   etcd_prefix=etcd_prefix, kube_api_url=kube_api_url, kube_token_file=kube_token_file,
                   kube_ca_file=kube_ca_file, node_name=node_name, probe=not no_probe, probe_timeout=probe_timeout)
    if os.geteuid() != 0:
        from .model import Report

        report = Report((), os.uname().nodename, 0.0, error="doctor needs root (netlink dumps, network namespaces, "
                        "iptables-save, raw ICMP)")
    else:
        report = diagnose(opts)
    out = to_json(report) if as_json else table(report, colour=sys.stdout.isatty(), verbose=verbose)
    sys.stdout.write(out)
    sys.stdout.flush()
    click.get_current_context().exit(report.exit_code)  # flanneld's CLI runs us with standalone_mode=False
