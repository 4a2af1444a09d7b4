"""Fixtures for the agent path: installed thin clients, agents in their own namespaces.

Every agent here runs in a throwaway namespace of its own (never the machine's, never the
test's host namespace), so a test that finds the bridge in ``host_ns`` and nothing in the
agent's namespace proves that the host-side work landed in the caller's namespace.
Agents are started by pid and stopped (SIGTERM, then SIGKILL) by the fixture that made them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from splice.conformance.runtime import Runtime

from ..conftest import CniRunner, Namespace, _del_ns, _new_ns, bin_dir, require_root
from ..e2e.conftest import Leaks, bridge_conflist, count_leases  # noqa: F401  (re-exported helpers)
from ..e2e.conftest import ipam_dir  # noqa: F401  (a fixture the re-run e2e tests need)

SPLICE = str(bin_dir() / "splice")


@dataclass
class Agent:
    """A ``splice agent`` process serving ``socket`` from inside namespace ``ns``."""

    socket: str
    ns: Namespace
    log: Path
    env: dict = field(default_factory=dict)
    args: list = field(default_factory=list)
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "Agent":
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={self.ns.path}", SPLICE, "agent", "--socket", self.socket, "-v", *self.args],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "a"), env=env, cwd=self.log.parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}: {self.log.read_text()}")
            if self.status() is not None:
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"agent did not come up: {self.log.read_text()}")

    def status(self) -> dict | None:
        p = subprocess.run([SPLICE, "status", "--socket", self.socket], capture_output=True, text=True, timeout=30)
        return json.loads(p.stdout) if p.returncode == 0 else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class SettlingLeaks(Leaks):
    """The e2e leak check, allowing the kernel up to ``settle`` seconds to finish tearing
    down a deleted namespace (``ip netns del`` returns before the kernel's cleanup_net
    work has destroyed its veths, and with it their host ends). In-process calls hide this
    behind ~100 ms of interpreter start-up; a call through the agent can look earlier. A
    real leak stays and still fails the check."""

    settle = 2.0

    def assert_clean(self, *args, **kwargs) -> None:
        deadline = time.monotonic() + self.settle
        while True:
            try:
                return super().assert_clean(*args, **kwargs)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def leaks(host_ns):
    return SettlingLeaks(host_ns, allow={"sptbr0"})


def install_clients(directory: Path) -> Path:
    subprocess.run([SPLICE, "install-cni", "--dir", str(directory)], check=True, capture_output=True)
    return directory


@pytest.fixture(scope="session")
def client_bin(tmp_path_factory) -> Path:
    """The thin-client executables, written by ``splice install-cni`` (what users install)."""
    return install_clients(tmp_path_factory.mktemp("cni-bin"))


@pytest.fixture
def start_agent(tmp_path, make_ns):
    """Factory: ``start_agent(env=None)`` -> a running Agent in a fresh namespace of its own
    on a per-test socket; every agent it made is stopped after the test."""
    require_root()
    made: list[Agent] = []

    def start(env: dict | None = None, ns: Namespace | None = None, socket: str | None = None,
              extra_args: list | None = None) -> Agent:
        agent = Agent(socket=socket or str(tmp_path / "run" / "agent.sock"), ns=ns or make_ns(),
                      log=tmp_path / "agent.log", env=dict(env or {}), args=list(extra_args or []))
        made.append(agent)
        return agent.start()

    yield start
    for agent in made:
        agent.stop()


@pytest.fixture
def agent(start_agent) -> Agent:
    return start_agent()


@pytest.fixture(scope="session")
def shared_agent(tmp_path_factory):
    """One agent for the re-run e2e suite (in its own namespace; every test its own host)."""
    require_root()
    ns = _new_ns()
    d = tmp_path_factory.mktemp("shared-agent")
    a = Agent(socket=str(d / "agent.sock"), ns=ns, log=d / "agent.log")
    try:
        yield a.start()
    finally:
        a.stop()
        _del_ns(ns)


def agent_runtime(host_ns, tmp_path, client_bin: Path, socket: str) -> Runtime:
    return Runtime(
        cni_path=[str(client_bin), "/usr/lib/cni"],
        cache_dir=str(tmp_path / "cache"),
        prefix=["nsenter", f"--net={host_ns.path}"],
        extra_env={"SPLICE_AGENT_SOCKET": socket},
    )


@pytest.fixture
def runtime(host_ns, tmp_path, client_bin, shared_agent) -> Runtime:
    """The e2e ``runtime``, through the installed thin clients and the shared agent."""
    return agent_runtime(host_ns, tmp_path, client_bin, shared_agent.socket)


@dataclass
class AgentCniRunner(CniRunner):
    """The e2e ``cni`` runner, through the thin clients and an agent."""

    socket: str = ""

    def run(self, plugin, command, conf, **kw):
        kw["extra_env"] = {"SPLICE_AGENT_SOCKET": self.socket, **(kw.get("extra_env") or {})}
        return super().run(plugin, command, conf, **kw)


@pytest.fixture
def cni(host_ns, client_bin, shared_agent) -> CniRunner:
    runner = AgentCniRunner(host_ns, cni_path=[str(client_bin)], socket=shared_agent.socket)
    if os.path.isdir("/usr/lib/cni"):
        runner.cni_path.append("/usr/lib/cni")
    return runner
