"""libnet.netns inline switching: a worker thread visits namespaces with setns there and
back (the agent's workers), instead of a helper thread per visit."""

from __future__ import annotations

import os
import threading

import pytest

from splice.libnet import netns as nsmod
from splice.libnet.errors import NetError
from splice.libnet.netns import Netns, inline_switching, thread_broken

pytestmark = pytest.mark.root


def here() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def on_worker(fn):
    """Run fn on a fresh thread (its namespace changes must not touch the test's)."""
    box = {}

    def body():
        try:
            box["ok"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["err"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["ok"]


def test_inline_visits_return_nested_and_use_no_thread(host_ns, sandbox_ns, monkeypatch):
    host_ino = os.stat(host_ns.path).st_ino
    sb_ino = os.stat(sandbox_ns.path).st_ino

    def no_thread(*a, **k):
        raise AssertionError("a helper thread was started under inline_switching")

    def body():
        hfd = os.open(host_ns.path, os.O_RDONLY)
        nsmod._setns(hfd)
        seen = []
        with Netns.open(host_ns.path) as h, Netns.open(sandbox_ns.path) as sb, inline_switching(hfd):
            monkeypatch.setattr(nsmod, "on_thread", no_thread)
            seen.append(sb.run(here))
            # nested: sandbox -> host -> back to the sandbox -> back to the host
            seen.append(sb.run(lambda: (here(), h.run(here), here())))
            with pytest.raises(ZeroDivisionError):
                sb.run(lambda: 1 / 0)
            seen.append(here())
        os.close(hfd)
        return seen

    seen = on_worker(body)
    assert seen == [sb_ino, (sb_ino, host_ino, sb_ino), host_ino]


def test_a_failed_return_breaks_the_thread(host_ns, sandbox_ns, monkeypatch):
    def body():
        hfd = os.open(host_ns.path, os.O_RDONLY)
        nsmod._setns(hfd)
        real = nsmod._setns
        calls = []

        def flaky(fd):
            calls.append(fd)
            if len(calls) == 2:  # the way back
                raise OSError(1, "Operation not permitted")
            real(fd)

        monkeypatch.setattr(nsmod, "_setns", flaky)
        with Netns.open(sandbox_ns.path) as sb, inline_switching(hfd):
            with pytest.raises(NetError, match="cannot return"):
                sb.run(lambda: None)
            assert thread_broken()
            with pytest.raises(NetError, match="must not do namespace work"):
                Netns.current().run(lambda: None)
        monkeypatch.setattr(nsmod, "_setns", real)
        os.close(hfd)
        return True

    assert on_worker(body)
    assert not thread_broken()  # per thread
