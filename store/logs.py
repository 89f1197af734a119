"""A node's log lines: text for people, or one JSON object per line for log pipelines.

Every record carries the node id and the Raft term it was logged in (`NodeContext`, a
filter on the one stderr handler), so a line from a shipped log still says which node and
which term it came from. The JSON form:

    {"ts": "2026-12-03T14:05:01.123Z", "level": "INFO", "logger": "sessionquorum.store.raft",
     "node": "n1", "term": 7, "msg": "leader of term 7: n2"}

plus "exc" (the formatted traceback) when there is one. What is logged is the caller's
message: no log line of the node holds a token or a token hash (requests are logged by
their outcome, sessions by handle at most), and this module adds nothing from a request.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

TEXT_FORMAT = "%(asctime)s {node} %(levelname)s %(name)s: %(message)s"


class NodeContext(logging.Filter):
    """Stamps `node` and `term` on every record; the term source is set once Raft runs."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id
        self.term: Callable[[], int] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node_id
        term = self.term
        record.term = term() if term is not None else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (json.dumps escapes every newline)."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "node": getattr(record, "node", None),
            "term": getattr(record, "term", None),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(
    node_id: str, level: str, log_format: str = "text", stream: TextIO | None = None
) -> NodeContext:
    """Log to `stream` (stderr) in `log_format` ("text" or "json"); call again to switch format."""
    context = NodeContext(node_id)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(context)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.format(node=node_id)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return context
