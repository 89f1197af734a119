"""store/logs.py: one JSON object per line with node id and term, or the text form."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from sessionquorum.store import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """A stream for logs.configure; the root logger's handlers restored afterwards."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield io.StringIO()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_format_is_one_object_per_line_with_node_and_term(captured: io.StringIO) -> None:
    context = logs.configure("n2", "info", "json", captured)
    term = iter([4, 5])
    context.term = lambda: next(term)
    log = logging.getLogger("sessionquorum.store.raft")
    log.info("leader of term %d: %s", 4, "n1")
    log.warning("two\nlines")
    lines = captured.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "leader of term 4: n1"
    assert (first["node"], first["term"], first["level"]) == ("n2", 4, "INFO")
    assert first["logger"] == "sessionquorum.store.raft"
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert (second["msg"], second["term"]) == ("two\nlines", 5)


def test_json_format_carries_a_traceback_in_the_same_line(captured: io.StringIO) -> None:
    logs.configure("n1", "info", "json", captured)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    (line,) = captured.getvalue().splitlines()
    record = json.loads(line)
    assert record["term"] is None  # no Raft yet: the term is unknown, not 0
    assert "ValueError: boom" in record["exc"]


def test_text_format_names_the_node_and_below_the_level_logs_nothing(captured: io.StringIO) -> None:
    logs.configure("n3", "warning", "text", captured)
    logging.getLogger("sessionquorum.store.node").info("quiet")
    logging.getLogger("sessionquorum.store.node").warning("heard")
    (line,) = captured.getvalue().splitlines()
    assert " n3 WARNING sessionquorum.store.node: heard" in line


def test_configure_again_replaces_the_handler_instead_of_adding_one(captured: io.StringIO) -> None:
    logs.configure("n1", "info", "text", captured)
    logs.configure("n1", "info", "json", captured)
    logging.getLogger("y").info("once")
    (line,) = captured.getvalue().splitlines()
    assert json.loads(line)["msg"] == "once"
