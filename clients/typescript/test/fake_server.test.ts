// Client behaviour against an in-process grpc-js server on loopback: auth metadata,
// retries on UNAVAILABLE only, deadlines, and the infer wire format end to end.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  type Metadata, Server, ServerCredentials, type ServerUnaryCall, type sendUnaryData, status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import {
  ControlPlaneService, type DriftReport, type GroundTruthRequest, type GroundTruthResponse, type ModelPerformance,
  type ModelPerformanceRequest,
} from "../src/generated/control";
import { GRPCInferenceServiceService, type ModelInferRequest, type ModelInferResponse } from "../src/generated/grpc_service";
import { InferClient, InferError } from "../src/index";

let server: Server;
let target: string;
let liveCalls = 0;
let failuresLeft = 0;
let lastAuth: unknown[] = [];
let lastTruth: GroundTruthRequest | undefined;
let lastPerformance: ModelPerformanceRequest | undefined;
let truthFailuresLeft = 0;
let truthCalls = 0;

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

const controlHandlers: UntypedServiceImplementation = {
  reportGroundTruth(call: ServerUnaryCall<GroundTruthRequest, GroundTruthResponse>, done: sendUnaryData<GroundTruthResponse>) {
    truthCalls += 1;
    lastAuth = call.metadata.get("authorization");
    lastTruth = call.request;
    if (truthFailuresLeft > 0) {
      truthFailuresLeft -= 1;
      done({ code: status.UNAVAILABLE, details: "store busy" });
    } else if (call.request.requestId === "unknown") {
      done({ code: status.NOT_FOUND, details: "request_id 'unknown': no remembered prediction" });
    } else {
      done(null, { model: "m", version: "3", rows: call.request.labels.length || call.request.values.length });
    }
  },
  getModelPerformance(call: ServerUnaryCall<ModelPerformanceRequest, ModelPerformance>, done: sendUnaryData<ModelPerformance>) {
    lastPerformance = call.request;
    done(null, {
      model: call.request.model, version: call.request.version || "3", kind: "regression", samples: 24,
      accuracy: NaN, precision: NaN, recall: NaN, f1: NaN, mae: 1.5, rmse: 2.25,
      series: [{ t: 1_700_000_000, value: 1.5 }, { t: 1_700_000_060, value: NaN }],
    });
  },
  getDrift(call: ServerUnaryCall<ModelPerformanceRequest, DriftReport>, done: sendUnaryData<DriftReport>) {
    if (call.request.model === "slow") {
      setTimeout(() => done({ code: status.INTERNAL, details: "too late" }), 300);
      return;
    }
    done(null, {
      model: call.request.model, version: call.request.version || "3", drifted: true, evaluatedAt: 1_700_000_000.5,
      rows: 500, reason: "psi above 0.2",
      features: [{ feature: "history_mean", kind: "numeric", psi: 0.4, ks: 0.3, ksP: 1e-6, wasserstein: 1.2, chi2: NaN,
        chi2P: NaN, drifted: true }],
    });
  },
};

before(async () => {
  server = new Server();
  server.addService(GRPCInferenceServiceService, handlers);
  server.addService(ControlPlaneService, controlHandlers);
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

describe("InferClient's model-quality calls against a fake control plane", () => {
  it("reports labels as text, with the token, and answers the version credited", async () => {
    const client = new InferClient(target, { token: "s3cret" });
    const answer = await client.reportGroundTruth("r1", { labels: ["cat", 2, 3n, true, false] });
    assert.deepEqual(answer, { model: "m", version: "3", rows: 5 });
    assert.deepEqual(lastTruth, { requestId: "r1", labels: ["cat", "2", "3", "true", "false"], values: [] });
    assert.deepEqual(lastAuth, ["Bearer s3cret"]);
    client.close();
  });

  it("reports values from arrays and typed arrays, as doubles", async () => {
    const client = new InferClient(target);
    assert.equal((await client.reportGroundTruth("r2", { values: Float32Array.of(1.5, 2, -3) })).rows, 3);
    assert.deepEqual(lastTruth, { requestId: "r2", labels: [], values: [1.5, 2, -3] });
    await client.reportGroundTruth("r3", { values: [0.1, 1e300] });
    assert.deepEqual(lastTruth?.values, [0.1, 1e300]);
    client.close();
  });

  it("refuses a report without exactly one of labels and values before sending", async () => {
    const client = new InferClient(target);
    truthCalls = 0;
    await assert.rejects(client.reportGroundTruth("r", {}), TypeError);
    await assert.rejects(client.reportGroundTruth("r", { labels: ["1"], values: [1] }), /exactly one of labels/);
    await assert.rejects(client.reportGroundTruth("r", { labels: [NaN] }), RangeError);
    assert.equal(truthCalls, 0);
    client.close();
  });

  it("retries UNAVAILABLE and keeps other statuses", async () => {
    const client = new InferClient(target, { retries: 2 });
    truthCalls = 0;
    truthFailuresLeft = 2;
    assert.equal((await client.reportGroundTruth("r4", { labels: ["1"] })).rows, 1);
    assert.equal(truthCalls, 3);
    await assert.rejects(client.reportGroundTruth("unknown", { labels: ["1"] }),
      (e: InferError) => e.codeName === "NOT_FOUND" && /request_id/.test(e.details));
    client.close();
  });

  it("asks for a model's performance with its version and window, NaN kept", async () => {
    const client = new InferClient(target);
    const perf = await client.modelPerformance("m", { version: "2", windowS: 300 });
    assert.deepEqual(lastPerformance, { model: "m", version: "2", windowS: 300 });
    assert.equal(perf.kind, "regression");
    assert.equal(perf.samples, 24);
    assert.equal(perf.mae, 1.5);
    assert.equal(perf.rmse, 2.25);
    for (const k of ["accuracy", "precision", "recall", "f1"] as const) assert.ok(Number.isNaN(perf[k]), k);
    assert.equal(perf.series.length, 2);
    assert.deepEqual(perf.series[0], { t: 1_700_000_000, value: 1.5 });
    assert.ok(Number.isNaN(perf.series[1].value));
    await client.modelPerformance("m");
    assert.deepEqual(lastPerformance, { model: "m", version: "", windowS: 0 });
    client.close();
  });

  it("answers the drift report, features included, under the deadline", async () => {
    const client = new InferClient(target);
    const report = await client.drift("m");
    assert.equal(report.model, "m");
    assert.equal(report.version, "3");
    assert.equal(report.drifted, true);
    assert.equal(report.evaluatedAt, 1_700_000_000.5);
    assert.equal(report.rows, 500);
    assert.equal(report.features.length, 1);
    assert.equal(report.features[0].feature, "history_mean");
    assert.equal(report.features[0].ksP, 1e-6);
    assert.ok(Number.isNaN(report.features[0].chi2));
    assert.equal((await client.drift("m", { version: "1" })).version, "1");
    await assert.rejects(client.drift("slow", { deadlineMs: 50 }), (e: InferError) => e.codeName === "DEADLINE_EXCEEDED");
    client.close();
  });

  it("reaches other control-plane RPCs through controlCall()", async () => {
    const client = new InferClient(target);
    assert.equal((await client.controlCall("getDrift", { model: "x", version: "", windowS: 0 })).model, "x");
    await assert.rejects(client.controlCall("listDeployments", {}), (e: InferError) => e.codeName === "UNIMPLEMENTED");
    client.close();
  });
});
