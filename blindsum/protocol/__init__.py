"""Pure protocol state machines (secagg, he). No I/O, no gRPC; randomness is injected."""
