"""The soak: a 3-node cluster under sustained mixed session load for a bounded time, with
compaction thresholds low enough that every node compacts many times, a follower killed and
restarted, a node kept down until it needs a snapshot, and the leader's clock pushed an hour
ahead. It checks the history and judges whether journals and memory stay flat (issue 6).

`make soak` (SOAK_MINUTES, default 30) runs `python -m tests.soak`; the short version in
`test_soak_short.py` runs in `make test`. Nothing here is installed: the soak reuses what
`sessionquorum.cluster` exports (LocalCluster, History, the checker and its models).
"""
