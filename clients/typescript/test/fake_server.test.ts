// Client behaviour against an in-process grpc-js server on loopback: auth metadata,
// retries on UNAVAILABLE only, deadlines, and the infer wire format end to end.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  type Metadata, Server, ServerCredentials, type ServerUnaryCall, type sendUnaryData, status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { GRPCInferenceServiceService, type ModelInferRequest, type ModelInferResponse } from "../src/generated/grpc_service";
import { InferClient, InferError } from "../src/index";

let server: Server;
let target: string;
let liveCalls = 0;
let failuresLeft = 0;
let lastAuth: unknown[] = [];

const handlers: UntypedServiceImplementation = {
  serverLive(call: ServerUnaryCall<unknown, unknown>, done: sendUnaryData<unknown>) {
    liveCalls += 1;
    lastAuth = (call.metadata as Metadata).get("authorization");
    if (failuresLeft > 0) {
      failuresLeft -= 1;
      done({ code: status.UNAVAILABLE, details: "warming up" });
    } else done(null, { live: true });
  },
  serverReady(_call: ServerUnaryCall<unknown, unknown>, done: sendUnaryData<unknown>) {
    liveCalls += 1;
    done({ code: status.INVALID_ARGUMENT, details: "field 'x' is wrong" });
  },
  modelReady(_call: ServerUnaryCall<unknown, unknown>, done: sendUnaryData<unknown>) {
    setTimeout(() => done(null, { ready: true }), 300);
  },
  modelInfer(call: ServerUnaryCall<ModelInferRequest, ModelInferResponse>, done: sendUnaryData<ModelInferResponse>) {
    const req = call.request; // echo every input back as an output
    done(null, {
      modelName: req.modelName, modelVersion: "7", id: req.id, parameters: req.parameters,
      outputs: req.inputs.map((i) => ({ name: i.name, datatype: i.datatype, shape: i.shape, parameters: {} })),
      rawOutputContents: req.rawInputContents,
    });
  },
};

before(async () => {
  server = new Server();
  server.addService(GRPCInferenceServiceService, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  target = `127.0.0.1:${port}`;
});

after(() => server.forceShutdown());

describe("InferClient against a fake server", () => {
  it("sends the token as a bearer authorization header", async () => {
    const client = new InferClient(target, { token: "s3cret" });
    assert.equal(await client.serverLive(), true);
    assert.deepEqual(lastAuth, ["Bearer s3cret"]);
    client.close();
  });

  it("retries UNAVAILABLE with backoff until it succeeds", async () => {
    const client = new InferClient(target, { retries: 3 });
    liveCalls = 0;
    failuresLeft = 2;
    assert.equal(await client.serverLive(), true);
    assert.equal(liveCalls, 3);
    client.close();
  });

  it("gives up after `retries` further attempts", async () => {
    const client = new InferClient(target, { retries: 1 });
    liveCalls = 0;
    failuresLeft = 5;
    await assert.rejects(client.serverLive(), (e: InferError) => e.code === status.UNAVAILABLE && e.codeName === "UNAVAILABLE");
    assert.equal(liveCalls, 2);
    failuresLeft = 0;
    client.close();
  });

  it("does not retry other codes, and carries code, name and details", async () => {
    const client = new InferClient(target, { retries: 3 });
    liveCalls = 0;
    await assert.rejects(client.serverReady(), (e: unknown) => {
      assert.ok(e instanceof InferError);
      assert.equal(e.code, status.INVALID_ARGUMENT);
      assert.equal(e.codeName, "INVALID_ARGUMENT");
      assert.equal(e.details, "field 'x' is wrong");
      assert.match(e.message, /^INVALID_ARGUMENT: field 'x'/);
      return true;
    });
    assert.equal(liveCalls, 1);
    client.close();
  });

  it("applies the deadline", async () => {
    const client = new InferClient(target, { deadlineMs: 50 });
    await assert.rejects(client.modelReady("m"), (e: InferError) => e.codeName === "DEADLINE_EXCEEDED");
    client.close();
  });

  it("answers UNAVAILABLE when nothing listens, after its retries", async () => {
    const client = new InferClient("127.0.0.1:1", { retries: 1 });
    await assert.rejects(client.serverLive(), (e: InferError) => e.code === status.UNAVAILABLE);
    client.close();
  });

  it("sends raw inputs and decodes raw outputs of every kind, with parameters", async () => {
    const client = new InferClient(target);
    const result = await client.infer("echo", {
      f: { data: Float32Array.of(1, 2, 3, 4, 5, 6), shape: [2, 3] },
      i: { data: BigInt64Array.of(-1n, 2n ** 62n), shape: [2, 1] },
      b: { data: Uint8Array.of(1, 0), shape: [2], datatype: "BOOL" },
      s: { data: ["alice", "bob"], shape: [2, 1] },
    }, { id: "r1", parameters: { priority: 1, note: "x", fast: true, ratio: 0.5 } });
    assert.equal(result.modelName, "echo");
    assert.equal(result.modelVersion, "7");
    assert.equal(result.id, "r1");
    assert.deepEqual(result.parameters, { priority: 1, note: "x", fast: true, ratio: 0.5 });
    assert.deepEqual(result.outputs.f, { name: "f", datatype: "FP32", shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) });
    assert.deepEqual(result.outputs.i.data, BigInt64Array.of(-1n, 2n ** 62n));
    assert.equal(result.outputs.b.datatype, "BOOL");
    assert.deepEqual(result.outputs.b.data, Uint8Array.of(1, 0));
    assert.deepEqual(result.outputs.s.data, [Buffer.from("alice"), Buffer.from("bob")]);
    client.close();
  });

  it("reaches unwrapped RPCs through call()", async () => {
    const client = new InferClient(target);
    assert.deepEqual(await client.call("serverLive", {}), { live: true });
    await assert.rejects(client.call("modelConfig", { name: "m", version: "" }), (e: InferError) => e.codeName === "UNIMPLEMENTED");
    client.close();
  });
});
