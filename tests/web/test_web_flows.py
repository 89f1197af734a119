"""The shared flows (sessionquorum.web._flows) against the in-process store, without a framework.

Two SessionData for one token stand for two concurrent requests of one user: both loaded
the same version, both write back. Compare-and-set makes the second one's write conflict;
the merge hook decides what survives.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sessionquorum.client import SessionClient
from sessionquorum.web import (
    MISSING,
    JSONSerializer,
    SessionConflict,
    SessionData,
    SessionOptions,
    last_writer_wins,
)
from sessionquorum.web import _flows as flows
from tests.web.inprocess_store import InProcessStore


@pytest.fixture
def client(store: InProcessStore) -> Iterator[SessionClient]:
    with SessionClient([store.endpoint], insecure=True) as sync_client:
        yield sync_client


def request(client: SessionClient, token: str | None, options: SessionOptions) -> SessionData:
    data = SessionData(options.serializer, presented=token is not None)
    flows.run_sync(flows.load(data, token, options), client)
    return data


def new_session(client: SessionClient, options: SessionOptions, **values: Any) -> str:
    data = request(client, None, options)
    data.update(values)
    flows.run_sync(flows.save(data, options), client)
    assert data.token is not None
    return data.token


def test_concurrent_requests_changing_different_attributes_both_survive(client: SessionClient) -> None:
    options = SessionOptions()
    token = new_session(client, options, cart=[], theme="light")
    first, second = request(client, token, options), request(client, token, options)
    first["cart"].append("apple")
    second["theme"] = "dark"
    flows.run_sync(flows.save(first, options), client)
    flows.run_sync(flows.save(second, options), client)  # VersionConflict, merged, written
    assert dict(request(client, token, options)) == {"cart": ["apple"], "theme": "dark"}


def test_concurrent_requests_changing_the_same_attribute_raise_by_default(client: SessionClient) -> None:
    options = SessionOptions()
    token = new_session(client, options, cart=[])
    first, second = request(client, token, options), request(client, token, options)
    first["cart"] = ["apple"]
    second["cart"] = ["pear"]
    flows.run_sync(flows.save(first, options), client)
    with pytest.raises(SessionConflict) as caught:
        flows.run_sync(flows.save(second, options), client)
    assert caught.value.name == "cart"
    assert request(client, token, options)["cart"] == ["apple"]  # nothing of the loser was written


def test_merge_hook_sees_base_ours_theirs_and_decides(client: SessionClient) -> None:
    seen: list[tuple[Any, ...]] = []

    def union(name: str, base: Any, ours: Any, theirs: Any) -> Any:
        seen.append((name, base, ours, theirs))
        return sorted(set(ours) | set(theirs))

    options = SessionOptions(merge=union)
    token = new_session(client, options, cart=["bread"])
    first, second = request(client, token, options), request(client, token, options)
    first["cart"].append("apple")
    second["cart"].append("pear")
    flows.run_sync(flows.save(first, options), client)
    flows.run_sync(flows.save(second, options), client)
    assert seen == [("cart", ["bread"], ["bread", "pear"], ["bread", "apple"])]
    assert request(client, token, options)["cart"] == ["apple", "bread", "pear"]


def test_merge_hook_returning_missing_deletes_and_last_writer_wins_keeps_ours(client: SessionClient) -> None:
    options = SessionOptions(merge=last_writer_wins)
    token = new_session(client, options, cart=["a"], note="x")
    first, second = request(client, token, options), request(client, token, options)
    first["cart"] = ["b"]
    second["cart"] = ["c"]
    flows.run_sync(flows.save(first, options), client)
    flows.run_sync(flows.save(second, options), client)
    assert request(client, token, options)["cart"] == ["c"]

    dropping = SessionOptions(merge=lambda name, base, ours, theirs: MISSING)
    first, second = request(client, token, dropping), request(client, token, dropping)
    first["note"] = "y"
    second["note"] = "z"
    flows.run_sync(flows.save(first, dropping), client)
    flows.run_sync(flows.save(second, dropping), client)
    assert "note" not in request(client, token, dropping)


def test_write_to_a_session_ended_during_the_request_is_dropped_not_recreated(
    client: SessionClient, store: InProcessStore
) -> None:
    options = SessionOptions()
    token = new_session(client, options, cart=[])
    slow = request(client, token, options)
    logout = request(client, token, options)
    flows.run_sync(flows.logout(logout), client)
    slow["cart"] = ["late"]
    flows.run_sync(flows.save(slow, options), client)
    assert store.session_count() == 0  # nothing resurrected, no new session behind the user's back
    assert slow.token == token  # and no new cookie


def test_login_as_another_principal_starts_a_fresh_session_without_the_old_data(
    client: SessionClient,
) -> None:
    options = SessionOptions()
    data = request(client, None, options)
    data["secret"] = "alice's"
    flows.run_sync(flows.login(data, "alice", False, options), client)
    flows.run_sync(flows.save(data, options), client)
    alice_token = data.token
    flows.run_sync(flows.login(data, "bob", False, options), client)
    flows.run_sync(flows.save(data, options), client)
    assert dict(data) == {}
    assert data.principal == "bob"
    assert alice_token is not None
    assert dict(request(client, alice_token, options)) == {}  # alice's session ended


def test_end_session_refuses_a_handle_of_another_principal(client: SessionClient) -> None:
    options = SessionOptions()
    alice, mallory = request(client, None, options), request(client, None, options)
    flows.run_sync(flows.login(alice, "alice", False, options), client)
    flows.run_sync(flows.login(mallory, "mallory", False, options), client)
    assert alice.handle is not None
    assert not flows.run_sync(flows.end_session(mallory, alice.handle), client)
    assert request(client, alice.token, options).principal == "alice"


def test_serializer_is_pluggable(client: SessionClient) -> None:
    class Upper(JSONSerializer):
        def dumps(self, value: Any) -> bytes:
            return super().dumps(value).upper()

    options = SessionOptions(serializer=Upper())
    token = new_session(client, options, word="abc")
    raw = client.validate(token).attributes["word"]
    assert raw == b'"ABC"'
