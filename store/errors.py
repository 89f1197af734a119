"""The store's error tree, and the one table that gives each its gRPC status.

    StoreError                      every error a node reports about a request
    ├── InvalidArgument             INVALID_ARGUMENT: the request itself is malformed
    ├── PermissionDenied            PERMISSION_DENIED: the caller's role does not cover it
    ├── NotFound                    NOT_FOUND: no such session (or it expired / was deleted)
    ├── AlreadyExists               ALREADY_EXISTS: the token hash (or handle) is taken
    ├── VersionConflict             ABORTED: expected_version does not match
    ├── QuotaExceeded               RESOURCE_EXHAUSTED: a configured limit would be exceeded
    ├── StaleSequence               OUT_OF_RANGE: an older request id than one already applied
    ├── EventsCompacted             OUT_OF_RANGE (+ sq-oldest-cursor): the event cursor is
    │                               older than the retained events
    ├── NotLeader                   FAILED_PRECONDITION (+ leader hint): ask the leader
    ├── NoLeader                    UNAVAILABLE: no leader known; nothing was applied
    ├── NotReady                    UNAVAILABLE: the node is still catching up after start
    ├── UpgradePending              FAILED_PRECONDITION: not every member supports it yet
    ├── Undecryptable               DATA_LOSS: a stored value does not open on this node
    │                               (unknown key id, or not authentic where it is stored)
    ├── PrincipalDisabled           PERMISSION_DENIED: the principal is disabled (no new session)
    └── OutcomeUnknown              UNKNOWN: may or may not have been applied; retry with
        │                           the same request id, which is safe
        └── DedupExpired            UNKNOWN (+ sq-epoch): this request was not applied, an
                                    earlier attempt's outcome is unknown (the exactly-once
                                    entry may be forgotten)
    ConfigError                     a bad configuration; stops a node at start-up

Domain outcomes are *values* inside the state machine (`state.Reply.code`); they become
these exceptions in the node's service layer, and pysyncobj's failure reasons become
NoLeader / OutcomeUnknown in the Raft wrapper. Each translation happens in one place.
"""

from __future__ import annotations

import grpc


class ConfigError(Exception):
    """The configuration is unusable; the message says which key and why."""


class StoreError(Exception):
    """Base of every error a node reports about a request."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(StoreError):
    status = grpc.StatusCode.INVALID_ARGUMENT


class PermissionDenied(StoreError):
    """The caller's role does not cover this request (store/authz.py, the service's scope check)."""

    status = grpc.StatusCode.PERMISSION_DENIED


class NotFound(StoreError):
    status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(StoreError):
    status = grpc.StatusCode.ALREADY_EXISTS


class VersionConflict(StoreError):
    status = grpc.StatusCode.ABORTED


class QuotaExceeded(StoreError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class StaleSequence(StoreError):
    status = grpc.StatusCode.OUT_OF_RANGE


class EventsCompacted(StoreError):
    """An Events cursor whose next event the ring no longer holds (sent as `sq-oldest-cursor`)."""

    status = grpc.StatusCode.OUT_OF_RANGE

    def __init__(self, message: str, oldest_cursor: int) -> None:
        super().__init__(message)
        self.oldest_cursor = oldest_cursor


class NotLeader(StoreError):
    status = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, leader_address: str | None) -> None:
        super().__init__(message)
        self.leader_address = leader_address


class NoLeader(StoreError):
    status = grpc.StatusCode.UNAVAILABLE


class NotReady(StoreError):
    status = grpc.StatusCode.UNAVAILABLE


class UpgradePending(StoreError):
    status = grpc.StatusCode.FAILED_PRECONDITION


class Undecryptable(StoreError):
    status = grpc.StatusCode.DATA_LOSS


class PrincipalDisabled(StoreError):
    status = grpc.StatusCode.PERMISSION_DENIED


class OutcomeUnknown(StoreError):
    status = grpc.StatusCode.UNKNOWN


class DedupExpired(OutcomeUnknown):
    def __init__(self, message: str, epoch_ms: int) -> None:
        super().__init__(f"outcome unknown (deduplication state expired): {message}")
        self.epoch_ms = epoch_ms


class VersionConflictAt(VersionConflict):
    """A VersionConflict that knows the session's current version (sent as `sq-version`)."""

    def __init__(self, message: str, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version


# Trailing metadata keys: the leader's gRPC address on NotLeader; the cluster's time on
# DedupExpired (the epoch for a fresh client id); the session's version on VersionConflict.
LEADER_METADATA_KEY = "sq-leader"
EPOCH_METADATA_KEY = "sq-epoch"
VERSION_METADATA_KEY = "sq-version"
# On FAILED_PRECONDITION: the command needs a level some member lacks (not "not the leader").
UPGRADE_METADATA_KEY = "sq-upgrade"
# On OUT_OF_RANGE from Events: the oldest cursor a stream may resume after.
OLDEST_CURSOR_METADATA_KEY = "sq-oldest-cursor"
