"""Multi-call entry point: the plugin is chosen by the name we were run as.

``/opt/cni/bin/bridge`` runs the bridge plugin; ``cni-flannel bridge`` does too
(handy by hand).  Kept tiny: it runs for every pod.
"""

from __future__ import annotations

import os
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn, Optional


def plugin_name(argv0: str) -> str:
    name = os.path.basename(argv0)
    return name[:-3] if name.endswith(".py") else name


def main(argv: Optional[list] = None) -> NoReturn:
    argv = sys.argv if argv is None else argv
    # flanneld, the node daemon: same bundle, its own name (imports nothing plugins pay for).
    if argv and plugin_name(argv[0]) == "flanneld":
        from .daemon.cli import main as flanneld

        sys.exit(flanneld(argv[1:]))
    if len(argv) > 1 and argv[1] == "flanneld" and not os.environ.get("CNI_COMMAND"):
        from .daemon.cli import main as flanneld

        sys.exit(flanneld(argv[2:]))
    from .cni.skel import PLUGINS, main as skel_main

    if len(argv) > 1 and argv[1] == "agent" and not os.environ.get("CNI_COMMAND"):
        from .agent.cli import agent

        agent.main(args=argv[2:], prog_name="cni-flannel agent")
    if len(argv) > 1 and argv[1] == "doctor" and not os.environ.get("CNI_COMMAND"):
        from .doctor.cli import doctor

        doctor.main(args=argv[2:], prog_name="cni-flannel doctor")
    name = plugin_name(argv[0] if argv else "")
    if name not in PLUGINS and len(argv) > 1 and argv[1] in PLUGINS:
        name = argv[1]
    if name not in PLUGINS and not os.environ.get("CNI_COMMAND"):
        sys.stderr.write(
            "cni-flannel: run me as one of: %s (e.g. via a link in /opt/cni/bin),\n"
            "or as 'cni-flannel <plugin>' with the CNI_* environment set,\n"
            "or as 'cni-flannel agent' to run the resident plugin agent,\n"
            "or as 'cni-flannel doctor' to check this node's flannel networking,\n"
            "or as 'flanneld' (or 'cni-flannel flanneld') to run the node daemon.\n" % ", ".join(sorted(PLUGINS))
        )
        sys.exit(2)
    skel_main(name)  # an unknown name still answers VERSION and gives CNI errors
