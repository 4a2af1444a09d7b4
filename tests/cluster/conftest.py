"""Fixtures of the cluster-store tests: one 3-member etcd cluster per session (harness.py),
restored after every test that broke it; each test gets its own key prefix and state
directory, and its body runs inside the client namespace (every etcd socket is made there)."""

from __future__ import annotations

import os
import secrets
import shutil

import pytest

from ..conftest import require, require_root, require_tool
from .harness import EtcdCluster

ETCD = os.environ.get("SPLICE_ETCD") or shutil.which("etcd") or "/usr/bin/etcd"  # SPLICE_ETCD: another build


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory):
    require_root()
    require_tool("ip", "nsenter")
    require(os.access(ETCD, os.X_OK), "etcd (Debian etcd-server: scripts/setup.sh installs it)")
    c = EtcdCluster(tmp_path_factory.mktemp("etcd"), etcd=ETCD)
    try:
        c.setup()
    except BaseException:
        c.close()
        raise
    yield c
    c.close()


@pytest.fixture
def cluster(etcd_cluster):
    """The session's cluster; members killed or cut by the test are back (and healthy)
    after it. Cleanups registered with ``cluster.later(fn)`` run first, in the client
    namespace."""
    cleanups: list = []
    etcd_cluster.later = cleanups.append
    yield etcd_cluster
    try:
        if any(not m.running for m in etcd_cluster.members) or etcd_cluster.cut_any:
            etcd_cluster.restore()

        def run_all():
            for fn in reversed(cleanups):
                try:
                    fn()
                except Exception:  # noqa: BLE001 - best effort: threads, leases of the test
                    pass

        etcd_cluster.run(run_all)
    finally:
        etcd_cluster.later = None


@pytest.fixture
def prefix() -> str:
    return f"/t-{secrets.token_hex(4)}"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A test using ``cluster`` runs in the client namespace (see harness.py)."""
    c = pyfuncitem.funcargs.get("cluster")
    if c is None:
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    c.run(pyfuncitem.obj, **args)
    return True
