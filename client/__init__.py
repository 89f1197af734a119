"""Client library for sessionquorum, a Raft-replicated web-session store.

    from sessionquorum.client import SessionClient, TLSConfig

    tls = TLSConfig.from_files("ca.pem", "client.pem", "client.key")
    with SessionClient(["10.0.0.1:51001", "10.0.0.2:51001"], tls=tls) as client:
        created = client.create(principal=None, attributes={"cart": b"[]"})
        session = client.validate(created.token)

Tokens are made and hashed inside this library; only their SHA-256 reaches the cluster.
Mutations are exactly-once across retries and leader changes (request ids, see _lanes):
a retry never applies twice. When that cannot be confirmed in time, or the cluster forgot a
retried request's deduplication state, they raise OutcomeUnknown, never a guess; after
create or rotate, `validate(exc.token)` tells whether the new token took effect.

For asyncio (ASGI applications), `AsyncSessionClient` has the same arguments, methods,
return values and errors, as coroutines, with the same routing, retries and request ids:

    from sessionquorum.client import AsyncSessionClient

    async with AsyncSessionClient(endpoints, tls=tls) as client:
        created = await client.create(principal=None, attributes={"cart": b"[]"})
        session = await client.validate(created.token)

It may be made outside a running loop (e.g. at start-up), but is then used from the event
loop of its first call only, and closed with `await client.close()` (or `async with`).
Concurrent calls of that loop to one node travel together in Batch RPCs, as with threads.

Lifecycle events (an admin's audit feed: handles and principals, never tokens or values),
in commit order, resumed across nodes from the last cursor without a gap or a duplicate:

    for event in client.events(cursor=last_seen):   # `async for` on AsyncSessionClient
        print(event.cursor, event.kind, event.handle, event.principal, event.reason)

A cursor older than the cluster's bounded retention raises EventsCompacted.
"""

from ._async_client import AsyncSessionClient
from ._channels import TLSConfig
from ._client import SessionClient
from ._errors import (
    AlreadyExists,
    EventsCompacted,
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    PermissionDenied,
    QuotaExceeded,
    SessionQuorumError,
    StaleRequest,
    Unavailable,
    VersionConflict,
)
from ._events import Event
from ._session import Created, Rotated, Session
from ._tokens import hash_token, new_token

__all__ = [
    "AlreadyExists",
    "AsyncSessionClient",
    "Created",
    "Event",
    "EventsCompacted",
    "InvalidArgument",
    "NotFound",
    "OutcomeUnknown",
    "PermissionDenied",
    "QuotaExceeded",
    "Rotated",
    "Session",
    "SessionClient",
    "SessionQuorumError",
    "StaleRequest",
    "TLSConfig",
    "Unavailable",
    "VersionConflict",
    "hash_token",
    "new_token",
]
