"""``splice install`` / ``splice uninstall``: put splice in place on a host, and take away
exactly what was put there.

``install`` runs ``install-cni`` (the self-contained thin-client executables and the
bundle, :func:`splice.plugins.cli.main.install_cni`), and optionally writes the systemd
units of the agent (``--systemd``: ``splice-agent.socket`` + ``.service``) and of the Docker
driver (``--systemd --docker``: ``splice-driver.service``) and Docker's plugin spec files
(``--docker``: ``<spec dir>/splice-bridge.spec`` ... naming the driver's sockets). Units run
``<lib>/splice`` (the bundle's command line), never this checkout. Nothing is started:
the commands to enable the units are printed.

Everything written is recorded in a manifest (``--manifest``, default
``/var/lib/splice/install.json``): path, kind (file, or the bundle directory) and, for
files, the SHA-256 written. ``uninstall`` removes exactly those: a file whose content
changed since (an operator's edit) is kept and named; directories only when install made
them and they are empty (the bundle directory: wholly, it is splice's). A second
``install`` updates the manifest (the union of both).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from splice.plugins.cli.main import DEFAULT_SOCKET
from splice.plugins.cli.output import CliError

DEFAULT_MANIFEST = "/var/lib/splice/install.json"
DEFAULT_CNI_BIN = "/opt/cni/bin"
DEFAULT_SYSTEMD_DIR = "/etc/systemd/system"
DEFAULT_SPEC_DIR = "/etc/docker/plugins"
DOCKER_PLUGINS = ("splice-bridge", "splice-macvlan", "splice-ipvlan", "splice")

AGENT_SOCKET_UNIT = """\
# written by `splice install`; `splice uninstall` removes it
[Unit]
Description=splice CNI agent socket

[Socket]
ListenStream={socket}
SocketMode=0600
DirectoryMode=0700

[Install]
WantedBy=sockets.target
"""

AGENT_SERVICE_UNIT = """\
# written by `splice install`; `splice uninstall` removes it (see contrib/systemd/splice-agent.service)
[Unit]
Description=splice CNI agent
Requires=splice-agent.socket
After=splice-agent.socket

[Service]
Type=simple
ExecStart={cli} agent --socket {socket}
KillSignal=SIGTERM
TimeoutStopSec=75
Restart=on-failure
RestartSec=1
User=root

[Install]
WantedBy=multi-user.target
Also=splice-agent.socket
"""

DRIVER_SERVICE_UNIT = """\
# written by `splice install --docker`; `splice uninstall` removes it (see contrib/systemd/splice-driver.service)
[Unit]
Description=splice Docker network and IPAM driver
Before=docker.service
After=network-pre.target

[Service]
Type=simple
ExecStart={cli} driver --plugins-dir {plugins_dir} --state-dir /var/lib/splice/cnm --ipam-dir /var/lib/splice/ipam
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=1
User=root

