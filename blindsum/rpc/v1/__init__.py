"""Generated protobuf and gRPC code for blindsum.rpc.v1 (do not edit)."""
