"""`sessionquorum principals disable|enable NAME`: an admin's switch for one principal.

Disabling is ONE replicated command: from its log index on, no node creates a session for
the principal, and every session it had ends in that same command (ASVS 5 7.4.2). Enabling
lets it log in again; sessions ended by the disable stay ended. Both are idempotent, so a
call that timed out is safe to repeat. Needs an admin client certificate.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ._cli_remote import _client
from ._local import NodeCommand
from ._output import emit

CLIENT_TIMEOUT_S = 10.0


def principals(args: argparse.Namespace, node_command: NodeCommand) -> int:
    with _client(args) as client:
        if args.action == "disable":
            ended = client.disable_principal(args.principal)
            text = f"disabled principal {args.principal!r}; ended {len(ended)} session(s)"
            emit(args, {"principal": args.principal, "disabled": True, "ended": ended}, text)
        else:
            client.enable_principal(args.principal)
            emit(
                args,
                {"principal": args.principal, "disabled": False},
                f"enabled principal {args.principal!r}",
            )
    return 0


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add: Callable[..., argparse.ArgumentParser],
) -> None:
    """Add `principals disable|enable NAME` to the CLI (`add` is _cli._add)."""
    group = commands.add_parser("principals", help="disable or enable a principal (admin)")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    helps: dict[str, Any] = {
        "disable": "no new session for PRINCIPAL until enabled; its sessions end now",
        "enable": "let a disabled PRINCIPAL get sessions again",
    }
    for action, help_ in helps.items():
        sub = add(actions, action, help_, principals)
        sub.add_argument("principal", metavar="PRINCIPAL")
        sub.add_argument("--timeout", type=float, default=CLIENT_TIMEOUT_S, help="seconds for the call")
