"""Pure cryptographic building blocks. Nothing here imports gRPC or does I/O."""
