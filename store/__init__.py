"""The sessionquorum node: a Raft-replicated session state machine behind a gRPC API."""
