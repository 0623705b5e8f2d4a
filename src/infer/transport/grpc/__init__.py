"""gRPC transport: the Open Inference Protocol (KServe V2) service, Triton-compatible."""
