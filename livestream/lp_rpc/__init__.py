"""go-livepeer's `net/lp_rpc.proto`, written from its documented field numbers; one copy for all.

    lp_rpc.proto          the messages and the `Orchestrator` service (package `net`)
    lp_rpc_pb2.py/.pyi    generated: the messages
    lp_rpc_pb2_grpc.py/.pyi  generated: OrchestratorStub, OrchestratorServicer
    build.sh              regenerates the four (grpcio-tools, mypy-protobuf: build-time only)

Imported by `livestream.gateway` (GetOrchestrator, OrchestratorInfo, job headers) and
`livestream.payments` (Payment, TicketParams, PaymentResult, SegData). It imports nothing of ours,
so either may depend on it without depending on the other; and this `__init__` imports nothing,
so `lp_rpc_pb2` alone (what payments uses) needs only protobuf, not grpcio. The generated modules
are committed: nothing needs a compiler at run or test time.
"""
