"""`python -m sessionquorum.cluster ...`: the `sessionquorum` command (see _cli.py)."""

from __future__ import annotations

from ._cli import console

if __name__ == "__main__":
    console()
