"""A tiny busybox image built locally (no registry): a rootfs tar and a one-layer OCI archive.

``rootfs_tar`` is what ``podman import`` takes; ``oci_archive`` wraps the same tar as the single
layer of an OCI image layout that ``ctr images import`` takes (the name comes from the
``io.containerd.image.name`` annotation). Standard library only; needs a static busybox
(Debian ``busybox-static``: /bin/busybox).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
_DIRS = ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "var")
_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/hosts": "",
    "etc/resolv.conf": "",
}
_MTIME = 1_700_000_000  # fixed, so the layer (and its digest) is reproducible


def _is_static_elf(path: str) -> bool:
    """True for an ELF executable without a PT_INTERP header (runs in an empty rootfs)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:4] != b"\x7fELF" or head[4] != 2:  # ELFCLASS64 only
        return False
    order = "little" if head[5] == 1 else "big"
    phoff = int.from_bytes(head[0x20:0x28], order)
    phentsize = int.from_bytes(head[0x36:0x38], order)
    phnum = int.from_bytes(head[0x38:0x3A], order)
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(head[off:off + 4], order) == 3:  # PT_INTERP
            return False
    return True


def find_busybox() -> str | None:
    """A statically linked busybox, or None."""
    for path in BUSYBOX_CANDIDATES:
        if os.access(path, os.X_OK) and _is_static_elf(path):
            return path
    return None


def oci_arch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), mode, _MTIME
    tf.addfile(ti, io.BytesIO(data))


def rootfs_tar(out: Path, busybox: str | None = None) -> Path:
    """Write a busybox rootfs (every applet a symlink in /bin) to ``out``."""
    busybox = busybox or find_busybox()
    if busybox is None:
        raise FileNotFoundError("no static busybox (install busybox-static)")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for d in _DIRS:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755, _MTIME
            tf.addfile(ti)
        with open(busybox, "rb") as f:
            _add_bytes(tf, "bin/busybox", f.read(), 0o755)
        for applet in sorted(set(applets) - {"busybox"}):
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, "busybox", 0o777, _MTIME
            tf.addfile(ti)
        for name, text in _FILES.items():
            _add_bytes(tf, name, text.encode())
    return out


def _blob(tf: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    _add_bytes(tf, f"blobs/sha256/{digest}", data)
    return f"sha256:{digest}", len(data)


def oci_archive(rootfs: Path, out: Path, ref: str, entrypoint: list[str] | None = None) -> Path:
    """Write a one-layer OCI image layout tar named ``ref`` (e.g. localhost/x:latest)."""
    layer = Path(rootfs).read_bytes()
    config = {
        "architecture": oci_arch(),
        "os": "linux",
        "config": {"Entrypoint": entrypoint or ["/bin/sleep", "3600"], "Env": ["PATH=/bin:/sbin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created_by": "splice tests/clients/image.py"}],
    }
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else "latest"
    with tarfile.open(out, "w") as tf:
        ldig, lsize = _blob(tf, layer)
        cdig, csize = _blob(tf, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig, "size": csize},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ldig, "size": lsize}],
        }
        mdig, msize = _blob(tf, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdig,
                "size": msize,
                "platform": {"architecture": oci_arch(), "os": "linux"},
                "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag},
            }],
        }
        _add_bytes(tf, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_bytes(tf, "index.json", json.dumps(index).encode())
    return out
