"""CNI spec versions: the list, ordering and the per-version feature gates.

Stdlib only and import-light: the VERSION command goes through here.
"""

from __future__ import annotations

# Every released spec version, oldest first (containernetworking/cni pkg/version.All).
ALL_VERSIONS: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"
# A config without "cniVersion" is 0.1.0 (libcni's ConfigDecoder.Decode).
DEFAULT_CONFIG_VERSION = "0.1.0"


def parse(version: str) -> tuple[int, int, int]:
    """``"1.0.0"`` -> ``(1, 0, 0)``. ``ValueError`` for anything that is not ``X.Y.Z``."""
    if not isinstance(version, str):
        raise ValueError(f"version must be a string, not {type(version).__name__}")
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid version {version!r}: expected X.Y.Z")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def at_least(version: str, minimum: str) -> bool:
    """True if ``version`` >= ``minimum`` (both ``X.Y.Z``)."""
    return parse(version) >= parse(minimum)


def is_known(version: object) -> bool:
    return isinstance(version, str) and version in ALL_VERSIONS


def has_check(version: str) -> bool:
    """CHECK exists from 0.4.0 on."""
    return at_least(version, "0.4.0")


def has_status(version: str) -> bool:
    """STATUS exists from 1.1.0 on."""
    return at_least(version, "1.1.0")


def has_gc(version: str) -> bool:
    """GC exists from 1.1.0 on."""
    return at_least(version, "1.1.0")


def has_multiple_ips(version: str) -> bool:
    """Results carry ``ips``/``interfaces`` (not ``ip4``/``ip6``) from 0.3.0 on."""
    return at_least(version, "0.3.0")


def has_ip_version_field(version: str) -> bool:
    """``ips[].version`` exists in 0.3.0, 0.3.1 and 0.4.0 only."""
    return has_multiple_ips(version) and not at_least(version, "1.0.0")


def version_answer(config_version: object, supported: tuple[str, ...] | list[str]) -> dict:
    """The VERSION reply: the asked ``cniVersion`` if we support it, else CURRENT."""
    answer = config_version if isinstance(config_version, str) and config_version in supported else CURRENT
    return {"cniVersion": answer, "supportedVersions": list(supported)}


def run_version(supported: tuple[str, ...] | list[str], stdin, stdout) -> int:
    """The whole VERSION command: read ``{"cniVersion": ...}`` from ``stdin`` if there is one
    (never blocking on a terminal, ignoring anything unparseable), print the answer, exit 0.

    Shared by ``skel.run_plugin`` and the console scripts' fast path (``main.py``), which
    answers VERSION without importing skel at all.
    """
    import json

    asked = None
    try:
        if not (hasattr(stdin, "isatty") and stdin.isatty()):
            data = stdin.read()
            if data and data.strip():
                conf = json.loads(data)
                if isinstance(conf, dict):
                    asked = conf.get("cniVersion")
    except Exception:  # VERSION answers whatever stdin holds
        asked = None
    stdout.write(json.dumps(version_answer(asked, tuple(supported)), indent=4) + "\n")
    stdout.flush()
    return 0
