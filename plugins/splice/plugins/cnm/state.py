"""What the Docker front-end must remember that neither the kernel nor the IPAM store holds:
one small JSON file per network and per endpoint, written atomically.

``<state dir>/networks/<network id>.json`` and ``<state dir>/endpoints/<endpoint id>.json``
(the endpoint file names its network). A write is: a temporary file in the same
directory, ``rename`` over the old one; a killed driver leaves the old or the new file,
never half of one (a stray ``.tmp`` file is removed at load). Network records are also
durable (``fsync`` of the file before the rename and of the directory after): they must
outlive a power loss, as dockerd never sends CreateNetwork again. Endpoint records are not
fsynced: what they describe (veths, a sandbox) does not survive an OS crash either, dockerd
cleans such endpoints up itself (DeleteEndpoint/ReleaseAddress of an unknown endpoint are
answered), and an fsync costs 1 ms on an idle disk, 5-8 ms under load, on every Join and
Leave (docs/perf.md). One file per object keeps every call O(1) (no rewrite of the whole state when one
endpoint changes). Ids become file names, so they are checked first (:func:`check_id`).

Directories are 0700 and files 0600 whatever the umask: the state names containers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from typing import Any, Iterator

log = logging.getLogger("splice.driver")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
KINDS = ("networks", "endpoints")


def check_id(value: Any, what: str) -> str:
    """A Docker id usable as a file name: 1-128 of ``[A-Za-z0-9_.-]``, not starting with
    a dot (Docker's are 64 hex). ValueError naming the field otherwise."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is missing or not a string")
    if not _ID_RE.match(value):
        raise ValueError(f"{what} {value[:80]!r} is not a valid id (1-128 letters, digits, '_', '.', '-')")
    return value


class StateDir:
    """Per-object JSON records under ``root`` (see the module docstring). Thread-safe."""

    def __init__(self, root: str) -> None:
        self.root = root
        for sub in ("", *KINDS):
            path = os.path.join(root, sub)
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)

    def _path(self, kind: str, key: str) -> str:
        return os.path.join(self.root, kind, check_id(key, "id") + ".json")

    def put(self, kind: str, key: str, record: dict) -> None:
        durable = kind == "networks"
        path = self._path(kind, key)
        data = json.dumps(record, sort_keys=True, indent=1).encode() + b"\n"
        tmp = f"{path}.{threading.get_native_id()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            try:
                os.write(fd, data)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if durable:
            self._sync_dir(kind)

    def delete(self, kind: str, key: str) -> None:
        try:
            os.unlink(self._path(kind, key))
        except FileNotFoundError:
            return
        if kind == "networks":
            self._sync_dir(kind)

    def _sync_dir(self, kind: str) -> None:
        fd = os.open(os.path.join(self.root, kind), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load(self, kind: str) -> Iterator[tuple[str, dict]]:
        """Every record of ``kind``; unreadable ones are logged and skipped (kept on disk)."""
        d = os.path.join(self.root, kind)
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if name.endswith(".tmp"):  # a write interrupted by a crash
                try:
                    os.unlink(path)
                except OSError:
                    pass
                continue
            if not name.endswith(".json"):
                continue
            key = name[:-5]
            try:
                check_id(key, "id")
                with open(path, "rb") as f:
                    rec = json.loads(f.read())
                if not isinstance(rec, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as e:
                log.error("state: cannot read %s (%s): ignored", path, e)
                continue
            yield key, rec
