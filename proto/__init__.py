"""Generated gRPC code for the sessionquorum wire contract (see sessionquorum.proto)."""
