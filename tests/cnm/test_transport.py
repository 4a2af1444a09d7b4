"""The HTTP transport: keep-alive (dockerd holds connections open), calls in parallel, and
clients that are idle, slow or too many cannot starve the daemon."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest

from .conftest import SPACE, DriverProcess

pytestmark = pytest.mark.root


@pytest.fixture
def short_driver(host_ns, tmp_path):
    d = DriverProcess(host_ns, tmp_path, env={"SPLICE_DRIVER_IDLE_TIMEOUT": "1.5", "SPLICE_DRIVER_REQUEST_TIMEOUT": "1",
                                              "SPLICE_DRIVER_MAX_CONNECTIONS": "6"}).start()
    yield d
    d.stop()


def _raw(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    return s


def _closed_within(s: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``s`` (it sends nothing but maybe an error answer)."""
    t0 = time.monotonic()
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
    except TimeoutError:
        raise AssertionError(f"the daemon did not close the connection within {seconds} s") from None
    except OSError:
        pass
    return time.monotonic() - t0


def test_keep_alive_and_parallel_calls(driver):
    c = driver.client("splice")
    c.ok("Plugin.Activate")
    sock = c.conn.sock
    for _ in range(50):
        c.ok("IpamDriver.GetDefaultAddressSpaces")
    assert c.conn.sock is sock  # one connection for every call
    errors: list = []

    def worker(n: int) -> None:
        try:
            w = driver.client("splice")
            for i in range(5):
                p = w.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Pool": f"10.{100 + n}.{i}.0/24"})
                a = w.ok("IpamDriver.RequestAddress", {"PoolID": p["PoolID"]})
                assert a["Address"] == f"10.{100 + n}.{i}.1/24"
                w.ok("IpamDriver.ReleasePool", {"PoolID": p["PoolID"]})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_slow_idle_and_too_many_clients(short_driver):
    d = short_driver
    path = d.sock()
    # a request whose body never completes: cut at its deadline, others are served meanwhile
    slow = _raw(path)
    slow.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
    # a slowloris: one header byte every 0.3 s, never done
    loris = _raw(path)
    loris.sendall(b"POST /Plugin.Activate HTTP/1.1\r\n")

    def drip() -> None:
        try:
            for _ in range(30):
                loris.sendall(b"X")
                time.sleep(0.3)
        except OSError:
            pass

    threading.Thread(target=drip, daemon=True).start()
    c = d.client()
    t0 = time.monotonic()
    assert c.ok("Plugin.Activate")
    assert time.monotonic() - t0 < 0.5
    assert _closed_within(slow, 4) < 4
    assert _closed_within(loris, 4) < 4
    # idle: a kept-alive connection with no request is closed after the idle timeout
    idle = _raw(path)
    idle.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")
    assert 1.0 < _closed_within(idle, 5) < 4
    # over the connection cap (6 here, per socket): the newest are closed at once
    c.close()
    held = [_raw(path) for _ in range(6)]
    time.sleep(0.2)
    extra = _raw(path)
    assert _closed_within(extra, 2) < 1
    for s in held:
        s.close()
    time.sleep(0.2)
    assert d.client().ok("Plugin.Activate")  # serving again
    assert "Traceback" not in d.log()


def test_one_daemon_per_state_and_per_socket(driver, tmp_path):
    """A second daemon on the same state directory, or on sockets another one serves, exits
    with a message and takes nothing over; the first keeps serving."""
    import subprocess

    from .conftest import bin_dir

    base = ["nsenter", f"--net={driver.host.path}", str(bin_dir() / "splice"), "driver"]
    p = subprocess.run(base + ["--plugins-dir", str(tmp_path / "other"), "--state-dir", str(driver.state_dir),
                               "--ipam-dir", str(driver.ipam_dir)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "another splice driver runs" in p.stderr, p.stderr
    p = subprocess.run(base + ["--plugins-dir", str(driver.plugins_dir), "--state-dir", str(tmp_path / "st2"),
                               "--ipam-dir", str(tmp_path / "ip2")], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "already listens" in p.stderr, p.stderr
    assert driver.client().ok("Plugin.Activate")


def test_sigterm_lets_a_call_in_flight_finish(driver):
    """SIGTERM during calls: every call that got in is answered, then the sockets go."""
    import signal

    errors: list = []
    done: list = []
    stop = threading.Event()

    def worker(n: int) -> None:
        w = driver.client("splice")
        for i in range(256):
            if stop.is_set():
                return
            try:
                p = w.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Pool": f"10.{60 + n}.{i}.0/24"})
            except (OSError, http.client.HTTPException) as e:  # refused/closed: the daemon is going
                errors.append(e)
                return
            done.append(p["PoolID"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    driver.proc.send_signal(signal.SIGTERM)
    assert driver.proc.wait(timeout=30) == 0
    stop.set()
    for t in threads:
        t.join()
    assert done and len(done) < 4 * 256 and errors  # stopped in the middle of the calls
    # every pool it answered is in the store (nothing answered and lost)
    from .conftest import pools

    assert sorted(pools(driver.ipam_dir)) == sorted(done)
    driver.proc = None
    driver.start()
    c = driver.client("splice")
    for pid in done:
        c.ok("IpamDriver.ReleasePool", {"PoolID": pid})
