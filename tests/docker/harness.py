"""A private dockerd 20.10 and the ``splice driver`` daemon, both inside a throwaway host.

Isolation (nothing here touches the machine's own interfaces, routes, nftables or Docker):
- A throwaway "host" network namespace (``spt-<pid>-*``, tests/conftest.py) holds dockerd, its
  containerd, the splice driver and therefore every bridge, veth, address and nft table they make;
  the containers' sandboxes are created by dockerd from there.
- A "holder" process (``unshare --mount --propagation private`` entered into that namespace, then
  ``sleep infinity``) owns a private mount namespace that dockerd and the driver join with
  ``nsenter --target <holder> --mount --net``. In it, /run and /opt are overlays whose upper layers
  live on a private tmpfs (dockerd's /run/docker/netns, containerd's /run/containerd/s shim
  sockets, /opt/containerd never reach the machine), /etc/docker is our directory (dockerd writes
  key.json there), and our ``plugins`` directory is bind-mounted over /run/docker/plugins: the
  only place dockerd 20.10 looks for remote plugin sockets besides /etc/docker/plugins and
  /usr/lib/docker/plugins. The driver is started with ``--plugins-dir <base>/plugins``, so even
  outside that mount namespace it would write nowhere else.
- Private daemon paths: ``--data-root``, ``--exec-root`` (short: containerd's socket paths must fit
  the 108-byte limit), ``-H unix://<base>/docker.sock``, ``--pidfile``, ``--config-file``, a private
  ``--cgroup-parent`` (removed afterwards, cgroupfs), ``--bridge=none --iptables=false
  --ip6tables=false --ip-forward=false --ip-masq=false --userland-proxy=false`` (``Dockerd(iptables=True)``,
  for bench/docker_compare.py, leaves dockerd's defaults for iptables/ip-forward/ip-masq). The CLI is
  /usr/bin/docker (Debian's 20.10; a newer /usr/local/bin/docker may shadow it on PATH) with a
  private ``DOCKER_CONFIG``.
- Only processes we started are stopped, by PID (dockerd, the driver, the holder); in teardown any
  leftover process whose command line names our private directory (containerd, shims) is killed.
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import signal
import socketserver
import subprocess
import threading
import time
from pathlib import Path

from splice.conformance.cnm import UnixConnection

from ..clients import hostenv

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # Debian's 20.10 CLI, explicitly: /usr/local/bin/docker may shadow it
CMD_TIMEOUT = 90


# --------------------------------------------------------------------------- the holder


def _view_script(base: Path, ovl: Path, binds: list[tuple[Path, str]], overlays: list[str]) -> str:
    """Shell run by the holder inside its fresh mount namespace, before ``exec sleep``."""
    q = shlex.quote
    lines = ["set -e", f"mount -t tmpfs -o mode=0700 splice-test {q(str(ovl))}"]
    for i, parent in enumerate(overlays):
        u, w = ovl / f"{i}u", ovl / f"{i}w"
        lines += [f"mkdir {q(str(u))} {q(str(w))}",
                  f"mount -t overlay overlay -o lowerdir={q(parent)},upperdir={q(str(u))},workdir={q(str(w))} "
                  f"{q(parent)}"]
    for src, target in binds:
        lines += [f"mkdir -p {q(target)}", f"mount --bind {q(str(src))} {q(target)}"]
    lines.append("exec sleep infinity")
    return "\n".join(lines)


class Holder:
    """The private mount namespace (joined to the throwaway host network namespace)."""

    def __init__(self, base: Path, host_path: str):
        self.base = base
        self.host_path = host_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        ovl = self.base / "ovl"
        ovl.mkdir()
        (self.base / "plugins").mkdir(mode=0o700)
        (self.base / "etc-docker").mkdir()
        binds = [(self.base / "plugins", "/run/docker/plugins")]
        overlays = [d for d in ("/run", "/opt") if os.path.isdir(d)]  # /opt: containerd's opt plugin
        if os.path.isdir("/etc/docker"):
            binds.append((self.base / "etc-docker", "/etc/docker"))
        else:
            overlays.append("/etc")  # mkdir /etc/docker lands in the overlay's upper layer
        script = _view_script(self.base, ovl, binds, overlays)
        with open(self.base / "holder.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net={self.host_path}", "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"mount-namespace holder failed: {(self.base / 'holder.log').read_text()}")
            try:
                return os.path.basename(os.readlink(f"/proc/{self.proc.pid}/exe")) == "sleep"
            except OSError:
                return False

        hostenv.wait_until(ready, timeout=10, interval=0.02, what="the mount-namespace holder")

    def argv(self) -> list[str]:
        """argv prefix running a command in the holder's mount and network namespaces."""
        return ["nsenter", f"--target={self.proc.pid}", "--mount", "--net", "--"]

    def path(self, p: str) -> str:
        """``p`` as seen inside the private mount namespace, reachable from ours."""
        return f"/proc/{self.proc.pid}/root{p}"

    def stop(self) -> None:
        if self.proc is not None:
            hostenv.stop_process(self.proc, timeout=5)


