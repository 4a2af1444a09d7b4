#!/usr/bin/env python3
"""Docker benchmark: a splice-bridge network vs dockerd's built-in ``bridge`` driver, same dockerd.

One private dockerd 20.10 and one ``splice driver``, started exactly as the tests start them
(tests/docker/harness.py: a throwaway host network namespace ``spb-*`` + a private mount
namespace; private data/exec roots, socket, cgroup parent; the plugins dir bind-mounted over
/run/docker/plugins; the busybox image imported), except that dockerd runs with its defaults for
``--iptables``, ``--ip-forward`` and ``--ip-masq`` (all on, as users run it; ``Dockerd(iptables=
True)``) and without live-restore. That is safe only because dockerd lives in the throwaway
namespace: its iptables-nft tables and its net sysctls are that namespace's own. The script
checks it: the machine's own ``iptables-save``/``ip6tables-save``/``nft list ruleset`` and net
sysctls are read before and after and must be equal (printed, and non-zero exit if not).

Networks (the same /24 size; a container's traffic never leaves the throwaway namespace):

* ``builtin``: ``docker network create -d bridge`` (Docker's own driver and IPAM; iptables rules);
* ``splice``: ``-d splice-bridge --ipam-driver splice-bridge`` (splice's driver and IPAM);
* ``splice-dipam`` (optional): ``-d splice-bridge`` with Docker's default IPAM (only the network
  driver is splice's: separates the IPAM round trips from the rest).

Operations, each timed as the user sees it (wall clock of the /usr/bin/docker CLI process):

* ``connect``/``disconnect``: ``docker network connect NET C`` then ``docker network disconnect
  NET C`` of one running container C (busybox sleeping, started on a base network of the
  built-in driver, the same C for every implementation);
* ``run``/``rm``: ``docker run -d --network NET busybox sleep 3600`` then ``docker rm -f``;
* ``cli floor``: ``docker inspect -f {{.Id}} C``, the CLI's own start + one API round trip.

Interleaving: within each round, cycle i runs every implementation once, the order reversed on
odd i (A B, B A, ...), so load and drift hit all alike; 2 untimed warm-up cycles per
implementation first. The first cycle of each implementation per round is checked (the
container has its address on the network); a failed command aborts the run.

Profile: for the splice implementations the driver's ``-v`` log (each call with its duration)
is cut per operation; the table below the main one gives, per remote call, its median duration
and count per operation, and the share of the operation's wall time spent inside the driver.

Where the time goes, two views besides the wall clock: (1) per splice operation, a timeline from
the driver log's timestamps: CLI start → each remote call (its duration) and the gap before it
(dockerd's own work + the HTTP round trip + the CLI) → CLI exit; (2) with ``--monitor FILE``,
``ip -ts monitor link address`` in dockerd's namespace (µs kernel timestamps, for both drivers):
when the veth is made, moved into the sandbox, up; back in the host, deleted; median ms after the
CLI started. The two drivers differ only in what happens between those events.

``--load K`` (repeatable; default 0): the whole benchmark again with K busy-looping processes
(``sh -c 'while :; do :; done'``) started by the script and stopped by PID after the level.

Usage (root):  .venv/bin/python bench/docker_compare.py [-n 30] [--rounds 2] [--load 0 --load 2]
               [--impl builtin --impl splice --impl splice-dipam] [--out report.json] [--keep-logs DIR]
               [--monitor events.txt]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from tests.clients import hostenv, image  # noqa: E402
from tests.docker.harness import Dockerd, Driver, Holder, cgroup_pids  # noqa: E402

IMAGE = "splice-busybox:latest"
IMPLS = ("builtin", "splice", "splice-dipam")
SUBNETS = {"builtin": "10.231.1.0/24", "splice": "10.231.2.0/24", "splice-dipam": "10.231.3.0/24",
           "base": "10.231.0.0/24"}
SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.route_localnet",
           "net.ipv4.conf.default.forwarding", "net.bridge.bridge-nf-call-iptables",
           "net.bridge.bridge-nf-call-ip6tables", "net.bridge.bridge-nf-call-arptables")
# "<kind>: POST <path> <body> -> <status> <answer> (<ms> ms)"; dockerd's bodies end in a newline,
# so the answer may be on a continuation line starting " -> "
CALL_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) [^\n]*?: POST (/\S+) "
                     r"(?:[^\n]*\n(?= -> ))?[^\n]*?-> (\d+) [^\n]*\(([\d.]+) ms\)$", re.M)


# --------------------------------------------------------------------------- the machine's own state


def _out(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return f"({argv[0]} not installed)"
    text = p.stdout if p.returncode == 0 else f"(rc {p.returncode}) {p.stdout}{p.stderr}"
    # iptables-save stamps the time it ran: not a change
    return "\n".join(line for line in text.splitlines() if not line.startswith("# "))


def machine_state() -> dict:
    """Read only, in the machine's own namespaces: rulesets, net sysctls, Docker's plugin dir."""
    sysctl = {}
    for k in SYSCTLS:
        p = "/proc/sys/" + k.replace(".", "/")
        if os.path.exists(p):
            sysctl[k] = Path(p).read_text().strip()
    return {
        "iptables-save": _out(["iptables-save"]),
        "ip6tables-save": _out(["ip6tables-save"]),
        "iptables-legacy-save": _out(["iptables-legacy-save"]) if shutil.which("iptables-legacy-save") else "",
        "nft list ruleset": _out(["nft", "list", "ruleset"]),
        "sysctl": sysctl,
        "links": sorted(line.split(":")[1].strip().split("@")[0]
                        for line in _out(["ip", "-o", "link", "show"]).splitlines() if ":" in line),
        "/run/docker": sorted(os.listdir("/run/docker")) if os.path.isdir("/run/docker") else None,
        "/run/docker/plugins": (sorted(os.listdir("/run/docker/plugins"))
                                if os.path.isdir("/run/docker/plugins") else None),
    }


def summarize_state(st: dict) -> str:
    def n(text):
        return len([x for x in text.splitlines() if x.strip()])
    return (f"iptables-save {n(st['iptables-save'])} lines, ip6tables-save {n(st['ip6tables-save'])} lines, "
            f"nft ruleset {n(st['nft list ruleset'])} lines, sysctls {st['sysctl']}")


def state_diff(before: dict, after: dict) -> list[str]:
    import difflib
    out = []
    for k in before:
        if before[k] == after[k]:
            continue
        if isinstance(before[k], str):
            out += [f"--- {k} changed:"] + list(difflib.unified_diff(before[k].splitlines(), after[k].splitlines(),
                                                                     lineterm="", n=1))
        else:
            out.append(f"--- {k}: {before[k]!r} -> {after[k]!r}")
    return out


# --------------------------------------------------------------------------- the private dockerd


class Env:
    """dockerd (iptables on) + splice driver in a throwaway spb-* netns, as tests/docker does."""

    def __init__(self, keep_logs: str | None):
        self.keep_logs = keep_logs
        self.base = Path(tempfile.mkdtemp(prefix="spb-", dir="/tmp"))  # short: --exec-root sockets
        self.cgroup_parent = f"/spb-{os.getpid()}"
        self.ns = f"spb-{os.getpid()}-{os.urandom(3).hex()}"
        self.janitor = hostenv.PathJanitor(dirs=[str(d) for d in hostenv.cgroup_dirs(self.cgroup_parent)])
        self.holder = self.dockerd = self.driver = None
        self.ns_made = False

    def start(self) -> None:
        subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
        self.ns_made = True
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True, capture_output=True)
        self.holder = Holder(self.base, f"/run/netns/{self.ns}")
        self.holder.start()
        storage = "vfs" if hostenv.fs_type(self.base) == "overlay" else "overlay2"
        self.dockerd = Dockerd(self.holder, self.base, self.cgroup_parent, storage, iptables=True)
        self.dockerd.set_live_restore(False)  # dockerd's default
        self.dockerd.start(timeout=60)
        self.docker("import", str(image.rootfs_tar(self.base / "rootfs.tar")), IMAGE)
        self.driver = Driver(self.holder, self.base, str(VENV_BIN / "splice"))
        self.driver.start()

    def docker(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        p = self.dockerd.cli(*args, check=False, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({p.returncode}): {p.stdout}{p.stderr}\n"
                               f"--- driver log tail:\n{self.driver.tail(2000) if self.driver else ''}")
        return p

    def timed(self, *args: str) -> float:
        t0 = time.perf_counter()
        self.docker(*args)
        return (time.perf_counter() - t0) * 1000

    def in_ns(self, *argv: str) -> str:
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.ns}", *argv], capture_output=True, text=True,
                              timeout=30).stdout

    def stop(self) -> list[str]:
        """Everything we started, by PID; returns what was left behind (should be nothing)."""
        problems = []

        def best(fn, *a, **kw):
            try:
                fn(*a, **kw)
            except Exception as exc:  # noqa: BLE001 - teardown goes on
                problems.append(f"teardown {getattr(fn, '__name__', fn)}: {exc!r}")

        if self.dockerd is not None and self.dockerd.running():
            ids = self.dockerd.cli("ps", "-aq", check=False).stdout.split()
            if ids:
                self.dockerd.cli("rm", "-f", *ids, check=False)
            for n in self.dockerd.cli("network", "ls", "-q", "--filter", "type=custom", check=False).stdout.split():
                self.dockerd.cli("network", "rm", n, check=False)
        if self.keep_logs:
            os.makedirs(self.keep_logs, exist_ok=True)
            for f in ("dockerd.log", "driver.log"):
                if (self.base / f).exists():
                    shutil.copy(self.base / f, Path(self.keep_logs) / f)
        if self.dockerd is not None:
            best(self.dockerd.stop)
        if self.driver is not None:
            best(self.driver.stop)
        hostenv.kill_pids(cgroup_pids(self.cgroup_parent))
        hostenv.kill_pids(hostenv.pids_with_cmdline(str(self.base)))
        if self.holder is not None:
            best(self.holder.stop)
        hostenv.umount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)
        if self.ns_made:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        for _ in range(30):
            self.janitor.cleanup()
            if not any(d.exists() for d in hostenv.cgroup_dirs(self.cgroup_parent)):
                break
            time.sleep(0.1)
        # what is left
        left = [d for d in hostenv.cgroup_dirs(self.cgroup_parent) if d.exists()]
        if left:
            problems.append(f"cgroups left: {left}")
        pids = hostenv.pids_with_cmdline(str(self.base))
        if pids:
            problems.append(f"processes left: {pids}")
        if self.ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
            problems.append(f"netns left: {self.ns}")
        if self.base.exists():
            problems.append(f"directory left: {self.base}")
        return problems


# --------------------------------------------------------------------------- the benchmark


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 60 samples is the largest)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


class Bench:
    def __init__(self, env: Env, impls: list[str], n: int):
        self.env = env
        self.impls = impls
        self.n = n
        self.nets = {i: f"bench-{i}" for i in impls}
        self.samples: dict = {}   # (load, impl, metric) -> [ms]
        self.calls: dict = {}     # (load, impl, op) -> {path: [ms per call]}
        self.driver_ms: dict = {}  # (load, impl, op) -> [ms inside the driver per operation]
        self.windows: list = []  # (load, impl, op, start, end) epoch seconds, every operation
        self.timelines: dict = {}  # (load, impl, op) -> [([(path, gap before ms, call ms)], tail ms)]
        self.seq = 0

    def setup(self) -> None:
        d = self.env.docker
        d("network", "create", "-d", "bridge", "--subnet", SUBNETS["base"], "bench-base")
        for impl in self.impls:
            sub = ["--subnet", SUBNETS[impl]]
            if impl == "builtin":
                d("network", "create", "-d", "bridge", *sub, self.nets[impl])
            elif impl == "splice":
                d("network", "create", "-d", "splice-bridge", "--ipam-driver", "splice-bridge", *sub, self.nets[impl])
            else:
                d("network", "create", "-d", "splice-bridge", *sub, self.nets[impl])
        d("run", "-d", "--name", "bench-c", "--network", "bench-base", IMAGE, "sleep", "100000")

    def dockerd_setup_report(self) -> str:
        rules = self.env.in_ns("iptables-save")
        chains = sorted({line.split()[0][1:] for line in rules.splitlines() if line.startswith(":DOCKER")})
        nrules = sum(1 for line in rules.splitlines() if line.startswith("-A"))
        fwd = self.env.in_ns("cat", "/proc/sys/net/ipv4/ip_forward").strip()
        masq = sum(1 for line in rules.splitlines() if "MASQUERADE" in line)
        return (f"dockerd's own namespace {self.env.ns}: iptables (nft backend) {nrules} rules, chains {chains}, "
                f"{masq} MASQUERADE rules, net.ipv4.ip_forward={fwd}")

    def _driver_calls(self, mark: int) -> list[tuple[str, float, float]]:
        """(path, ms, end as epoch seconds) of each call logged after byte ``mark`` (1 ms resolution:
        the log's timestamp is when the answer was logged, local time like ours)."""
        text = _read_from(self.env.driver.log, mark)
        out = []
        for m in CALL_RE.finditer(text):
            end = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((m.group(2).rsplit(".", 1)[-1], float(m.group(4)), end))
        return out

    def _profiled(self, load: int, impl: str, op: str, argv: tuple[str, ...]) -> float:
        splice = impl != "builtin"
        mark = self.env.driver.log_size() if splice else 0
        w0 = time.time()
        ms = self.env.timed(*argv)
        w1 = time.time()
        self.windows.append((load, impl, op, w0, w1))
        if splice:
            calls = self._driver_calls(mark)
            per = self.calls.setdefault((load, impl, op), {})
            for path, cms, _end in calls:
                per.setdefault(path, []).append(cms)
            self.driver_ms.setdefault((load, impl, op), []).append(sum(c for _, c, _ in calls))
            # timeline: CLI start → first call, each call and the gap before it, last call → CLI exit
            if calls:
                steps, prev = [], w0
                for path, cms, end in calls:
                    steps.append((path, (end - cms / 1000 - prev) * 1000, cms))
                    prev = end
                self.timelines.setdefault((load, impl, op), []).append((steps, (w1 - prev) * 1000))
        return ms

    def add(self, load, impl, metric, ms) -> None:
        self.samples.setdefault((load, impl, metric), []).append(ms)

    def check_connected(self, impl: str, cname: str) -> None:
        net = self.nets[impl]
        ip = json.loads(self.env.docker("inspect", cname).stdout)[0]["NetworkSettings"]["Networks"][net]["IPAddress"]
        addrs = self.env.docker("exec", cname, "ip", "-o", "-4", "addr").stdout
        if not ip or f" {ip}/" not in addrs:
            raise RuntimeError(f"{impl}: {cname} has no {ip!r} on {net}: {addrs}")

    def connect_cycle(self, load: int, impl: str, timed: bool, check: bool) -> None:
        net = self.nets[impl]
        t_c = self._profiled(load, impl, "connect", ("network", "connect", net, "bench-c"))
        if check:
            self.check_connected(impl, "bench-c")
        t_d = self._profiled(load, impl, "disconnect", ("network", "disconnect", net, "bench-c"))
        if timed:
            self.add(load, impl, "connect", t_c)
            self.add(load, impl, "disconnect", t_d)
            self.add(load, impl, "connect+disconnect", t_c + t_d)

    def run_cycle(self, load: int, impl: str, timed: bool, check: bool) -> None:
        self.seq += 1
        name = f"bench-r{self.seq}"
        t_r = self._profiled(load, impl, "run", ("run", "-d", "--name", name, "--network", self.nets[impl], IMAGE,
                                                 "sleep", "3600"))
        if check:
            self.check_connected(impl, name)
        t_rm = self._profiled(load, impl, "rm", ("rm", "-f", name))
        if timed:
            self.add(load, impl, "run", t_r)
            self.add(load, impl, "rm", t_rm)
            self.add(load, impl, "run+rm", t_r + t_rm)

    def floor(self, load: int) -> None:
        self.add(load, "cli", "cli floor", self.env.timed("inspect", "-f", "{{.Id}}", "bench-c"))

    def round(self, load: int) -> None:
        for impl in self.impls:  # warm-up, untimed (first call of a kind, page cache, ...)
            for _ in range(2):
                self.connect_cycle(load, impl, timed=False, check=False)
                self.run_cycle(load, impl, timed=False, check=False)
        for i in range(self.n):
            order = self.impls if i % 2 == 0 else list(reversed(self.impls))
            for impl in order:
                self.connect_cycle(load, impl, timed=True, check=(i == 0))
            for impl in order:
                self.run_cycle(load, impl, timed=True, check=(i == 0))
            self.floor(load)


def _read_from(path: Path, mark: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------- load


def start_load(k: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["sh", "-c", "while :; do :; done"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(k)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:  # by PID: only the loops this script started
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(10)


# --------------------------------------------------------------------------- report


METRICS = ("connect", "disconnect", "connect+disconnect", "run", "rm", "run+rm")


def table(bench: Bench, load: int, rounds: int, loadavgs: list) -> str:
    impls = bench.impls
    base = "builtin" if "builtin" in impls else None
    others = [i for i in impls if i != base]
    la = ", ".join(f"{a:.2f}" for a in loadavgs[0]) + " → " + ", ".join(f"{a:.2f}" for a in loadavgs[-1])
    lines = [f"busy loops {load}, N={bench.n} cycles × {rounds} rounds per implementation, load average "
             f"(1/5/15 min) at start → end: {la}"]
    head = ["operation"] + [f"{i} p50 / p99 ms" for i in impls]
    head += [f"{i}/builtin p50 / p99" for i in others] if base else []
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for m in METRICS:
        vals = {i: bench.samples.get((load, i, m), []) for i in impls}
        cells = [f"`{m}`"] + [f"{pct(vals[i], 50):.1f} / {pct(vals[i], 99):.1f}" for i in impls]
        if base:
            b50, b99 = pct(vals[base], 50), pct(vals[base], 99)
            cells += [f"**{pct(vals[i], 50) / b50:.2f}** / {pct(vals[i], 99) / b99:.2f}" for i in others]
        lines.append("| " + " | ".join(cells) + " |")
    fl = bench.samples.get((load, "cli", "cli floor"), [])
    lines.append(f"CLI floor (`docker inspect -f {{{{.Id}}}} C`, same run): p50 {pct(fl, 50):.1f} ms, "
                 f"p99 {pct(fl, 99):.1f} ms")
    return "\n".join(lines)


def profile(bench: Bench, load: int) -> str:
    lines = []
    for impl in [i for i in bench.impls if i != "builtin"]:
        lines.append(f"{impl}: remote calls per operation (driver -v log; median ms × calls per operation)")
        for op in ("connect", "disconnect", "run", "rm"):
            per = bench.calls.get((load, impl, op), {})
            nops = len(bench.driver_ms.get((load, impl, op), [])) or 1
            wall = pct(bench.samples.get((load, impl, op), []), 50)
            inside = statistics.median(bench.driver_ms.get((load, impl, op), [0]))
            parts = ", ".join(f"{p.rsplit('.', 1)[-1] if '.' in p else p} {statistics.median(v):.1f}"
                              + (f"×{len(v) / nops:.3g}" if len(v) != nops else "")
                              for p, v in sorted(per.items(), key=lambda kv: -statistics.median(kv[1]) * len(kv[1])))
            lines.append(f"  {op}: wall p50 {wall:.1f} ms, inside the driver (sum of calls) p50 {inside:.1f} ms: "
                         f"{parts}")
            tl = bench.timelines.get((load, impl, op), [])
            if tl:
                common, count = collections.Counter(tuple(p for p, _, _ in steps) for steps, _ in tl).most_common(1)[0]
                same = [(steps, tail) for steps, tail in tl if tuple(p for p, _, _ in steps) == common]
                cells = []
                for i, path in enumerate(common):
                    gap = statistics.median(st[i][1] for st, _ in same)
                    dur = statistics.median(st[i][2] for st, _ in same)
                    cells.append(f"{'CLI start' if i == 0 else ''} +{gap:.1f} → {path} {dur:.1f}")
                tail = statistics.median(t for _, t in same)
                lines.append(f"    timeline (median of {count}/{len(tl)} with this sequence, gaps = dockerd + CLI + "
                             f"transport, ±1 ms):{' '.join(cells)} +{tail:.1f} → CLI exit")
    return "\n".join(lines)


MILESTONES = {  # ip monitor line patterns, in the dockerd namespace; the first (or last) match in an operation
    "connect": [("veth made", r"\d+: (sp|veth)\S*@NONE", 0), ("into sandbox", r"Deleted \d+: (sp|veth)", 0),
                ("carrier up", r"\d+: veth\S+: <[^>]*LOWER_UP", 0)],
    "disconnect": [("peer down", r"\d+: veth\S+: <NO-CARRIER", 0),
                   ("back in host", r"\d+: (sp|veth)\S*@\S+: <BROADCAST,MULTICAST> mtu \d+ qdisc noop state DOWN", 0),
                   ("veth deleted", r"Deleted \d+: \S+@NONE", -1)],
}
MILESTONES["run"], MILESTONES["rm"] = MILESTONES["connect"], MILESTONES["disconnect"]


def kernel_milestones(monitor: str, windows: list) -> str:
    """Median ms after the CLI started at which the kernel saw each step (ip -ts monitor)."""
    events = []
    with open(monitor) as f:
        for line in f:
            m = re.match(r"\[(\S+)\] (.*)", line)
            if m:
                events.append((datetime.datetime.fromisoformat(m.group(1)).timestamp(), m.group(2)))
    got: dict = {}
    for load, impl, op, w0, w1 in windows:
        inside = [(1000 * (t - w0), text) for t, text in events if w0 <= t <= w1]
        row = got.setdefault((load, impl, op), {"CLI exit": []})
        row["CLI exit"].append(1000 * (w1 - w0))
        for name, pattern, which in MILESTONES[op]:
            hits = [t for t, text in inside if re.match(pattern, text)]
            if hits:
                row.setdefault(name, []).append(hits[which])
    lines = ["kernel events in dockerd's namespace (ip -ts monitor), median ms after the CLI started:"]
    for (load, impl, op), row in sorted(got.items()):
        cells = sorted(((statistics.median(v), k, len(v)) for k, v in row.items()), key=lambda x: x[0])
        lines.append(f"  load {load} {impl:12} {op:10} " + ", ".join(f"{k} {m:.1f}" for m, k, _n in cells))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=30, help="timed cycles per implementation, operation and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--load", type=int, action="append", help="busy-loop processes (repeatable; default 0)")
    ap.add_argument("--impl", action="append", choices=IMPLS, help="implementations (default builtin, splice)")
    ap.add_argument("--out", help="write the raw samples and summary as JSON here")
    ap.add_argument("--keep-logs", help="copy dockerd.log and driver.log here at the end")
    ap.add_argument("--monitor", help="write `ip -ts monitor link address` of dockerd's namespace here (kernel "
                                      "events with µs timestamps, for profiling; adds a little load)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    impls = args.impl or ["builtin", "splice"]
    loads = args.load or [0]
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()}", flush=True)
    before = machine_state()
    print("machine before:", summarize_state(before), flush=True)
    env = Env(args.keep_logs)
    bench = Bench(env, impls, args.n)
    loadavgs: dict = {}
    problems: list[str] = []
    monitor = None
    try:
        env.start()
        bench.setup()
        print(bench.dockerd_setup_report(), flush=True)
        if args.monitor:
            monitor_out = open(args.monitor, "w")
            monitor = subprocess.Popen(["nsenter", f"--net=/run/netns/{env.ns}", "ip", "-ts", "monitor", "link",
                                        "address"], stdout=monitor_out, stderr=subprocess.STDOUT)
        for load in loads:
            procs = start_load(load)
            try:
                if load:
                    time.sleep(2)
                loadavgs[load] = [os.getloadavg()]
                for r in range(args.rounds):
                    t0 = time.monotonic()
                    bench.round(load)
                    loadavgs[load].append(os.getloadavg())
                    print(f"load {load}, round {r + 1}/{args.rounds}: {time.monotonic() - t0:.0f} s, "
                          f"load average {os.getloadavg()}", flush=True)
            finally:
                stop_load(procs)
    finally:
        if monitor is not None:  # by PID: the one this script started
            monitor.terminate()
            monitor.wait(10)
            monitor_out.close()
        problems += env.stop()
    after = machine_state()
    diff = state_diff(before, after)
    print()
    for load in loads:
        if load not in loadavgs:
            continue
        print(table(bench, load, args.rounds, loadavgs[load]))
        print(profile(bench, load))
        print()
    if args.monitor and bench.windows:
        print(kernel_milestones(args.monitor, bench.windows))
        print()
    print("machine after: ", summarize_state(after))
    if diff:
        print("MACHINE STATE CHANGED during the run (may be someone else's activity; check):")
        print("\n".join(diff))
    else:
        print("machine's own iptables/ip6tables/nft rulesets, net sysctls, links and /run/docker: unchanged")
    print("teardown: " + ("; ".join(problems) if problems
                          else "nothing left (processes, netns, cgroups, mounts, dirs)"))
    if args.out:
        summary = {f"load{load}/{impl}/{m}": {"p50": pct(v, 50), "p99": pct(v, 99), "n": len(v)}
                   for (load, impl, m), v in bench.samples.items()}
        Path(args.out).write_text(json.dumps({
            "argv": sys.argv, "impls": impls, "n": args.n, "rounds": args.rounds, "loads": loads,
            "loadavg": {str(k): v for k, v in loadavgs.items()}, "summary": summary,
            "samples": {f"load{load}/{impl}/{m}": v for (load, impl, m), v in bench.samples.items()},
            "driver_calls": {f"load{load}/{impl}/{op}": per for (load, impl, op), per in bench.calls.items()},
            "windows": bench.windows,
            "machine_unchanged": not diff, "machine_diff": diff, "teardown_problems": problems,
        }, indent=1))
    return 1 if (diff or problems) else 0


if __name__ == "__main__":
    sys.exit(main())
