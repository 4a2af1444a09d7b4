"""Output of the operator commands: aligned tables, JSON, colour only on a terminal, and
the one error type (:class:`CliError`) whose message names the thing and the fix.

Exit codes scripts can rely on: 0 ok, 1 a problem found (or an operation failed),
2 usage (argparse's own code for a bad flag, and :class:`UsageError`).
"""

from __future__ import annotations

import os
import sys

OK, PROBLEM, USAGE = 0, 1, 2


class CliError(Exception):
    """An error for the operator: printed as ``splice <cmd>: <msg>`` (no traceback)."""

    code = PROBLEM

    def __init__(self, msg: str, code: int | None = None) -> None:
        super().__init__(msg)
        if code is not None:
            self.code = code


class UsageError(CliError):
    code = USAGE


def colour_enabled(stream=None) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (https://no-color.org)."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_CODES = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}


def paint(text: str, colour: str, stream=None) -> str:
    if not colour_enabled(stream):
        return text
    return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"


def table(headers: list[str], rows: list, stream=None, *, strings: bool = False) -> None:
    """Print rows under headers, columns aligned (the last column is not padded).
    ``strings``: every cell is a str already (no conversion: long listings)."""
    stream = stream or sys.stdout
    cells = rows if strings else [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(h), max(map(len, col), default=0)) for h, col in zip(headers, zip(*cells))] \
        if cells else [len(h) for h in headers]
    last = len(headers) - 1
    fmt = "  ".join(f"%-{w}s" for w in widths[:last]) + ("  %s" if last else "%s")
    out = [paint((fmt % tuple(headers)).rstrip(), "bold", stream)]
    out.extend((fmt % tuple(r)).rstrip() for r in cells)
    stream.write("\n".join(out) + "\n")


def dump_json(obj: object, stream=None) -> None:
    """Indented for a person; a long list one item per line (the C encoder: an indented
    dump of 10,000 leases takes the pure-Python one, ~5x slower)."""
    import json

    stream = stream or sys.stdout
    if isinstance(obj, list) and len(obj) > 100:
        stream.write("[\n" + ",\n".join(map(json.dumps, obj)) + "\n]\n")
    else:
        stream.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def age(seconds: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: how long ago, coarse."""
    s = int(seconds)
    if s < 0:
        s = 0
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def error(cmd: str, msg: str) -> None:
    prefix = f"splice {cmd}: " if cmd else "splice: "
    sys.stderr.write(paint(prefix + "error: ", "red", sys.stderr) + msg + "\n")


def run_guarded(cmd: str, fn, args) -> int:
    """Run a command's body: CliError -> its message and code; any other exception ->
    one line naming it (the traceback only with SPLICE_DEBUG=1); ^C -> 130."""
    try:
        rc = fn(args)
        return OK if rc is None else rc
    except CliError as e:
        error(cmd, str(e))
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `splice ipam ls | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - python flushes stdout at exit
        except OSError:
            pass
        return OK
    except Exception as e:  # noqa: BLE001 - the operator gets a sentence, not a traceback
        if os.environ.get("SPLICE_DEBUG"):
            raise
        error(cmd, f"{e.__class__.__name__}: {e} (this is a bug in splice if the message does not say what "
                   f"to do; SPLICE_DEBUG=1 shows the traceback)")
        return PROBLEM
