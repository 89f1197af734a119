"""The service's side of encryption at rest: what a command carries, what a reply shows.

Before proposing, `Sealing.prepare` rewrites a plaintext operation into what the log may
hold (from command level 5, with a key file configured):
- token hashes keyed (`atrest.keyed_hash`); a session stored under its raw hash (created
  before keying began) is still named by its raw hash, found by looking it up;
- attribute values sealed, bound to the session handle: Create's fresh handle, or for an
  Update the handle this node's state holds for the token hash (`bound_handle`, which apply
  checks, so a stale read cannot store values under the wrong binding);
- a keyed digest of the plaintext values (`sealed`) for the exactly-once fingerprint;
- an increment of an attribute holding a sealed value: the value opened here and carried
  as the counter's base (`rebase`, guarded by `read_version` and `bound_handle`): the one
  command converts it to a plaintext counter and increments it (store/DESIGN.md).
`open_view` opens sealed values for a reply. Without a key file (or below level 5) both
are the identity, and reads still find keyed sessions first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from . import atrest
from . import commands as c
from . import errors as e
from . import validation as v
from .keyfile import KeyRing
from .replies import Reply, SessionView
from .state import SessionMachine


@dataclass(frozen=True, slots=True)
class _Plan:
    """What prepare() learned from local state under the lock (sealing runs outside it)."""

    token_hash: bytes | None
    handle: str
    version: int
    # Incremented attributes that hold a sealed value: (name, sealed value) to open and rebase.
    sealed_counters: tuple[tuple[str, bytes], ...]


class Sealing:
    def __init__(self, ring: KeyRing | None) -> None:
        self._ring = ring

    @property
    def enabled(self) -> bool:
        return self._ring is not None

    def _keys(self) -> atrest.Keys:
        assert self._ring is not None
        return self._ring.keys()

    # ------------------------------------------------------------ token hashes
    def candidates(self, token_hash: bytes) -> tuple[bytes, ...]:
        """The stored forms a presented hash may have, keyed first."""
        if self._ring is None:
            return (token_hash,)
        keyed = atrest.keyed_hash(self._keys(), token_hash)
        return (keyed, token_hash) if atrest.may_be_raw(token_hash) else (keyed,)

    def candidates_of(self, op: c.Op) -> tuple[bytes, ...] | None:
        """The candidates of the session `op` names by token hash (None: it names none).

        Computed before the state lock is taken (`plan` takes them): the keyed hash is an
        HMAC, and the tick thread's applies wait for that lock."""
        if self._ring is None:
            return None
        if isinstance(op, c.Update | c.Touch | c.Delete | c.Rotate) and op.token_hash is not None:
            return self.candidates(op.token_hash)
        return None

    def resolve(
        self, m: SessionMachine, token_hash: bytes, level: int, options: tuple[bytes, ...] | None = None
    ) -> bytes:
        """The hash a command names a session by: the stored form, else the one new ones get.

        `options`: `candidates(token_hash)` when the caller computed them before the lock."""
        for option in options or self.candidates(token_hash):
            if m.holds(option):
                return option
        first = (options or self.candidates(token_hash))[0]
        return first if level >= c.ATREST_LEVEL else token_hash

    def read(
        self, m: SessionMachine, token_hash: bytes, now_ms: int, options: tuple[bytes, ...] | None = None
    ) -> tuple[bytes, Reply]:
        """(stored hash, m.read reply): the keyed form first, then the raw one.

        `options`: `candidates(token_hash)`, computed by the caller before it took the state
        lock (the keyed hash is an HMAC; the tick thread's applies wait for that lock)."""
        options = options or self.candidates(token_hash)
        found = next((o for o in options if m.holds(o)), options[0])
        return found, m.read(found, now_ms)

    # ---------------------------------------------------------------- commands
    def plan(
        self, m: SessionMachine, op: c.Op, level: int, options: tuple[bytes, ...] | None = None
    ) -> _Plan | None:
        """Read under the state lock what prepare() needs; None when nothing changes.

        `options`: `candidates_of(op)`, when the caller computed them before the lock."""
        if self._ring is None:
            return None
        if isinstance(op, c.Update | c.Touch | c.Delete | c.Rotate) and op.token_hash is not None:
            stored = self.resolve(m, op.token_hash, level, options)
        else:
            stored = None
        handle, version, counters = "", 0, tuple[tuple[str, bytes], ...]()
        if isinstance(op, c.Update) and stored is not None:
            s = m.sessions.get(stored)
            if s is not None:
                handle, version = s.handle, s.version
                names = {n for n, _ in op.increment}
                counters = tuple((n, v) for n, v in s.pairs() if n in names and atrest.is_sealed(v))
        return _Plan(stored, handle, version, counters)

    def prepare(self, op: c.Op, plan: _Plan | None, level: int) -> c.Op:
        if plan is None or self._ring is None:
            return op
        keyed = level >= c.ATREST_LEVEL
        keys = self._keys()
        if isinstance(op, c.Create) and keyed:
            return replace(
                op,
                token_hash=atrest.keyed_hash(keys, op.token_hash),
                attributes=self._seal(keys, op.handle, op.attributes),
                sealed=atrest.digest_values(keys, op.attributes),
            )
        if isinstance(op, c.Update):
            assert plan.token_hash is not None
            # One replace with every field that changes (each replace rebuilds the command).
            changes: dict[str, Any] = {"token_hash": plan.token_hash}
            if plan.sealed_counters:
                # The first increment of a sealed value converts it to a plaintext counter,
                # once: guarded by the version and handle it was read at (apply's RETRY
                # otherwise). Fresh fields: the fingerprint stays the client's request.
                rebase = self._opened_counters(plan)
                changes.update(rebase=rebase, read_version=plan.version, bound_handle=plan.handle)
            if keyed and op.set:
                changes.update(
                    set=self._seal(keys, plan.handle, op.set),
                    bound_handle=plan.handle,
                    sealed=atrest.digest_values(keys, op.set),
                )
            return replace(op, **changes)
        if isinstance(op, c.Rotate):
            assert plan.token_hash is not None
            new = atrest.keyed_hash(keys, op.new_token_hash) if keyed else op.new_token_hash
            return replace(op, token_hash=plan.token_hash, new_token_hash=new)
        if isinstance(op, c.Touch | c.Delete) and plan.token_hash is not None:
            return replace(op, token_hash=plan.token_hash)
        return op

    def _opened_counters(self, plan: _Plan) -> tuple[tuple[str, int], ...]:
        """The integers the sealed counters hold; InvalidArgument when one holds something else."""
        out = []
        for name, sealed in plan.sealed_counters:
            value = self._open(plan.handle, name, sealed)
            current = v.parse_counter(name, value)
            if isinstance(current, tuple) or not v.INT64_MIN <= current <= v.INT64_MAX:
                # The message names the attribute only: the value is what sealing protects.
                raise e.InvalidArgument(
                    f"attribute {name!r} holds an encrypted value that is not a canonical decimal integer "
                    "of 64 bits (such as b'0'), so it is not a counter and cannot be incremented"
                )
            out.append((name, current))
        return tuple(out)

    def _open(self, handle: str, name: str, sealed: bytes) -> bytes:
        assert self._ring is not None
        keys = self._ring.keys()
        if keys.key(atrest.key_id_of(sealed)) is None:
            keys = self._ring.keys(force=True)  # rotated a moment ago: look at the file now
        try:
            return atrest.open_value(keys, handle, name, sealed)
        except atrest.Undecryptable as exc:
            raise e.Undecryptable(str(exc)) from None

    @staticmethod
    def _seal(keys: atrest.Keys, handle: str, pairs: c.Attributes) -> c.Attributes:
        return tuple((name, atrest.seal(keys, handle, name, value)) for name, value in pairs)

    def limit_note(self) -> str:
        if self._ring is None:
            return ""
        return f" (each value counts {atrest.OVERHEAD_BYTES} bytes more: it is stored encrypted)"

    # ------------------------------------------------------------------ replies
    def open_view(self, view: SessionView | None) -> SessionView | None:
        if view is None:
            return None
        opened = self.open_attributes(view)
        return view if opened is view.attributes else replace(view, attributes=opened)

    def open_attributes(self, view: SessionView) -> tuple[tuple[str, bytes], ...]:
        """The view's attributes with sealed values opened (the same tuple when none is sealed).

        A reply needs only these: no second view is built (dataclasses.replace measured a
        fifth of what opening one value cost on the Validate path)."""
        attributes = view.attributes
        if not any(atrest.is_sealed(v) for _, v in attributes):
            return attributes
        if self._ring is None:
            raise e.Undecryptable("stored values are encrypted but this node has no key file configured")
        return tuple(
            (name, self._open(view.handle, name, value) if atrest.is_sealed(value) else value)
            for name, value in attributes
        )
