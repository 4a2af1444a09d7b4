"""The reservation store: one embedded SQLite database per network.

Layout: ``<dataDir>/<network>/store.db`` (plus SQLite's ``-wal``/``-shm`` files). The
pool-keyed API (splice.ipam.pools) uses the same class with its own file and schema.

Why it is safe:

* WAL journal; every change runs in one ``BEGIN IMMEDIATE`` transaction, so writers
  are serialised across processes by SQLite's own file locks (released by the kernel
  when a process dies) and readers never block. A process SIGKILLed at any point leaves
  either the whole transaction or nothing; the next opener recovers the WAL.
* Addresses are the table's primary key: two owners can never hold one address, even
  if the allocator logic were wrong.
* ``synchronous=NORMAL``: a crash of the process never loses a commit; a power loss may
  lose the last commits but never corrupts the file (and it also kills every container
  those reservations belonged to).
* Waiting for the write lock is bounded by ``busy_timeout`` (default 10 s), after which
  :class:`StoreBusy` (transient, CNI code 11) is raised.

Why it is fast: an address is stored as integers ``(fam, hi, lo)`` (upper and lower 64
bits, each shifted into SQLite's signed 64-bit range), the primary key is a
clustered index on them, and the next free address after the round-robin cursor is found
by one point lookup or one indexed gap query (``NOT EXISTS lo+1 ... ORDER BY lo LIMIT 1``)
executed inside SQLite. Release goes through an index on ``(container_id, ifname)``.

``sqlite3`` is imported when a store is first opened (CNI start-up stays lean).
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager, suppress
from typing import Callable, Iterator, NamedTuple

from splice.ipam.errors import IpamConfigError, StoreBusy, StoreError

DB_NAME = "store.db"
# .<db>.id beside the database: its generation. Hidden and not "store.db*", so the
# "rm store.db*" that deletes a database does not delete the evidence with it.
def marker_name(db_name: str) -> str:
    return f".{db_name}.id"


DIR_MODE = 0o700
FILE_MODE = 0o600
_SIDE_FILES = ("-wal", "-shm", "-journal")
DEFAULT_BUSY_TIMEOUT = 10.0
SCHEMA_VERSION = 1

_M64 = (1 << 64) - 1
_B63 = 1 << 63

# Test hook: when set, called with a point name ("before-commit") while a write
# transaction holds the lock, e.g. to SIGKILL the process there.
_txn_hook: Callable[[str], None] | None = None

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lease (
    fam          INTEGER NOT NULL,   -- 4 or 6
    hi           INTEGER NOT NULL,   -- (address >> 64) - 2**63
    lo           INTEGER NOT NULL,   -- (address & (2**64-1)) - 2**63
    prefix       INTEGER NOT NULL,   -- prefix length of the subnet it came from
    gateway      TEXT,               -- gateway of that range, NULL if none
    range_set    INTEGER NOT NULL,   -- index of the range set in the config
    container_id TEXT NOT NULL,
    ifname       TEXT NOT NULL,
    created      INTEGER NOT NULL,   -- unix time
    PRIMARY KEY (fam, hi, lo)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lease_owner ON lease (container_id, ifname);
CREATE TABLE IF NOT EXISTS cursor (  -- round-robin: last address handed out per range set
    range_set INTEGER PRIMARY KEY,
    fam       INTEGER NOT NULL,
    hi        INTEGER NOT NULL,
    lo        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

_POINT = "SELECT container_id, ifname FROM lease WHERE fam=? AND hi=? AND lo=?"
# First occupied address in [lo_a, lo_b) whose successor is free: the successor is the
# first free address after a run of occupied ones starting at lo_a. Walks the primary key.
_GAP = (
    "SELECT l.lo FROM lease AS l WHERE l.fam=?1 AND l.hi=?2 AND l.lo>=?3 AND l.lo<?4 "
    "AND NOT EXISTS (SELECT 1 FROM lease AS m WHERE m.fam=?1 AND m.hi=?2 AND m.lo=l.lo+1) "
    "ORDER BY l.lo LIMIT 1"
)
_COLS = "fam, hi, lo, prefix, gateway, range_set, container_id, ifname"


def split(addr: int) -> tuple[int, int]:
    """An address (up to 128 bits) as two signed 64-bit integers (order-preserving)."""
    return (addr >> 64) - _B63, (addr & _M64) - _B63


def join(hi: int, lo: int) -> int:
    return ((hi + _B63) << 64) | (lo + _B63)


class Row(NamedTuple):
    fam: int
    addr: int
    prefix: int
    gateway: str | None
    range_set: int
    container_id: str
    ifname: str


def _row(t: tuple) -> Row:
    return Row(t[0], join(t[1], t[2]), t[3], t[4], t[5], t[6], t[7])


def _is_busy(e: BaseException) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    m = str(e).lower()
    return "locked" in m or "busy" in m


class Txn:
    """Queries of one transaction (only valid inside ``Store.write()``/``read()``)."""

    _point = _POINT  # "is (fam, hi, lo) taken": one primary-key lookup
    _gap = _GAP

    def __init__(self, con) -> None:
        self._con = con

    def owner_leases(self, cid: str, ifname: str) -> list[Row]:
        cur = self._con.execute(
            f"SELECT {_COLS} FROM lease WHERE container_id=? AND ifname=? ORDER BY range_set", (cid, ifname)
        )
        return [_row(t) for t in cur]

    def holder(self, fam: int, addr: int) -> tuple[str, str] | None:
        t = self._con.execute(_POINT, (fam, *split(addr))).fetchone()
        return (t[0], t[1]) if t else None

    def find_free(self, fam: int, a: int, b: int, exclude: frozenset[int] | set[int] = frozenset()) -> int | None:
        """Smallest address in ``[a, b]`` that is neither leased nor in ``exclude``."""
        con = self._con
        x = a
        while x <= b:
            top = x >> 64
            seg_end = min(b, (top << 64) | _M64)  # this segment shares the upper 64 bits
            hi, lx = split(x)
            le = (seg_end & _M64) - _B63
            found: int | None
            if con.execute(self._point, (fam, hi, lx)).fetchone() is None:
                found = x
            else:
                t = con.execute(self._gap, (fam, hi, lx, le)).fetchone()
                found = join(hi, t[0] + 1) if t else None
            if found is None:
                x = seg_end + 1
                continue
            if found in exclude:
                x = found + 1
                continue
            return found
        return None

    def insert(self, fam: int, addr: int, prefix: int, gateway: str | None, range_set: int, cid: str, ifname: str) -> None:
        hi, lo = split(addr)
        self._con.execute(
            "INSERT INTO lease (fam, hi, lo, prefix, gateway, range_set, container_id, ifname, created) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (fam, hi, lo, prefix, gateway, range_set, cid, ifname, int(time.time())),
        )

    def lease_at(self, fam: int, addr: int) -> Row | None:
        t = self._con.execute(f"SELECT {_COLS} FROM lease WHERE fam=? AND hi=? AND lo=?", (fam, *split(addr))).fetchone()
        return _row(t) if t else None

    def delete_at(self, fam: int, addr: int) -> None:
        self._con.execute("DELETE FROM lease WHERE fam=? AND hi=? AND lo=?", (fam, *split(addr)))

    def delete_owner(self, cid: str, ifname: str) -> list[Row]:
        rows = self.owner_leases(cid, ifname)
        if rows:
            self._con.execute("DELETE FROM lease WHERE container_id=? AND ifname=?", (cid, ifname))
        return rows

    def all_leases(self) -> list[tuple[int, int, int, str | None, int, str, str, int]]:
        """Every reservation as a plain tuple ``(fam, address as int, prefix, gateway,
        range_set, container_id, ifname, created unix time)``, in address order: for
        listings (``splice ipam ls``, ``splice doctor``: 10,000 rows in a few ms), one scan."""
        b = _B63
        return [(f, ((h + b) << 64) | (lo + b), p, g, r, c, i, t) for f, h, lo, p, g, r, c, i, t in
                self._con.execute(f"SELECT {_COLS}, created FROM lease ORDER BY fam, hi, lo")]

    def owners(self) -> set[tuple[str, str]]:
        return {(t[0], t[1]) for t in self._con.execute("SELECT DISTINCT container_id, ifname FROM lease")}

    def count(self) -> int:
        return self._con.execute("SELECT count(*) FROM lease").fetchone()[0]

    def get_cursor(self, range_set: int) -> tuple[int, int] | None:
        t = self._con.execute("SELECT fam, hi, lo FROM cursor WHERE range_set=?", (range_set,)).fetchone()
        return (t[0], join(t[1], t[2])) if t else None

    def set_cursor(self, range_set: int, fam: int, addr: int) -> None:
        self._con.execute(
            "INSERT OR REPLACE INTO cursor (range_set, fam, hi, lo) VALUES (?,?,?,?)", (range_set, fam, *split(addr))
        )

    def touch(self) -> None:
        self._con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('status', ?)", (str(time.time()),))


class Store:
    """One network's reservation database. Not shared between threads without its lock.

    Subclasses (the pool store) change the file name, the schema and the transaction
    class; opening, WAL, locking and crash behaviour are this class's."""

    db_name = DB_NAME
    schema = _SCHEMA
    schema_version = SCHEMA_VERSION
    txn_class: type = Txn

    def __init__(self, directory: str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.directory = directory
        self.path = os.path.join(directory, self.db_name)
        self.marker = os.path.join(directory, marker_name(self.db_name))
        self.busy_timeout = float(busy_timeout)
        self._con = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle
    def exists(self) -> bool:
        """Whether the database exists. StoreError if it does not but its marker does:
        the database was deleted under a store in use (see :meth:`open`)."""
        if os.path.exists(self.path):
            return True
        if os.path.lexists(self.marker):
            raise self._missing(self._read_marker())
        return False

    def open(self) -> None:
        """Open (creating directory, file and schema if needed).

        Directories are created 0700, the database (and so SQLite's -wal/-shm, created
        with the database's mode) 0600; an existing store's modes are tightened.
        The database holds a random generation, also written to ``.<db>.id`` next to it.
        A marker without its database (the database was deleted), or a database whose
        generation is not the marker's (replaced), is a StoreError: silently starting
        over would hand out addresses running containers hold. Checked and created under
        an exclusive lock on the directory (concurrent first openers)."""
        if self._con is not None:
            return
        import sqlite3

        loose = self._make_dirs()
        dfd = self._lock_dir()
        con = None
        try:
            marker = self._read_marker()
            st = self._stat_db()
            if st is None:
                if marker is not None:
                    raise self._missing(marker)
                side = [self.path + x for x in ("-wal", "-journal") if os.path.lexists(self.path + x)]
                if side:
                    raise StoreError(
                        f"IPAM store {self.path} is missing but {side[0]} is left: the database was deleted "
                        f"while in use. {self._recovery()}"
                    )
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
                except OSError as e:
                    raise StoreError(f"cannot create IPAM store {self.path}: {e.strerror or e}") from None
                try:
                    os.fchmod(fd, FILE_MODE)  # umask-proof; SQLite gives -wal/-shm this mode
                finally:
                    os.close(fd)
            elif loose:  # in a 0700 directory the files' own modes expose nothing
                for name in (self.path, self.marker, *(self.path + x for x in _SIDE_FILES)):
                    _tighten(name, FILE_MODE)
            con = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._set_wal(con)
            con.execute("PRAGMA synchronous=NORMAL")
            version = con.execute("PRAGMA user_version").fetchone()[0]
            want = self.schema_version
            if version != want:
                con.execute("BEGIN IMMEDIATE")
                try:
                    version = con.execute("PRAGMA user_version").fetchone()[0]
                    if version > want:
                        raise StoreError(
                            f"IPAM store {self.path} has schema version {version}, newer than this splice "
                            f"({want})"
                        )
                    if version < want:
                        for stmt in self.schema.split(";"):
                            if stmt.strip():
                                con.execute(stmt)
                        con.execute(f"PRAGMA user_version={want}")
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            gen = self._generation(con)
            if marker is None:
                self._write_marker(gen)
            elif marker != gen:
                raise StoreError(
                    f"IPAM store {self.path} is not the database {self.marker} records (generation {gen}, "
                    f"expected {marker}): it was replaced while in use, and the addresses it lacks may be "
                    f"held by running containers. {self._recovery()}"
                )
            ident = os.stat(self.path)
            self._ident = (ident.st_dev, ident.st_ino)
        except sqlite3.Error as e:
            if con is not None:
                con.close()
            raise self._map(e) from None
        except BaseException:
            if con is not None:
                con.close()
            raise
        finally:
            os.close(dfd)  # releases the directory lock
        self._con = con

    # ------------------------------------------------------------------ identity, modes
    def _recovery(self) -> str:
        return (
            f"Restore it from a backup; or, to start this store over with no reservations (only once no "
            f"container holds an address from it), remove the whole directory {self.directory}"
        )

    def _missing(self, marker: str | None) -> StoreError:
        return StoreError(
            f"IPAM store {self.path} is missing, but {self.marker} shows it existed (generation {marker}): "
            f"it was deleted while in use, and the addresses it recorded may be held by running containers. "
            f"{self._recovery()}"
        )

    def _read_marker(self) -> str | None:
        try:
            with open(self.marker, encoding="ascii", errors="replace") as f:
                return f.read().strip() or "(empty)"
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"IPAM store marker {self.marker} unreadable: {e.strerror or e}") from None

    def _write_marker(self, gen: str) -> None:
        tmp = f"{self.marker}.tmp{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)
                os.write(fd, gen.encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.marker)
        except OSError as e:
            with suppress(OSError):
                os.unlink(tmp)
            raise StoreError(f"cannot write IPAM store marker {self.marker}: {e.strerror or e}") from None

    @staticmethod
    def _generation(con) -> str:
        """The database's generation (created on first open, and for stores older than it)."""
        import sqlite3

        try:
            t = con.execute("SELECT generation FROM store_identity").fetchone()
        except sqlite3.OperationalError:
            t = None
        if t is not None:
            return str(t[0])
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("CREATE TABLE IF NOT EXISTS store_identity (generation TEXT NOT NULL)")
            t = con.execute("SELECT generation FROM store_identity").fetchone()
            if t is None:
                gen = os.urandom(16).hex()
                con.execute("INSERT INTO store_identity (generation) VALUES (?)", (gen,))
            else:
                gen = str(t[0])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return gen

    def _stat_db(self) -> os.stat_result | None:
        import stat

        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"IPAM store {self.path} unusable: {e.strerror or e}") from None
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"IPAM store {self.path} is {_kind(st.st_mode)}, not a database file")
        return st

    def _make_dirs(self) -> bool:
        """The store directory and its parent (the data directory) 0700 when created here,
        higher missing levels 0755; an existing store directory is tightened to 0700
        (then True: its files may be loose too)."""
        d = os.path.abspath(self.directory)
        parent = os.path.dirname(d)
        missing: list[str] = []
        p = d
        while not os.path.isdir(p):
            if os.path.lexists(p) or os.path.dirname(p) == p:
                if os.path.isdir(p):
                    break  # a concurrent opener made it between the two looks
                self._not_a_dir(p)
            missing.append(p)
            p = os.path.dirname(p)
        for p in reversed(missing):
            mode = DIR_MODE if p in (d, parent) else 0o755
            try:
                os.mkdir(p, mode)
            except FileExistsError:
                if not os.path.isdir(p):
                    self._not_a_dir(p)
                continue  # a concurrent opener made it
            except OSError as e:
                raise StoreError(f"cannot create IPAM store directory {p}: {e.strerror or e}") from None
            _tighten(p, mode, exact=True)  # mkdir's mode is masked by the umask
        return not missing and _tighten(d, DIR_MODE)

    def _not_a_dir(self, p: str) -> None:
        try:
            kind = _kind(os.stat(p).st_mode)
        except OSError as e:
            kind = f"unusable ({e.strerror or e})"
        raise IpamConfigError(
            f"IPAM store location {self.directory}: {p} is {kind}, not a directory (check the ipam dataDir)"
        )

    def _lock_dir(self) -> int:
        import fcntl

        try:
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise StoreError(f"IPAM store directory {self.directory} unusable: {e.strerror or e}") from None
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                fcntl.flock(dfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return dfd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(dfd)
                    raise StoreBusy(
                        f"IPAM store directory {self.directory} is locked by another process (waited "
                        f"{self.busy_timeout:g}s); try again"
                    ) from None
                time.sleep(0.002)

    def _set_wal(self, con) -> None:
        # Switching a new file to WAL needs an exclusive lock; concurrent first openers
        # may see "busy" (or the old mode) for a moment: retry within the busy timeout.
        import sqlite3

        deadline = time.monotonic() + self.busy_timeout
        delay = 0.002
        while True:
            try:
                mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() == "wal":
                    return
                err: BaseException = StoreError(f"IPAM store {self.path}: cannot use WAL journal (got {mode!r})")
            except sqlite3.OperationalError as e:
                if not _is_busy(e):
                    raise
                err = e
            if time.monotonic() >= deadline:
                raise err
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
                self._ident = None

    def _check_identity(self) -> None:
        """StoreError if the file opened is no longer at ``path`` (deleted or replaced
        under an open store: its writes would be lost, another opener refuses)."""
        try:
            st = os.stat(self.path)
            same = (st.st_dev, st.st_ino) == self._ident
        except OSError:
            same = False
        if not same:
            self.close()
            raise StoreError(
                f"IPAM store {self.path} was deleted or replaced while open. {self._recovery()}"
            )

    def _map(self, e: BaseException) -> BaseException:
        if _is_busy(e):
            return StoreBusy(
                f"IPAM store {self.path} is locked by another process (waited {self.busy_timeout:g}s); try again"
            )
        return StoreError(f"IPAM store {self.path} unusable: {e}")

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def write(self) -> Iterator[Txn]:
        """A ``BEGIN IMMEDIATE`` transaction: committed if the body returns, else rolled back."""
        with self._lock:
            self.open()
            yield from self._txn("BEGIN IMMEDIATE", write=True)

    @contextmanager
    def read(self) -> Iterator[Txn]:
        """A consistent read snapshot (never waits for writers in WAL mode)."""
        with self._lock:
            self.open()
            yield from self._txn("BEGIN", write=False)

    def _txn(self, begin: str, write: bool) -> Iterator[Txn]:
        import sqlite3

        self._check_identity()
        con = self._con
        try:
            con.execute(begin)
        except sqlite3.Error as e:
            raise self._map(e) from None
        try:
            yield self.txn_class(con)
            if write and _txn_hook is not None:
                _txn_hook("before-commit")
            con.execute("COMMIT")
        except BaseException as exc:
            try:
                if con.in_transaction:
                    con.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(exc, sqlite3.Error):
                raise self._map(exc) from None
            raise


def _kind(mode: int) -> str:
    import stat

    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _tighten(path: str, mode: int, exact: bool = False) -> bool:
    """chmod ``path`` to ``mode`` if it grants more (group/other bits), or ``exact``;
    whether it did."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise StoreError(f"IPAM store path {path} unusable: {e.strerror or e}") from None
    import stat

    if stat.S_ISLNK(st.st_mode):
        return False
    if exact or st.st_mode & 0o7777 & ~mode:
        try:
            os.chmod(path, mode)
        except OSError as e:
            raise StoreError(f"cannot restrict the mode of IPAM store path {path}: {e.strerror or e}") from None
        return True
    return False
