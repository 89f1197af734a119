"""A session's idle timeout changed after creation (Update, command level 4), on real nodes."""

from __future__ import annotations

import pytest

from sessionquorum.client import InvalidArgument

from .conftest import ClientFactory, ClusterFactory
from .helpers import local_read, wait_converged

pytestmark = pytest.mark.cluster


def test_an_idle_timeout_change_reaches_every_node_and_keeps_the_absolute_deadline(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    client = make_client(cluster)
    created = client.create(attributes={"cart": b"1"}, idle_timeout_s=1800, absolute_timeout_s=7200)
    updated = client.update(created.token, idle_timeout_s=300)
    assert updated.idle_timeout_ms == 300_000
    assert updated.absolute_deadline_ms == created.session.absolute_deadline_ms
    wait_converged(cluster)
    for node in cluster.node_ids:
        seen = local_read(cluster, node, created.token)
        assert seen is not None and seen.idle_timeout_ms == 300_000, node
        assert seen.attributes == {"cart": b"1"}
    with pytest.raises(InvalidArgument):
        client.update(created.token, idle_timeout_s=0.5)  # under the 1 s minimum
