"""The wheel installs one import root, `splice`, and nothing generic."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PORTIONS = ["libnet", "ipam", "plugins", "conformance"]


def test_portions_have_no_init_in_namespace_dir():
    for root in PORTIONS:
        assert (REPO / root / "splice").is_dir(), root
        assert not (REPO / root / "splice" / "__init__.py").exists(), f"{root}/splice must stay a namespace portion"
        assert (REPO / root / "splice" / root / "__init__.py").exists()


@pytest.mark.timeout(300)
def test_wheel_has_only_splice_at_top_level(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True,
    )
    assert p.returncode == 0, p.stderr
    wheels = list(tmp_path.glob("splice-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    top = {n.split("/")[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"splice"}, top
    for portion in PORTIONS:
        assert f"splice/{portion}/__init__.py" in names
    assert "splice/__init__.py" not in names
    entry_points = zipfile.ZipFile(wheels[0]).read(f"{dist_info.pop()}/entry_points.txt").decode()
    assert "splice-bridge = splice.plugins.cni.main:bridge" in entry_points
    assert "splice-ipam = splice.plugins.cni.main:ipam" in entry_points
