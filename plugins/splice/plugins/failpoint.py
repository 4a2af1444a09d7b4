"""Failure injection for tests: ``SPLICE_FAILPOINT=<name>:<action>``.

``action`` is ``kill`` (SIGKILL this process on the spot, as a crash or an OOM kill
would) or ``error`` (raise, to exercise the rollback path). Without the variable,
:func:`hit` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("SPLICE_FAILPOINT", "")


def hit(name: str) -> None:
    if not _SPEC:
        return
    point, _, action = _SPEC.partition(":")
    if point != name:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    from splice.plugins.errors import SpliceError

    raise SpliceError(f"failpoint {name} triggered")
