"""`emperor check FILE...`: read each vassal file exactly as its master would (placeholders,
includes, config logic, UWSGI_* variables from this environment), without binding a
socket or importing the application, and say what each line does.

One line per finding (`file:line: option: verdict (detail)`), then a summary per file;
exit 0 when every file would start, 1 otherwise. `--json` gives the same as a document.
"""
from __future__ import annotations

import json
import os
import sys

from emperor.config.load import Reading, read_vassal
from emperor.config.model import PROBLEMS, VERDICTS, shown
from emperor.files import Scarce, TrustRule

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def trust_rule() -> TrustRule:
    """What a non-tyrant emperor run by this user trusts (emperor/emperor/trust.py rule)."""
    return TrustRule(frozenset({0}) if os.geteuid() == 0 else None)


def check_file(path: str, *, strict_compat: bool = False, vassals_dir: str | None = None) -> Reading:
    return read_vassal(path, vassals_dir=vassals_dir, trust=trust_rule(), strict_compat=strict_compat)


def summary(reading: Reading) -> str:
    counts = {v: 0 for v in VERDICTS}
    for f in reading.findings:
        counts[f.verdict] += 1
    said = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    if reading.config is None:
        return f"would not start ({said})"
    if reading.warnings:
        return f"would start, with {len(reading.warnings)} warning{'s' if len(reading.warnings) > 1 else ''} ({said})"
    return f"would start ({said})"


def as_dict(path: str, reading: Reading) -> dict:
    return {
        "file": path,
        "starts": reading.config is not None,
        "clean": reading.config is not None and not reading.warnings,
        "summary": summary(reading),
        "errors": [shown(f.message) for f in reading.errors],
        "warnings": [shown(f.message) for f in reading.warnings],
        "findings": [f.as_dict() for f in reading.findings],
    }


def run_check(args: argparse.Namespace) -> int:
    results = []
    for path in args.files:
        try:
            results.append((path, check_file(path, strict_compat=args.strict_compat,
                                             vassals_dir=getattr(args, "vassals_dir", None))))
        except Scarce as e:
            print(f"emperor check: {shown(path)}: cannot read: {e}", file=sys.stderr)
            return 1
    failed = sum(1 for _, r in results if r.config is None)
    if args.json:
        doc = {"files": [as_dict(p, r) for p, r in results], "starts": len(results) - failed, "fails": failed}
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 1 if failed else 0
    out = []
    for path, r in results:
        for f in r.findings:
            if not getattr(args, "problems", False) or f.verdict in PROBLEMS:
                out.append(f.text())
        out.append(f"{shown(path)}: {summary(r)}")
    if len(results) > 1:
        clean = sum(1 for _, r in results if r.config is not None and not r.warnings)
        out.append(f"{len(results)} files: {len(results) - failed} would start ({clean} with no warning), "
                   f"{failed} would not")
    sys.stdout.write("\n".join(out) + "\n")
    return 1 if failed else 0
