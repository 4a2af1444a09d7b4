"""``splice install`` / ``splice uninstall`` into a temp directory: the CNI executables and
bundle, the systemd units, Docker's plugin spec files, all recorded in a manifest;
uninstall removes exactly those (an edited file and foreign files stay, named)."""

from __future__ import annotations

import json
import subprocess

from ..conftest import bin_dir


def splice(*argv: str) -> subprocess.CompletedProcess:
    p = subprocess.run([str(bin_dir() / "splice"), *argv], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def test_install_then_uninstall_leaves_the_tree_as_it_was(tmp_path):
    root = tmp_path / "root"
    (root / "etc" / "docker" / "plugins").mkdir(parents=True)
    (root / "etc" / "docker" / "plugins" / "other.spec").write_text("unix:///run/other.sock\n")  # not ours
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    manifest = root / "var" / "lib" / "splice" / "install.json"
    flags = ["--cni-bin", str(root / "opt" / "cni" / "bin"), "--systemd-dir", str(root / "etc" / "systemd" / "system"),
             "--docker-spec-dir", str(root / "etc" / "docker" / "plugins"), "--manifest", str(manifest)]
    p = splice("install", "--systemd", "--docker", *flags)
    assert p.returncode == 0, p.stderr
    cli = root / "opt" / "cni" / "bin" / ".splice" / "splice"
    unit = (root / "etc" / "systemd" / "system" / "splice-agent.service").read_text()
    assert f"ExecStart={cli} agent --socket /run/splice/agent.sock" in unit
    assert f"ExecStart={cli} driver --plugins-dir /run/docker/plugins" in \
        (root / "etc" / "systemd" / "system" / "splice-driver.service").read_text()
    assert (root / "etc" / "systemd" / "system" / "splice-agent.socket").exists()
    assert (root / "etc" / "docker" / "plugins" / "splice-bridge.spec").read_text() == \
        "unix:///run/docker/plugins/splice-bridge.sock\n"
    assert (root / "opt" / "cni" / "bin" / "splice-bridge").exists()
    assert "systemctl daemon-reload && systemctl enable --now splice-agent.socket splice-driver.service" in p.stdout
    entries = json.loads(manifest.read_text())["entries"]
    kinds = {e["kind"] for e in entries}
    assert kinds == {"file", "bundle", "dir"}
    assert not any(e["path"].endswith("other.spec") for e in entries)
    assert str(root / "etc" / "docker" / "plugins") not in {e["path"] for e in entries}  # it existed before
    # the bundle runs without the checkout's venv: its --version answers
    assert subprocess.run([str(cli), "--version"], capture_output=True, text=True).stdout.startswith("splice")

    # a second install: the same files in one manifest (a new bundle too if the sources
    # changed in between: an upgrade)
    assert splice("install", "--systemd", "--docker", *flags).returncode == 0
    again = json.loads(manifest.read_text())["entries"]
    assert {e["path"] for e in again if e["kind"] != "bundle"} == {e["path"] for e in entries if e["kind"] != "bundle"}

    # an operator's edit is kept and named; everything else of splice's goes
    (root / "etc" / "systemd" / "system" / "splice-agent.service").write_text(unit + "# local edit\n")
    p = splice("uninstall", "--manifest", str(manifest), "--dry-run")
    assert p.returncode == 0 and "would remove" in p.stdout
    assert (root / "opt" / "cni" / "bin" / "splice-bridge").exists()
    p = splice("uninstall", "--manifest", str(manifest))
    assert p.returncode == 1 and "kept" in p.stdout and "splice-agent.service: changed since" in p.stdout
    (root / "etc" / "systemd" / "system" / "splice-agent.service").unlink()
    p = splice("uninstall", "--manifest", str(manifest))
    assert p.returncode == 0, p.stdout
    assert not manifest.exists()
    after = sorted(x.relative_to(root) for x in root.rglob("*"))
    # what is left: what was there before, and the manifest's own directory
    assert set(after) - set(before) == {p.relative_to(root) for p in (root / "var", root / "var" / "lib",
                                                                      root / "var" / "lib" / "splice")}


def test_uninstall_without_manifest_is_an_error(tmp_path):
    p = splice("uninstall", "--manifest", str(tmp_path / "none.json"))
    assert p.returncode == 1 and "no install manifest" in p.stderr
    (tmp_path / "bad.json").write_text("[1, 2]")
    p = splice("uninstall", "--manifest", str(tmp_path / "bad.json"))
    assert p.returncode == 1 and "not splice's" in p.stderr
