#!/usr/bin/env python3
"""Start-up and round-trip costs behind the thin-client design (interpreter, imports, agent).

Times whole process runs the way a runtime runs a plugin (subprocess with stdin piped and
stdout/stderr captured), p50 and p10 of ``-r`` runs after warm-up, interleaved round by
round so a busy machine hurts every row alike:

* floors: ``/bin/true``, a Go reference plugin answering VERSION;
* interpreters: ``/usr/bin/python3`` with ``-c pass`` plain / ``-I`` / ``-IS``, the venv's
  python (``site`` + system site-packages + the editable-install finder), and whatever
  ``python3`` is first on PATH (here a pyenv shim);
* what the client could import: ``_socket`` vs ``socket`` vs ``json``;
* splice executables answering VERSION: the installed thin client (``splice install-cni``)
  through an agent, the same without agent (exec of the in-process plugin), the pip
  console script through the agent and in-process;
* the agent round trip measured from a warm process (connect, send env + stdin + netns
  fd, VERSION in the agent, reply): the per-call overhead the agent adds.

The agent is started by this script inside a throwaway namespace (spb-*) on a temporary
socket and stopped at the end. Usage (root): ``.venv/bin/python bench/startup.py [-r 60]``
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def percentiles(ts: list[float]) -> tuple[float, float]:
    ts = sorted(ts)
    return statistics.median(ts), ts[len(ts) // 10]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-r", "--runs", type=int, default=60)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")

    tmp = Path(tempfile.mkdtemp(prefix="splice-startup-"))
    ns = f"spb-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    agent = None
    try:
        bin_dir = tmp / "bin"
        subprocess.run([str(VENV_BIN / "splice"), "install-cni", "--dir", str(bin_dir)], check=True,
                       stdout=subprocess.DEVNULL)
        sock = str(tmp / "agent.sock")
        agent = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", str(VENV_BIN / "splice"), "agent",
                                  "--socket", sock], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while subprocess.run([str(VENV_BIN / "splice"), "status", "--socket", sock],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline or agent.poll() is not None:
                raise SystemExit("the agent did not start")
            time.sleep(0.05)

        version = b'{"cniVersion": "1.0.0"}'
        base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "VERSION"}
        with_agent = {**base, "SPLICE_AGENT_SOCKET": sock}
        no_agent = {**base, "SPLICE_AGENT_SOCKET": str(tmp / "none.sock")}
        py = "/usr/bin/python3"
        cases: list[tuple[str, list[str], dict]] = [
            ("/bin/true", ["/bin/true"], base),
            ("Go bridge VERSION", ["/usr/lib/cni/bridge"], base),
            ("python3 -c pass", [py, "-c", "pass"], base),
            ("python3 -I -c pass", [py, "-I", "-c", "pass"], base),
            ("python3 -IS -c pass", [py, "-IS", "-c", "pass"], base),
            ("venv python -c pass", [str(VENV_BIN / "python3"), "-c", "pass"], base),
            ("python3 -IS -c 'import _socket'", [py, "-IS", "-c", "import _socket"], base),
            ("python3 -IS -c 'import socket'", [py, "-IS", "-c", "import socket"], base),
            ("python3 -IS -c 'import json'", [py, "-IS", "-c", "import json"], base),
            ("thin client VERSION, agent", [str(bin_dir / "splice-bridge")], with_agent),
            ("thin client VERSION, no agent", [str(bin_dir / "splice-bridge")], no_agent),
            ("console script VERSION, agent", [str(VENV_BIN / "splice-bridge")], with_agent),
            ("console script VERSION, no agent", [str(VENV_BIN / "splice-bridge")], no_agent),
        ]
        path_python = shutil.which("python3")
        if path_python and os.path.realpath(path_python) != os.path.realpath(py):
            cases.insert(6, (f"PATH python3 -c pass ({path_python})", [path_python, "-c", "pass"], dict(os.environ)))
        times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for _ in range(3):  # warm-up
            for _, argv, env in cases:
                subprocess.run(argv, input=version, capture_output=True, env=env)
        for _ in range(args.runs):
            for name, argv, env in cases:
                t0 = time.perf_counter()
                p = subprocess.run(argv, input=version, capture_output=True, env=env)
                times[name].append((time.perf_counter() - t0) * 1000)
                if p.returncode != 0:
                    raise SystemExit(f"{name}: rc {p.returncode}: {p.stdout!r} {p.stderr!r}")

        # the agent round trip from a warm process
        sys.path.insert(0, str(REPO / "plugins"))
        from splice.plugins.agent import client

        env_blob = b"\0".join(f"{k}={v}".encode() for k, v in base.items())
        rt = []
        for i in range(args.runs * 5 + 20):
            nsfd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            t0 = time.perf_counter()
            s = client.connect(sock.encode())
            rc, out, err = client.request(s, b"bridge", env_blob, version, (nsfd,))
            dt = (time.perf_counter() - t0) * 1000
            s.close()
            os.close(nsfd)
            if i >= 20:
                rt.append(dt)

        print(f"start-up, {args.runs} runs each (ms)\n")
        print("| what | p50 | p10 |\n|---|---|---|")
        for name, _, _ in cases:
            p50, p10 = percentiles(times[name])
            print(f"| {name} | {p50:.1f} | {p10:.1f} |")
        p50, p10 = percentiles(rt)
        print(f"| agent round trip from a warm process (VERSION) | {p50:.2f} | {p10:.2f} |")
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