[Install]
WantedBy=multi-user.target
"""


def add_install_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cni-bin", default=DEFAULT_CNI_BIN, metavar="DIR",
                   help=f"where the CNI executables go (default {DEFAULT_CNI_BIN}); the bundle in DIR/.splice")
    p.add_argument("--lib", default=None, metavar="DIR", help="the bundle elsewhere (as install-cni --lib)")
    p.add_argument("--systemd", action="store_true", help="write the agent's systemd units (and the driver's "
                                                          "with --docker)")
    p.add_argument("--systemd-dir", default=DEFAULT_SYSTEMD_DIR, metavar="DIR")
    p.add_argument("--docker", action="store_true", help="Docker: plugin spec files (and the driver's unit with "
                                                         "--systemd)")
    p.add_argument("--docker-spec-dir", default=DEFAULT_SPEC_DIR, metavar="DIR")
    p.add_argument("--docker-plugins-dir", default="/run/docker/plugins", metavar="DIR",
                   help="where the driver's sockets will be (default /run/docker/plugins)")
    p.add_argument("--socket", default=DEFAULT_SOCKET, help="the agent's socket")
    p.add_argument("--manifest", default=DEFAULT_MANIFEST, metavar="PATH",
                   help=f"the record of what was written (default {DEFAULT_MANIFEST})")


def add_uninstall_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", default=DEFAULT_MANIFEST, metavar="PATH")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed")


def _digest(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _load(manifest: str) -> dict:
    try:
        with open(manifest, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {"version": 1, "entries": []}
    except (OSError, ValueError) as e:
        raise CliError(f"the install manifest {manifest} is unreadable ({e}): fix or remove it") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise CliError(f"the install manifest {manifest} is not splice's: fix or remove it")
    return data


def _save(manifest: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(manifest)), mode=0o755, exist_ok=True)
    tmp = f"{manifest}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, manifest)


def _missing_dirs(path: str) -> list[str]:
    """The directories above ``path`` that do not exist yet (outermost first)."""
    out = []
    d = os.path.dirname(os.path.abspath(path))
    while d and not os.path.exists(d):
        out.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return list(reversed(out))


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install(args) -> int:
    from splice.plugins.cli.main import BUNDLE_DIR, install_cni

    manifest = os.path.abspath(args.manifest)
    data = _load(manifest)
    entries: dict[str, dict] = {e["path"]: e for e in data["entries"] if isinstance(e, dict) and "path" in e}
    made_dirs: list[str] = []
    cni_bin = os.path.abspath(args.cni_bin)
    lib = os.path.abspath(args.lib or os.path.join(cni_bin, BUNDLE_DIR))
    targets = [cni_bin, lib]
    if args.systemd:
        targets.append(os.path.join(args.systemd_dir, "x"))
    if args.docker:
        targets.append(os.path.join(args.docker_spec_dir, "x"))
    for t in targets:
        for d in _missing_dirs(os.path.join(t, "x") if t in (cni_bin, lib) else t):
            if d not in made_dirs:
                made_dirs.append(d)
    try:
        written = install_cni(cni_bin, lib=lib, socket=args.socket if args.socket != DEFAULT_SOCKET else None)
    except OSError as e:
        raise CliError(f"cannot write the CNI executables into {cni_bin}: {e.strerror or e} (root? --cni-bin)") from None
    cli = os.path.join(lib, "splice")
    files = list(written)
    if args.systemd:
        sd = os.path.abspath(args.systemd_dir)
        units = {"splice-agent.socket": AGENT_SOCKET_UNIT.format(socket=args.socket),
                 "splice-agent.service": AGENT_SERVICE_UNIT.format(cli=cli, socket=args.socket)}
        if args.docker:
            units["splice-driver.service"] = DRIVER_SERVICE_UNIT.format(cli=cli, plugins_dir=args.docker_plugins_dir)
        for name, text in units.items():
            path = os.path.join(sd, name)
            _write(path, text)
            files.append(path)
    if args.docker:
        sd = os.path.abspath(args.docker_spec_dir)
        for plugin in DOCKER_PLUGINS:
            path = os.path.join(sd, f"{plugin}.spec")
            _write(path, f"unix://{os.path.join(args.docker_plugins_dir, plugin + '.sock')}\n")
            files.append(path)
    now = int(time.time())
    for path in files:
        entries[path] = {"path": path, "kind": "file", "sha256": _digest(path), "installed": now}
    # the bundle this install used: install-cni touches it last (the newest of LIB/<16 hex>)
    bundles = [e for e in os.scandir(lib) if e.is_dir(follow_symlinks=False) and len(e.name) == 16]
    if bundles:
        b = max(bundles, key=lambda e: e.stat().st_mtime)
        entries[b.path] = {"path": b.path, "kind": "bundle", "installed": now}
    for d in made_dirs:
        entries.setdefault(d, {"path": d, "kind": "dir", "installed": now})
    data["entries"] = sorted(entries.values(), key=lambda e: e["path"])
    _save(manifest, data)
    for path in files:
        print(path)
    print(f"recorded in {manifest} (splice uninstall --manifest {manifest} removes exactly these)")
    if args.systemd:
        enable = "splice-agent.socket" + (" splice-driver.service" if args.docker else "")
        print(f"next: systemctl daemon-reload && systemctl enable --now {enable}")
    return 0


def uninstall(args) -> int:
    import shutil

    manifest = os.path.abspath(args.manifest)
    if not os.path.exists(manifest):
        raise CliError(f"no install manifest at {manifest}: nothing was installed with it (--manifest PATH)")
    data = _load(manifest)
    kept: list[dict] = []
    entries = data["entries"]
    order = {"file": 0, "bundle": 1, "dir": 2}
    # files, then bundles, then the directories install made, deepest first
    for e in sorted(entries, key=lambda e: (order.get(e.get("kind"), 3), -len(e.get("path", "")))):
        path, kind = e.get("path"), e.get("kind")
        if not isinstance(path, str) or not os.path.isabs(path):
            continue
        if kind == "file":
            if not os.path.lexists(path):
                continue
            if os.path.isfile(path) and not os.path.islink(path) and _digest(path) != e.get("sha256"):
                print(f"kept {path}: changed since splice install wrote it (remove it by hand if it is no longer "
                      f"needed)")
                kept.append(e)
                continue
            if not args.dry_run:
                os.unlink(path)
            print(f"{'would remove' if args.dry_run else 'removed'} {path}")
        elif kind == "bundle":
            if os.path.isdir(path):
                if not args.dry_run:
                    shutil.rmtree(path)
                print(f"{'would remove' if args.dry_run else 'removed'} {path}/")
        elif kind == "dir":
            if not os.path.isdir(path):
                continue
            if args.dry_run:
                print(f"would remove {path}/ (if empty by then)")
                continue
            try:
                os.rmdir(path)
            except OSError:
                print(f"kept {path}/: not empty (it holds files splice did not write)")
                kept.append(e)
                continue
            print(f"removed {path}/")
    if args.dry_run:
        return 0
    if kept:
        data["entries"] = kept
        _save(manifest, data)
        print(f"{len(kept)} entr{'y' if len(kept) == 1 else 'ies'} kept in {manifest}")
        return 1
    os.unlink(manifest)
    print(f"removed {manifest}")
    return 0