# --------------------------------------------------------------------------- plugin HTTP


def plugin_call(sock: Path | str, path: str, body: object = None, timeout: float = 5.0) -> tuple[int, object]:
    """POST one remote-plugin call the way dockerd does; (status, decoded JSON reply)."""
    conn = UnixConnection(str(sock), timeout)
    try:
        data = b"" if body is None else json.dumps(body).encode()
        conn.request("POST", path, body=data,
                     headers={"Accept": "application/vnd.docker.plugins.v1.2+json",
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw.strip() else None)
    finally:
        conn.close()


# --------------------------------------------------------------------------- processes


class Daemon:
    """One foreground process started in the holder's namespaces; restartable."""

    name = "daemon"

    def __init__(self, holder: Holder, base: Path, log: Path):
        self.holder = holder
        self.base = base
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.extra_env: dict[str, str] = {}  # for the next starts (e.g. SPLICE_FAILPOINT)

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    def start(self, timeout: float = 30.0) -> None:
        assert not self.running(), f"{self.name} already running"
        with open(self.log, "ab") as log:
            log.write(f"\n===== start #{self.starts + 1}: {self.extra_env} {shlex.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.holder.argv() + self.argv(), env={**self.env(), **self.extra_env},
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.starts += 1

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            return self.ready()

        hostenv.wait_until(up, timeout=timeout, interval=0.05, what=f"{self.name} to serve")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal the process we started (by PID) and reap it; SIGKILL if it lingers."""
        if not self.running():
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class Dockerd(Daemon):
    name = "dockerd"

    def __init__(self, holder: Holder, base: Path, cgroup_parent: str, storage: str, iptables: bool = False):
        super().__init__(holder, base, base / "dockerd.log")
        self.cgroup_parent = cgroup_parent
        self.storage = storage
        # False (the tests): no iptables rules, forwarding or masquerade. True (bench/docker_compare.py):
        # dockerd's defaults for those three, as users run it; only safe in the throwaway host
        # namespace, whose iptables/nftables and net sysctls are its own.
        self.iptables = iptables
        self.socket = base / "docker.sock"
        self.config = base / "daemon.json"
        self.set_live_restore(True)  # see test_dockerd_restart
        (base / "cli").mkdir(exist_ok=True)

    def set_live_restore(self, on: bool) -> None:
        """For the next start (containers keep running across a restart when on)."""
        self.config.write_text(json.dumps({"live-restore": on}))

    def argv(self) -> list[str]:
        b = self.base
        return [DOCKERD, "--data-root", str(b / "root"), "--exec-root", str(b / "x"),
                "-H", f"unix://{self.socket}", "--pidfile", str(b / "dockerd.pid"),
                "--config-file", str(self.config), "--storage-driver", self.storage,
                "--bridge=none",
                *([] if self.iptables else ["--iptables=false", "--ip-forward=false", "--ip-masq=false"]),
                "--ip6tables=false", "--userland-proxy=false",
                "--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", self.cgroup_parent]

    def env(self) -> dict:
        env = dict(os.environ)
        env.pop("DOCKER_HOST", None)
        return env

    def ready(self) -> bool:
        try:
            conn = UnixConnection(str(self.socket), 2)
            conn.request("GET", "/_ping")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def cli_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.base / "cli")
        return env

    def cli(self, *args: str, check: bool = True, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
        argv = [DOCKER, "-H", f"unix://{self.socket}", *args]
        p = subprocess.run(argv, env=self.cli_env(), capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {shlex.join(args)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
        return p


class Driver(Daemon):
    """``splice driver`` serving <base>/plugins (= /run/docker/plugins for our dockerd)."""

    name = "splice driver"
    SOCKETS = ("splice-bridge.sock", "splice-macvlan.sock", "splice.sock")  # splice.sock: IPAM only

    def __init__(self, holder: Holder, base: Path, splice: str):
        super().__init__(holder, base, base / "driver.log")
        self.splice = splice
        self.plugins_dir = base / "plugins"
        self.state_dir = base / "driver-state"
        self.ipam_dir = base / "driver-ipam"

    def argv(self) -> list[str]:
        return [self.splice, "driver", "--plugins-dir", str(self.plugins_dir), "--state-dir", str(self.state_dir),
                "--ipam-dir", str(self.ipam_dir), "-v"]

    def sock(self, name: str = "splice-bridge") -> Path:
        return self.plugins_dir / f"{name}.sock"

    def socket_paths(self) -> list[Path]:
        """Every socket the driver serves (splice-ipvlan.sock too, ...)."""
        return sorted(self.plugins_dir.glob("*.sock"))

    def ready(self) -> bool:
        for name in self.SOCKETS:
            try:
                status, reply = plugin_call(self.plugins_dir / name, "/Plugin.Activate", timeout=2)
            except OSError:
                return False
            if status != 200:
                return False
        return True

    def calls_since(self, mark: int) -> str:
        """The driver's log written after byte offset ``mark`` (for failure messages)."""
        try:
            with open(self.log, "rb") as f:
                f.seek(mark)
                return f.read().decode(errors="replace")[-6000:]
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0


def cgroup_pids(cgroup_parent: str) -> list[int]:
    """Every process in our containers' cgroup subtree (all hierarchies)."""
    pids: set[int] = set()
    for d in hostenv.cgroup_dirs(cgroup_parent):
        if not d.is_dir():
            continue
        for root, _dirs, files in os.walk(d):
            if "cgroup.procs" in files:
                try:
                    pids.update(int(x) for x in Path(root, "cgroup.procs").read_text().split())
                except OSError:
                    pass
    return sorted(pids)


def retry(fn, attempts: int = 3, delay: float = 0.5):
    for i in range(attempts):
        try:
            return fn()
        except Exception:  # noqa: BLE001
            if i == attempts - 1:
                raise
            time.sleep(delay)


class _DownHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.server.calls.append(self.path)
        data = json.dumps({"Err": "splice driver is down (test tombstone)"}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")  # no kept-alive connection outlives the tombstone
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True


class _DownServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class Tombstone:
    """Stands in for a dead driver on its sockets: every call gets HTTP 503 with an Err.

    A dead socket makes dockerd retry each call for 15 s (1+2+4+8 s backoff) before giving up,
    ~60 s for one ``docker rm -f``; an error status is not retried. Either way the driver sees
    none of the calls and dockerd removes the container anyway, which is what the tests are
    about, so the tombstone keeps them fast. ``calls`` lists what dockerd tried.
    """

    def __init__(self, sockets: list[Path]):
        self.sockets = sockets
        self.servers: list[_DownServer] = []
        self.calls: list[str] = []

    def __enter__(self) -> "Tombstone":
        for path in self.sockets:
            path.unlink(missing_ok=True)  # the killed driver's stale socket
            srv = _DownServer(str(path), _DownHandler)
            srv.calls = self.calls
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self.servers.append(srv)
        return self

    def __exit__(self, *exc) -> None:
        for srv in self.servers:
            srv.shutdown()
            srv.server_close()
        for path in self.sockets:
            path.unlink(missing_ok=True)
