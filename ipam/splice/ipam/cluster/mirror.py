"""A local copy of every key under an etcd prefix, kept current by a watch.

One thread: list the prefix (range: the keys and the store revision R), then watch it from
R + 1 and apply each event. A broken stream (member killed, connection reset, the member
lost its leader, nothing heard for ``idle`` s and a probe of that member failed) is
re-opened on the next endpoint from the revision after the last one applied, so no event
is lost or applied twice; a resume refused because that revision was compacted re-lists
the prefix and reports the difference. Every change reaches ``on_change(kind, key, kv,
prev)`` (``kind`` "add" / "update" / "remove"; ``kv`` None on remove) once, in revision
order per key, on the mirror's thread; an exception in the callback is logged, never stops
the mirror.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from splice.ipam.cluster.errors import ClusterError
from splice.ipam.cluster.etcd import KV, Endpoint, Etcd, WatchStream, b64

log = logging.getLogger("splice.cluster")

OnChange = Callable[[str, bytes, "KV | None", "KV | None"], None]


class Mirror:
    def __init__(self, etcd: Etcd, prefix: bytes | str, on_change: OnChange | None = None, *,
                 idle: float = 2.0, name: str = "splice-mirror") -> None:
        self.etcd = etcd
        self.prefix = prefix.encode() if isinstance(prefix, str) else prefix
        self.on_change = on_change
        self.idle = idle
        self.name = name
        self.kvs: dict[bytes, KV] = {}
        self.revision = 0          # every event up to this revision is applied
        self.relists = 0           # how many times the prefix was listed (1 + compactions)
        self.reconnects = 0
        self.error: str | None = None  # the last failure while not connected, else None
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- control -------------------------------------------------------------------------
    def start(self) -> "Mirror":
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.reconnect()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once the first listing was applied."""
        return self._synced.wait(timeout)

    def reconnect(self) -> None:
        """Drop the current stream: the mirror resumes on the next endpoint."""
        with self._lock:
            s = self._stream
        if s is not None:
            s.close()

    def snapshot(self) -> dict[bytes, KV]:
        with self._lock:
            return dict(self.kvs)

    # -- the loop ------------------------------------------------------------------------
    def _emit(self, kind: str, key: bytes, kv: KV | None, prev: KV | None) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(kind, key, kv, prev)
        except Exception:  # noqa: BLE001 - a callback bug must not stop the mirror
            log.exception("%s: callback failed on %s %r", self.name, kind, key)

    def _relist(self) -> None:
        kvs, rev = self.etcd.range(self.prefix, prefix=True)
        new = {kv.key: kv for kv in kvs}
        changes = []
        with self._lock:
            for key, old in list(self.kvs.items()):
                if key not in new:
                    del self.kvs[key]
                    changes.append(("remove", key, None, old))
            for key, kv in new.items():
                old = self.kvs.get(key)
                if old is None or old.mod_revision != kv.mod_revision:
                    self.kvs[key] = kv
                    changes.append(("add" if old is None else "update", key, kv, old))
            self.revision = rev
            self.relists += 1
        for c in changes:
            self._emit(*c)
        self._synced.set()

    def _apply(self, events: list) -> None:
        for ev in events:
            kv = KV.from_json(ev.get("kv") or {})
            with self._lock:
                old = self.kvs.get(kv.key)
                if old is not None and old.mod_revision >= kv.mod_revision:
                    continue  # already applied (a resume overlapping what we had)
                if ev.get("type") == "DELETE":
                    if old is None:
                        change = None
                    else:
                        del self.kvs[kv.key]
                        change = ("remove", kv.key, None, old)
                else:
                    self.kvs[kv.key] = kv
                    change = ("add" if old is None else "update", kv.key, kv, old)
                self.revision = max(self.revision, kv.mod_revision)
            if change is not None:
                self._emit(*change)

    def _pick(self, bad: Endpoint | None) -> Endpoint:
        eps = self.etcd.endpoints
        if bad is not None and bad in eps and len(eps) > 1:
            return eps[(eps.index(bad) + 1) % len(eps)]
        return self.etcd.order()[0]

    def _run(self) -> None:
        need_list = True
        bad: Endpoint | None = None
        pause = 0.05
        while not self._stop.is_set():
            ep = None
            try:
                if need_list:
                    self._relist()
                    need_list = False
                ep = self._pick(bad)
                stream = self.etcd.watch(self.prefix, prefix=True, start_revision=self.revision + 1, endpoint=ep)
                with self._lock:
                    self._stream = stream
                if self._stop.is_set():
                    stream.close()
                    break
                need_list = self._follow(stream)
                if not need_list:
                    raise ClusterError(f"etcd watch on {ep.url} ended")
                pause = 0.05
            except ClusterError as e:
                if self._stop.is_set():
                    break
                self.error = f"{e}{': ' + e.details if e.details else ''}"
                self.reconnects += 1
                bad = ep
                log.info("%s: %s; resuming from revision %d", self.name, self.error, self.revision + 1)
                self._stop.wait(pause)
                pause = min(pause * 2, 1.0)
            finally:
                with self._lock:
                    s, self._stream = self._stream, None
                if s is not None:
                    s.close()

    def _follow(self, stream: WatchStream) -> bool:
        """Apply the stream's events until it breaks (raises) or asks for a re-list (True)."""
        while not self._stop.is_set():
            msg = stream.next(self.idle)
            if msg is None:
                # quiet: is the member still there and part of a quorum? (a linearizable read)
                self.etcd.call("/kv/range", {"key": b64(self.prefix), "limit": "1", "count_only": True},
                               only=stream.endpoint, retry_for=0)
                continue
            if "error" in msg:
                err = msg["error"]
                raise ClusterError(f"etcd watch on {stream.endpoint.url}: {err.get('message', err)}")
            res = msg.get("result") or {}
            if int(res.get("compact_revision") or 0) > 0:
                log.info("%s: revision %d was compacted (now %s): re-listing", self.name, self.revision + 1,
                         res.get("compact_revision"))
                return True
            if res.get("canceled"):
                raise ClusterError(f"etcd watch on {stream.endpoint.url} canceled: {res.get('cancel_reason', '')}")
            if res.get("created"):
                self.error = None
            events = res.get("events")
            if events:
                self._apply(events)
        return False
