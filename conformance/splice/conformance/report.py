"""Side-by-side Markdown table of two or more ``splice-conformance --json`` reports.

    python -m splice.conformance.report splice.json reference.json > table.md
"""

from __future__ import annotations

import json
import sys

MARK = {"pass": "pass", "fail": "**FAIL**", "skip": "skip"}


def _label(rep: dict) -> str:
    return f"{rep['plugin']} + {rep['ipam']}" if rep.get("ipam") else rep["plugin"]


def table(reports: list[dict]) -> str:
    ids: list[str] = []
    info: dict[str, dict] = {}
    for rep in reports:
        for r in rep["results"]:
            if r["id"] not in info:
                ids.append(r["id"])
                info[r["id"]] = r
    col = "source" if any("cnmSocket" in r for r in reports) else "statements"
    head = f"| check | {col} | level | what | " + " | ".join(_label(r) for r in reports) + " |"
    sep = "|---|---|---|---|" + "---|" * len(reports)
    lines = [head, sep]
    by = [{r["id"]: r for r in rep["results"]} for rep in reports]
    for i in ids:
        cells = []
        for b in by:
            r = b.get(i)
            cells.append(MARK[r["result"]] if r else "–")
        r0 = info[i]
        lines.append(f"| {i} | {r0['spec']} | {r0.get('level', '')} | {r0['title']} | " + " | ".join(cells) + " |")
    lines.append("| **total** | | | | " + " | ".join(
        f"{rep['summary']['passed']} passed, {rep['summary']['failed']} failed, {rep['summary']['skipped']} skipped"
        for rep in reports) + " |")
    return "\n".join(lines)


def reasons(rep: dict, results: tuple[str, ...] = ("fail", "skip")) -> str:
    out = [f"{_label(rep)}:", ""]
    for r in rep["results"]:
        if r["result"] in results:
            out.append(f"- {r['id']} ({r['result']}): {r['reason']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    reports = []
    for path in argv:
        with open(path) as f:
            reports.append(json.load(f))
    print(table(reports))
    print()
    for rep in reports:
        print(reasons(rep))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
