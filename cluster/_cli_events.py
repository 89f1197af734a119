"""`events`: print the cluster's lifecycle events as they are applied (an operator's tail -f).

Reads through the public client (`SessionClient.events`), so a node that stops or dies
mid-stream is left for another without a gap or a duplicate. One line per event (`--json`:
one JSON object per line, with the cursor to resume from). Needs the admin role.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict

from ._cli_remote import _client
from ._local import NodeCommand
from ._output import emit

Handler = Callable[[argparse.Namespace, NodeCommand], int]
AddCommand = Callable[..., argparse.ArgumentParser]


def events(args: argparse.Namespace, node_command: NodeCommand) -> int:
    """Print events after --after (default: from now), until --count of them or Ctrl-C."""
    shown = 0
    with _client(args) as client:
        for event in client.events(cursor=args.after):
            reason = f" ({event.reason})" if event.reason else ""
            text = (
                f"{event.cursor} {event.at_ms} {event.kind}{reason} {event.handle} {event.principal or '-'}"
            )
            emit(args, asdict(event), text)
            shown += 1
            if args.count is not None and shown >= args.count:
                break
    return 0


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], add: AddCommand, timeout_s: float
) -> None:
    tail = add(commands, "events", "print lifecycle events as the cluster applies them (admin)", events)
    tail.add_argument("--after", type=int, help="the cursor of the last event seen (default: from now)")
    tail.add_argument("--count", type=int, help="stop after this many events (default: never)")
    tail.add_argument("--timeout", type=float, default=timeout_s, help="seconds without any node serving")
