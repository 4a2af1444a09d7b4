"""What a new user meets first: README renders, links stay inside the repository, the
systemd unit runs what `splice install-cni` writes, setup.sh waits for a busy dpkg lock."""

from __future__ import annotations

import re

from splice.plugins.cli import main as cli

from ..conftest import REPO

README = (REPO / "README.md").read_text()


def test_readme_first_table_is_one_table():
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| executable |"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    names = [r.split("|")[1].strip() for r in rows[2:]]
    assert names == ["`splice-bridge`", "`splice-ipam`", "`splice-portmap`", "`splice-macvlan`", "`splice-ipvlan`",
                     "`splice-vxlan`", "`splice driver`", "`splice agent`", "`splice-conformance`"]


def test_docs_point_nowhere_outside_the_repository():
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "contrib").rglob("*"))]:
        if not doc.is_file():
            continue
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if "://" in target:
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(REPO) and path.exists(), f"{doc.name}: link to {target}"
        for mention in re.findall(r"(?<![\w.])\.\./[\w./-]+", text):
            assert (doc.parent / mention).resolve().is_relative_to(REPO), f"{doc.name} names {mention}"
        assert "file:///opt/splice" not in text, doc


def test_systemd_unit_runs_what_install_cni_writes():
    unit = (REPO / "contrib" / "systemd" / "splice-agent.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(\S+) agent\b", unit, re.M)
    assert exec_start == f"/opt/cni/bin/{cli.BUNDLE_DIR}/splice"
    assert "/opt/splice/venv" not in unit
    # the README's steps make exactly that path
    assert "splice install-cni --dir /opt/cni/bin" in README and f"{exec_start} agent" in README


def test_setup_sh_waits_for_a_busy_dpkg_lock():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    m = re.search(r"^\s*APT_OPTS=\((.*)\)", setup, re.M)
    assert m and re.search(r"-o DPkg::Lock::Timeout=\d+", m.group(1)), "APT_OPTS must set DPkg::Lock::Timeout"
    calls = [line for line in setup.splitlines() if re.search(r"\bapt-get\b.*\b(update|install)\b", line)
             and not line.lstrip().startswith(("#", "echo"))]
    assert calls and all('"${APT_OPTS[@]}"' in line for line in calls), calls


def test_design_md_does_not_call_the_agent_future():
    design = (REPO / "docs" / "design.md").read_text()
    assert not re.search(r"future agent|agent will", design, re.I)
