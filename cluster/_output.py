"""What the command line prints: text for people, or one JSON object per line (`--json`).

With `--json`, stdout carries only JSON objects (one per line, keys sorted), so a script can
pipe it to `jq`; progress notes for people go to stderr. Without it, everything is text on
stdout and errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def emit(args: argparse.Namespace, data: Mapping[str, Any], text: str) -> None:
    """The result of a command: `data` as a JSON line with `--json`, else `text`."""
    if wants_json(args):
        print(json.dumps(data, sort_keys=True), flush=True)
    elif text:
        print(text, flush=True)


def note(args: argparse.Namespace, text: str) -> None:
    """Progress for people: stdout in text mode, stderr with `--json` (stdout stays JSON)."""
    print(text, file=sys.stderr if wants_json(args) else sys.stdout, flush=True)


def error(prog: str, message: str, args: argparse.Namespace | None = None) -> None:
    """One line on stderr; with `--json` also an {"error": ...} object on stdout."""
    if args is not None and wants_json(args):
        print(json.dumps({"error": message}), flush=True)
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def table(rows: list[tuple[object, ...]]) -> str:
    """Left-aligned columns, two spaces apart; the first row is the header."""
    if not rows:
        return ""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
