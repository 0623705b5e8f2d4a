/**
 * Node.js client of the infer gRPC inference server (Open Inference Protocol / KServe V2).
 *
 * ```ts
 * const client = new InferClient("localhost:8001", { token: process.env.INFER_TOKEN });
 * const { outputs } = await client.infer("forecast", { history: { data: Float32Array.from(series), shape: [1, series.length] } });
 * ```
 *
 * The generated message types and stubs are under `infer-client/generated/*`.
 */
export {
  type CallDeadline, type ClientOptions, type ControlRpc, type DriftOptions, type GroundTruth, type HealthStatus,
  InferClient, type InferOptions, type InferResult, type Label, type ModelPerformanceOptions, type ParamValue,
  type TlsOptions, type UnaryRpc,
} from "./client";
export type {
  DriftReport, FeatureDrift, GroundTruthResponse, ModelPerformance, PerformancePoint,
} from "./generated/control";
export { codeName, InferError } from "./errors";
export { asStrings, type Datatype, type NumericArray, type OutputTensor, type Tensor, type TensorData } from "./tensor";
export { status } from "@grpc/grpc-js";
