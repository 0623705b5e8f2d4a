"""The transport ceiling: a bare grpc.aio V2 server whose ModelInfer answers with its inputs and runs no model.

    python benchmarks/echo_server.py --port 8011 --model anomaly --input features:FP32:-1,16
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import grpc

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc


class Echo(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, model: str, inputs: list[tuple[str, str, list[int]]]) -> None:
        self._model = model
        self._inputs = inputs

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        resp = pb.ModelMetadataResponse(name=self._model, versions=["1"], platform="echo")
        for name, dt, shape in self._inputs:
            resp.inputs.add(name=name, datatype=dt, shape=shape)
            resp.outputs.add(name=name, datatype=dt, shape=shape)
        return resp

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        resp = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        for t in request.inputs:
            resp.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        resp.raw_output_contents.extend(request.raw_input_contents)
        return resp


def parse_input(spec: str) -> tuple[str, str, list[int]]:
    name, dt, dims = spec.split(":")
    return name, dt, [int(d) for d in dims.split(",")]


async def serve(port: int, model: str, inputs: list[tuple[str, str, list[int]]], ready_file: Path | None) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Echo(model, inputs), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    if ready_file is not None:
        ready_file.write_text(str(bound))
    print(f"echo ready grpc={bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model", default="echo")
    p.add_argument("--input", action="append", required=True, help="name:DATATYPE:dim,dim (-1 = variable)")
    p.add_argument("--ready-file", type=Path)
    a = p.parse_args()
    asyncio.run(serve(a.port, a.model, [parse_input(s) for s in a.input], a.ready_file))


if __name__ == "__main__":
    main()
