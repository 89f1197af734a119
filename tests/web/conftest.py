"""Fixtures of the web backends' tests: the real store in process (tests/web/inprocess_store.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.inprocess_store import InProcessStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[InProcessStore]:
    running = InProcessStore(tmp_path)
    running.start()
    yield running
    running.stop()
