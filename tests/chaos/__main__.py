"""`python -m tests.chaos` (`make chaos`): the fault-injection matrix; see framework/_matrix.py."""

from __future__ import annotations

import logging
import sys

from .framework._matrix import main

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
sys.exit(main(sys.argv[1:]))
