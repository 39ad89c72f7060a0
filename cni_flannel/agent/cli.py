"""``cni-flannel agent``: run the resident plugin agent in the foreground."""

from __future__ import annotations

import click

from ..cni.handoff import DEFAULT_SOCKET


@click.command("agent")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              help="Unix socket the plugin binaries hand their requests to.")
@click.option("--ready-fd", type=int, default=-1, help="Write 'ready' to this descriptor once listening.")
@click.option("--request-log", type=click.Path(dir_okay=False), default=None,
              help="Append one line per request (served or refused) to this file.")
@click.option("--profile-dir", type=click.Path(file_okay=False), default="", hidden=True,
              help="Save a cProfile of every request's plugin run there (benchmarks only).")
def agent(socket_path: str, ready_fd: int, request_log: str, profile_dir: str) -> None:
    """Serve CNI plugin invocations handed over by the cni-flannel binaries."""
    from .server import serve

    serve(socket_path, ready_fd, request_log, profile_dir)
