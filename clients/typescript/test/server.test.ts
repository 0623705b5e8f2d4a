// Against a running infer server with the default model repository: INFER_TARGET=host:port.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { asStrings, InferClient, InferError, type OutputTensor, status, type Tensor, type TensorData } from "../src/index";

const TARGET = process.env.INFER_TARGET;
if (!TARGET) {
  throw new Error("INFER_TARGET is not set: start `infer serve` and set INFER_TARGET=host:port (see test.sh)");
}

let client: InferClient;
before(() => {
  client = new InferClient(TARGET, { deadlineMs: 60_000 });
});
after(() => client.close());

/** The README's two raw events, one per row. */
function events(): Record<string, Tensor> {
  const now = Date.now() / 1000;
  const col = (data: TensorData): Tensor => ({ data, shape: [2, 1] });
  return {
    timestamp: col(Float64Array.of(now, now + 1)),
    user: col(["alice", "bob"]),
    namespace: col(["finance", "secrets"]),
    file_type: col(["pdf", "exe"]),
    content_hash: col(["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "0".repeat(64)]),
    file_size: col(BigInt64Array.of(250_000n, 2_000_000_000n)),
    hash_time_ms: col(Float32Array.of(12.5, 900)),
    api_latency_ms: col(Float32Array.of(85, 4000)),
    concurrency: col(Int32Array.of(8, 120)),
  };
}

/** Two weeks of hourly values per series, busier by day. */
function history(series: number, length: number): Float32Array {
  return Float32Array.from({ length: series * length }, (_, k) => {
    const t = k % length;
    return 100 * (1 + Math.floor(k / length)) + 30 * Math.sin((Math.PI * t) / 12) + ((t * 7) % 5);
  });
}

function numbers(t: OutputTensor): number[] {
  assert.ok(!Array.isArray(t.data), `${t.name} is numeric`);
  return Array.from(t.data as Float32Array, Number);
}

function assertFinite(t: OutputTensor): void {
  for (const v of numbers(t)) assert.ok(Number.isFinite(v), `${t.name} holds ${v}`);
}

async function rejectsWith(promise: Promise<unknown>, code: number, field: RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof InferError, `an InferError, not ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.details, field);
    return true;
  });
}

describe(`infer server at ${TARGET}`, () => {
  it("is live and ready (V2 and grpc.health.v1)", async () => {
    assert.equal(await client.serverLive(), true);
    assert.equal(await client.serverReady(), true);
    assert.equal(await client.health(), "SERVING");
    assert.equal(await client.health("ready"), "SERVING");
    assert.equal(await client.modelReady("anomaly"), true);
    assert.equal(await client.modelReady("forecast"), true);
  });

  it("answers server metadata", async () => {
    const meta = await client.serverMetadata();
    assert.equal(meta.name, "infer");
    assert.ok(meta.version.length > 0);
    assert.ok(meta.extensions.includes("model_repository"));
  });

  it("answers the anomaly model's metadata", async () => {
    const meta = await client.modelMetadata("anomaly");
    assert.equal(meta.name, "anomaly");
    const inputs = Object.fromEntries(meta.inputs.map((i) => [i.name, i.datatype]));
    assert.deepEqual(inputs, {
      timestamp: "FP64", user: "BYTES", namespace: "BYTES", file_type: "BYTES", content_hash: "BYTES",
      file_size: "INT64", hash_time_ms: "FP32", api_latency_ms: "FP32", concurrency: "INT32",
    });
    const outputs = meta.outputs.map((o) => o.name);
    for (const name of ["score", "is_anomalous", "severity", "anomaly_type", "top_features"]) assert.ok(outputs.includes(name), name);
  });

  it("answers the forecast model's metadata", async () => {
    const meta = await client.modelMetadata("forecast");
    const history = meta.inputs.find((i) => i.name === "history");
    assert.deepEqual(history, { name: "history", datatype: "FP32", shape: [-1, -1] });
    for (const name of ["mean", "lower", "upper", "model"]) assert.ok(meta.outputs.some((o) => o.name === name), name);
  });

  it("scores raw events with the anomaly pipeline", async () => {
    const { outputs, modelName } = await client.infer("anomaly", events());
    assert.equal(modelName, "anomaly");
    assert.deepEqual(outputs.score.shape, [2, 1]);
    assertFinite(outputs.score);
    for (const s of numbers(outputs.score)) assert.ok(s >= 0 && s <= 1, `score ${s}`);
    assert.equal(outputs.is_anomalous.datatype, "BOOL");
    assert.deepEqual(outputs.is_anomalous.shape, [2, 1]);
    assert.deepEqual(outputs.severity.shape, [2, 1]);
    for (const s of asStrings(outputs.severity)) assert.ok(["NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL"].includes(s), s);
    assert.deepEqual(outputs.anomaly_type.shape, [2, 1]);
    assert.deepEqual(outputs.top_features.shape, [2, 3]);
    assert.equal(asStrings(outputs.top_features).length, 6);
  });

  it("returns only the outputs asked for", async () => {
    const { outputs } = await client.infer("anomaly", events(), { outputs: ["score"] });
    assert.deepEqual(Object.keys(outputs), ["score"]);
  });

  it("forecasts a batch of series with intervals", async () => {
    const length = 24 * 14;
    const horizon = 12;
    const { outputs } = await client.infer("forecast", {
      history: { data: history(2, length), shape: [2, length] },
      horizon: { data: Int32Array.of(horizon, horizon), shape: [2, 1] },
    });
    assert.deepEqual(outputs.mean.shape, [2, horizon]);
    assert.deepEqual(outputs.lower.shape, [2, 2, horizon]);
    assert.deepEqual(outputs.upper.shape, [2, 2, horizon]);
    assert.deepEqual(outputs.model.shape, [2, 1]);
    for (const name of ["mean", "lower", "upper", "mase", "smape"]) assertFinite(outputs[name]);
    const [mean, lower, upper] = [numbers(outputs.mean), numbers(outputs.lower), numbers(outputs.upper)];
    for (let b = 0; b < 2; b++) {
      for (let h = 0; h < horizon; h++) {
        const m = mean[b * horizon + h];
        for (let l = 0; l < 2; l++) {
          const k = (b * 2 + l) * horizon + h;
          assert.ok(lower[k] <= m + 1e-3 && m <= upper[k] + 1e-3, `series ${b} step ${h}: ${lower[k]} <= ${m} <= ${upper[k]}`);
        }
      }
    }
  });

  it("answers NOT_FOUND for an unknown model, naming it", async () => {
    await rejectsWith(client.infer("no_such_model", { x: { data: Float32Array.of(1), shape: [1, 1] } }),
      status.NOT_FOUND, /no_such_model/);
    await rejectsWith(client.modelMetadata("no_such_model"), status.NOT_FOUND, /no_such_model/);
  });

  it("answers INVALID_ARGUMENT for a wrong datatype, naming the input", async () => {
    const wrong = { ...events(), timestamp: { data: Float32Array.of(1, 2), shape: [2, 1] } };
    await rejectsWith(client.infer("anomaly", wrong), status.INVALID_ARGUMENT, /'timestamp'.*FP64/);
  });

  it("answers INVALID_ARGUMENT for a missing input, naming it", async () => {
    await rejectsWith(client.infer("forecast", { horizon: { data: Int32Array.of(12), shape: [1, 1] } }),
      status.INVALID_ARGUMENT, /history/);
  });

  it("credits reported ground truth to a forecast and answers its online accuracy", async () => {
    const length = 24 * 14;
    const horizon = 24;
    const id = `ts-sdk-truth-${Date.now()}-${Math.floor(Math.random() * 1e9)}`;
    const result = await client.infer("forecast", {
      history: { data: history(1, length), shape: [1, length] },
      horizon: { data: Int32Array.of(horizon), shape: [1, 1] },
    }, { id });
    assert.equal(result.id, id);
    const mean = numbers(result.outputs.mean);
    assert.equal(mean.length, horizon);
    // a count that does not match the prediction (1 x 24) is refused, naming values, and credits nothing
    await rejectsWith(client.reportGroundTruth(id, { values: [1, 2, 3] }), status.INVALID_ARGUMENT, /values/);
    const credited = await client.reportGroundTruth(id, { values: mean.map((m) => m + 1) });
    assert.equal(credited.model, "forecast");
    assert.ok(credited.version.length > 0);
    assert.equal(credited.rows, 1);
    // each prediction is credited once
    await rejectsWith(client.reportGroundTruth(id, { values: mean }), status.NOT_FOUND, /request_id/);

    const perf = await client.modelPerformance("forecast");
    assert.equal(perf.model, "forecast");
    assert.equal(perf.version, credited.version);
    assert.equal(perf.kind, "regression");
    assert.ok(perf.samples >= horizon, `samples ${perf.samples}`);
    assert.ok(Number.isFinite(perf.mae) && perf.mae >= 0, `mae ${perf.mae}`);
    assert.ok(Number.isFinite(perf.rmse) && perf.rmse >= perf.mae - 1e-9, `rmse ${perf.rmse}`);
    assert.ok(Number.isNaN(perf.f1) && Number.isNaN(perf.accuracy), "classification figures are NaN");
    assert.ok(perf.series.length >= 1);
    const windowed = await client.modelPerformance("forecast", { version: credited.version, windowS: 3600 });
    assert.ok(windowed.samples >= horizon && Number.isFinite(windowed.mae));
  });

  it("answers the forecast model's drift report", async () => {
    const report = await client.drift("forecast");
    assert.equal(report.model, "forecast");
    assert.ok(report.version.length > 0);
    if (report.evaluatedAt === 0) { // never evaluated: nothing measured yet
      assert.match(report.reason, /not evaluated/);
      assert.equal(report.rows, 0);
      assert.equal(report.features.length, 0);
    } else if (/not evaluated/.test(report.reason)) { // too few live rows at the last evaluation
      assert.equal(report.drifted, false);
    } else {
      assert.ok(report.rows > 0 && report.features.length > 0, `evaluated: ${report.rows} rows, ${report.reason}`);
    }
    assert.equal((await client.drift("forecast", { version: report.version })).version, report.version);
  });

  it("names what is wrong in model-quality calls", async () => {
    await rejectsWith(client.reportGroundTruth("ts-sdk-never-sent", { values: [1] }), status.NOT_FOUND, /request_id/);
    await rejectsWith(client.modelPerformance("no_such_model"), status.NOT_FOUND, /no_such_model/);
    await rejectsWith(client.modelPerformance("forecast", { windowS: -1 }), status.INVALID_ARGUMENT, /window_s/);
    await rejectsWith(client.drift("no_such_model"), status.NOT_FOUND, /no_such_model/);
  });
});
