"""A pass-through CNI wrapper that records what a real client sends and what splice answers.

``install(bin_dir, plugins, log)`` writes, for each plugin name, an executable
``bin_dir/<name>`` (this file, run by the test interpreter) plus a sidecar
``bin_dir/cniwrap.json`` naming the real executables and the log file. The wrapper runs the
real plugin with the same environment and stdin and passes its stdout and exit code back
unchanged; it appends one JSON line per call to the log: argv0, the CNI_* environment, the
parsed stdin, rc, stdout and stderr. The sidecar is found next to argv[0] because podman
sends DEL from ``podman container cleanup`` (spawned by conmon) with its own environment.

``read_calls(log)`` returns the records; ``describe(calls)`` formats them for an assertion
message, so a failing client test shows exactly what the client sent and what splice said.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SIDECAR = "cniwrap.json"


def main() -> int:
    raw = sys.stdin.buffer.read()
    here = os.path.dirname(os.path.abspath(sys.argv[0]))
    name = os.path.basename(sys.argv[0])
    with open(os.path.join(here, SIDECAR)) as f:
        side = json.load(f)
    p = subprocess.run([side["real"][name]], input=raw, capture_output=True, env={**os.environ, **side.get("env", {})})
    rec = {"plugin": name, "env": {k: v for k, v in os.environ.items() if k.startswith("CNI_")},
           "rc": p.returncode, "stdout": p.stdout.decode(errors="replace"),
           "stderr": p.stderr.decode(errors="replace")}
    try:
        rec["stdin"] = json.loads(raw) if raw.strip() else None
    except ValueError:
        rec["stdin"] = raw.decode(errors="replace")
    try:  # one O_APPEND write per record: concurrent calls never interleave
        fd = os.open(side["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(rec, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass
    sys.stdout.buffer.write(p.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(p.stderr)
    return p.returncode


def install(bin_dir: Path, plugins: dict[str, str], log: Path, env: dict[str, str] | None = None) -> None:
    """Install wrappers for ``plugins`` (name -> real executable) into ``bin_dir``; ``env``:
    variables added to the environment the client gives the real executable."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / SIDECAR).write_text(json.dumps({"real": plugins, "log": str(log), "env": env or {}}))
    body = Path(__file__).read_text()
    for name in plugins:
        exe = bin_dir / name
        exe.write_text(f"#!{sys.executable}\n{body}")
        exe.chmod(0o755)


def read_calls(log: Path) -> list[dict]:
    try:
        lines = Path(log).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:  # a record being written right now
            continue
    return out


def describe(calls: list[dict], *, skip_version: bool = True) -> str:
    out = []
    for c in calls:
        env = c.get("env", {})
        if skip_version and env.get("CNI_COMMAND") == "VERSION":
            continue
        out.append(
            f"--- {c.get('plugin')} {env.get('CNI_COMMAND')} rc={c.get('rc')}\n"
            f"env={json.dumps(env, sort_keys=True)}\n"
            f"stdin={json.dumps(c.get('stdin'), sort_keys=True)}\n"
            f"stdout={c.get('stdout', '').strip()}\n"
            + (f"stderr={c['stderr'].strip()}\n" if c.get("stderr") else "")
        )
    return "\n".join(out) or "(no CNI calls recorded)"


if __name__ == "__main__":
    sys.exit(main())
