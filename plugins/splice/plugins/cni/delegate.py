"""Run a delegated plugin (e.g. an IPAM plugin) from CNI_PATH (CNI SPEC.md, "Delegated plugins").

The delegate gets our environment with only ``CNI_COMMAND`` replaced, the complete config
bytes we received on stdin, and its stderr is copied to ours. Never a shell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from splice.plugins.cni.errors import DECODE_FAILURE, DELEGATE_FAILED, INVALID_CONFIG, CniError

# A delegate holding an IPAM lock may legitimately take a while; a hung one must not hang us.
TIMEOUT_S = 120.0
_DETAILS_MAX = 4000


class BadDelegateResult(CniError):
    """A delegate's ADD succeeded (exit 0) but printed no valid result: it holds an
    allocation, which its DEL releases."""


def find_in_path(plugin_type: str, path: list[str] | str) -> str:
    """The executable ``plugin_type`` in the first ``CNI_PATH`` directory that has it."""
    if isinstance(path, str):
        path = [p for p in path.split(":") if p]
    if not plugin_type or not isinstance(plugin_type, str):
        raise CniError(INVALID_CONFIG, "no plugin type given")
    if "/" in plugin_type or plugin_type in (".", ".."):
        raise CniError(INVALID_CONFIG, f"invalid plugin type {plugin_type!r}", "a type is a file name, not a path")
    if not path:
        raise CniError(DELEGATE_FAILED, f"cannot find plugin {plugin_type!r}: CNI_PATH is empty")
    for directory in path:
        candidate = os.path.join(directory, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(DELEGATE_FAILED, f"failed to find plugin {plugin_type!r} in CNI_PATH {':'.join(path)}")


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _DETAILS_MAX else "..." + text[-_DETAILS_MAX:]


def _error_from_output(plugin_type: str, command: str, rc: int, stdout: bytes, stderr: str) -> CniError:
    """The delegate's own CNI error (stdout first, as libcni; then stderr, whole or its last
    line, since the spec once put errors there), else a generic one."""
    err_text = stderr.strip()
    candidates = [stdout, err_text.encode()]
    if "\n" in err_text:
        candidates.append(err_text.rsplit("\n", 1)[1].encode())
    for stream in candidates:
        try:
            err = json.loads(stream)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(err, dict) and isinstance(err.get("code"), int) and not isinstance(err["code"], bool):
            msg = err.get("msg") if isinstance(err.get("msg"), str) else ""
            details = err.get("details") if isinstance(err.get("details"), str) else ""
            return CniError(err["code"], msg or f"{plugin_type} {command} failed", details)
    text = _tail(stdout.decode(errors="replace") + ("\n" if stdout and stderr else "") + stderr)
    return CniError(DELEGATE_FAILED, f"delegate {plugin_type} {command} failed (exit status {rc})", text)


def delegate(command: str, plugin_type: str, a) -> dict | None:
    """Execute ``plugin_type`` for ``command`` with ``a``'s environment and stdin.

    Returns the canonical result for ADD (converted from the result's ``cniVersion``,
    ``a.version`` if it has none) and None otherwise. A failing delegate raises CniError
    with its own code/msg/details; unparseable output raises DELEGATE_FAILED.
    """
    from splice.plugins.cni import types

    exe = find_in_path(plugin_type, a.path)
    env = {str(k): str(v) for k, v in a.env.items()}
    env["CNI_COMMAND"] = command
    try:
        proc = subprocess.run(
            [exe], input=a.stdin, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=TIMEOUT_S, close_fds=True, shell=False,
        )
    except subprocess.TimeoutExpired as exc:
        _pass_stderr(exc.stderr)
        raise CniError(DELEGATE_FAILED, f"delegate {plugin_type} {command} timed out after {TIMEOUT_S:g}s") from None
    except OSError as exc:
        raise CniError(DELEGATE_FAILED, f"cannot execute delegate {exe}: {exc.strerror or exc}") from None
    stderr = _pass_stderr(proc.stderr)
    if proc.returncode != 0:
        raise _error_from_output(plugin_type, command, proc.returncode, proc.stdout, stderr)
    if command != "ADD":
        return None
    try:
        result = json.loads(proc.stdout)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadDelegateResult(DELEGATE_FAILED, f"delegate {plugin_type} ADD printed no valid JSON result",
                       _tail(f"{exc}: {proc.stdout[:_DETAILS_MAX].decode(errors='replace')}")) from None
    if not isinstance(result, dict):
        raise BadDelegateResult(DECODE_FAILURE, f"delegate {plugin_type} ADD result is not a JSON object")
    try:
        return types.parse_result(result, a.version)
    except CniError as exc:
        raise BadDelegateResult(exc.code, f"delegate {plugin_type} result: {exc.msg}", exc.details) from None


def _pass_stderr(data: bytes | None) -> str:
    """Copy the delegate's stderr to ours; return it as text."""
    if not data:
        return ""
    text = data.decode(errors="replace")
    try:
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return text
