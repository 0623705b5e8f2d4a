/**
 * InferClient: promise methods over the generated gRPC stubs, with TLS, bearer-token auth,
 * deadlines and retries (exponential backoff with full jitter, on UNAVAILABLE only).
 */
import {
  type CallOptions, type ChannelCredentials, type ChannelOptions, type ClientUnaryCall, credentials,
  Metadata, type ServiceError, status,
} from "@grpc/grpc-js";
import { InferError } from "./errors";
import {
  GRPCInferenceServiceClient, type InferParameter, type ModelInferRequest, type ModelInferResponse,
  type ModelMetadataResponse, type ServerMetadataResponse,
} from "./generated/grpc_service";
import {
  ControlPlaneClient, type DriftReport, type GroundTruthRequest, type GroundTruthResponse, type ModelPerformance,
} from "./generated/control";
import { HealthCheckResponse_ServingStatus, HealthClient } from "./generated/grpc/health/v1/health";
import { type Datatype, decodeContents, decodeRaw, encodeTensor, type OutputTensor, type Tensor } from "./tensor";

/** PEM contents (not paths), as node:tls takes them. */
export interface TlsOptions {
  /** CA bundle that signed the server's certificate (default: the system's roots). */
  ca?: string | Buffer;
  /** Client certificate chain and key, for mutual TLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Name to check the server's certificate against, when it differs from the target's host. */
  serverName?: string;
}

export interface ClientOptions {
  /** Connect with TLS (true: system roots, no client certificate). Default: plaintext. */
  tls?: TlsOptions | true;
  /** Sent as `authorization: Bearer <token>` on every call (see the server's --auth-tokens). */
  token?: string;
  /** Deadline of each call in milliseconds, retries included (default: none). */
  deadlineMs?: number;
  /** Further attempts after an UNAVAILABLE answer (default 3; 0 turns retrying off). */
  retries?: number;
  /** Extra grpc-js channel options; message sizes are unlimited unless set here. */
  channelOptions?: ChannelOptions;
}

/** A request or response parameter value; integers travel as int64, other numbers as double. */
export type ParamValue = boolean | number | string | bigint;

export interface InferOptions {
  /** Outputs to return (default: all). */
  outputs?: readonly string[];
  /** Model version (default: the newest ready one). */
  version?: string;
  /** Deadline of this call in milliseconds (default: the client's). */
  deadlineMs?: number;
  /** Request parameters, e.g. {priority: 1, timeout: 50_000} (microseconds). */
  parameters?: Readonly<Record<string, ParamValue>>;
  /** Request id, echoed in the result. */
  id?: string;
}

export interface InferResult {
  modelName: string;
  modelVersion: string;
  id: string;
  parameters: Record<string, ParamValue>;
  /** Output tensors by name. */
  outputs: Record<string, OutputTensor>;
}

export type HealthStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

/** A ground-truth class: a class name, an integer, or a boolean (sent as `true` / `false`). */
export type Label = string | number | bigint | boolean;

/** The ground truth of one earlier request: exactly one of `labels` and `values`. */
export interface GroundTruth {
  /** Classification: one class per request row. */
  labels?: readonly Label[];
  /** Regression: one number per row, or rows x horizon (row-major) for a forecaster, e.g. a `mean` output's data. */
  values?: ArrayLike<number>;
}

/** Per-call options of the control-plane methods. */
export interface CallDeadline {
  /** Deadline of this call in milliseconds (default: the client's). */
  deadlineMs?: number;
}

export interface ModelPerformanceOptions extends CallDeadline {
  /** Model version (default: the newest watched one). */
  version?: string;
  /** The last this many seconds (default 0: since the version was loaded). */
  windowS?: number;
}

export interface DriftOptions extends CallDeadline {
  /** Model version (default: the newest watched one). */
  version?: string;
}

/** The last overload of a generated unary method: (request, metadata, options, callback). */
type UnaryMethod<Req, Res> = (
  request: Req, metadata: Metadata, options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

type Stub = GRPCInferenceServiceClient;
/** Names of the inference service's unary RPCs (camelCase: "modelConfig", "modelStatistics", ...). */
export type UnaryRpc = {
  [K in keyof Stub]: Stub[K] extends UnaryMethod<infer _Req, infer _Res> ? K : never;
}[keyof Stub];
type RequestOf<K extends UnaryRpc> = Stub[K] extends UnaryMethod<infer Req, infer _Res> ? Req : never;
type ResponseOf<K extends UnaryRpc> = Stub[K] extends UnaryMethod<infer _Req, infer Res> ? Res : never;

type ControlStub = ControlPlaneClient;
/** Names of the control plane's unary RPCs (camelCase: "getModel", "setDeployment", "reportGroundTruth", ...). */
export type ControlRpc = {
  [K in keyof ControlStub]: ControlStub[K] extends UnaryMethod<infer _Req, infer _Res> ? K : never;
}[keyof ControlStub];
type ControlRequestOf<K extends ControlRpc> = ControlStub[K] extends UnaryMethod<infer Req, infer _Res> ? Req : never;
type ControlResponseOf<K extends ControlRpc> = ControlStub[K] extends UnaryMethod<infer _Req, infer Res> ? Res : never;

const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 5_000;

function channelCredentials(tls: ClientOptions["tls"]): ChannelCredentials {
  if (tls === undefined) return credentials.createInsecure();
  const t: TlsOptions = tls === true ? {} : tls;
  const pem = (v: string | Buffer | undefined) => (v === undefined ? null : Buffer.from(v));
  return credentials.createSsl(pem(t.ca), pem(t.key), pem(t.cert));
}

function toParameter(key: string, value: ParamValue): InferParameter {
  switch (typeof value) {
    case "boolean": return { parameterChoice: { $case: "boolParam", value } };
    case "string": return { parameterChoice: { $case: "stringParam", value } };
    case "bigint":
      if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new RangeError(`parameter '${key}': ${value} is beyond 2^53`);
      }
      return { parameterChoice: { $case: "int64Param", value: Number(value) } };
    case "number":
      return Number.isInteger(value)
        ? { parameterChoice: { $case: "int64Param", value } }
        : { parameterChoice: { $case: "doubleParam", value } };
    default: throw new TypeError(`parameter '${key}': unsupported value ${String(value)}`);
  }
}

function toParameters(params: Readonly<Record<string, ParamValue>> | undefined): Record<string, InferParameter> {
  const out: Record<string, InferParameter> = {};
  for (const [key, value] of Object.entries(params ?? {})) out[key] = toParameter(key, value);
  return out;
}

function fromParameters(params: Record<string, InferParameter>): Record<string, ParamValue> {
  const out: Record<string, ParamValue> = {};
  for (const [key, p] of Object.entries(params)) {
    if (p.parameterChoice !== undefined) out[key] = p.parameterChoice.value;
  }
  return out;
}

function decodeResponse(response: ModelInferResponse): InferResult {
  const outputs: Record<string, OutputTensor> = {};
  const raw = response.rawOutputContents;
  response.outputs.forEach((o, i) => {
    const datatype = o.datatype as Datatype;
    const data = raw.length > 0
      ? decodeRaw(o.name, datatype, o.shape, raw[i] ?? Buffer.alloc(0))
      : decodeContents(o.name, datatype, o.contents ?? emptyContents());
    outputs[o.name] = { name: o.name, datatype, shape: [...o.shape], data };
  });
  return {
    modelName: response.modelName, modelVersion: response.modelVersion, id: response.id,
    parameters: fromParameters(response.parameters), outputs,
  };
}

function emptyContents() {
  return { boolContents: [], intContents: [], int64Contents: [], uintContents: [], uint64Contents: [],
    fp32Contents: [], fp64Contents: [], bytesContents: [] };
}

function labelText(label: Label, index: number): string {
  switch (typeof label) {
    case "string": return label;
    case "boolean": return label ? "true" : "false";
    case "bigint": return label.toString();
    case "number":
      if (!Number.isFinite(label)) throw new RangeError(`labels[${index}]: ${label} is not a class`);
      return String(label);
    default: throw new TypeError(`labels[${index}]: unsupported value ${String(label)}`);
  }
}

function groundTruthRequest(requestId: string, truth: GroundTruth): GroundTruthRequest {
  const { labels, values } = truth ?? {};
  if ((labels === undefined) === (values === undefined)) {
    throw new TypeError("reportGroundTruth: give exactly one of labels (classification) and values (regression)");
  }
  return {
    requestId,
    labels: labels === undefined ? [] : labels.map(labelText),
    values: values === undefined ? [] : Array.from(values, Number),
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A client of one infer server (or any Open Inference Protocol / KServe V2 gRPC server). */
export class InferClient {
  /** The generated stub, for RPCs this class does not wrap (prefer `call`, which adds auth and retries). */
  readonly stub: GRPCInferenceServiceClient;
  /** The generated stub of infer's control plane (prefer `controlCall`, which adds auth and retries). */
  readonly controlStub: ControlPlaneClient;
  private readonly healthStub: HealthClient;
  private readonly token: string | undefined;
  private readonly deadlineMs: number | undefined;
  private readonly retries: number;

  /** @param target "host:port" (or any grpc-js target, e.g. "dns:///infer.svc:8001") */
  constructor(target: string, options: ClientOptions = {}) {
    const creds = channelCredentials(options.tls);
    const channelOptions: ChannelOptions = {
      "grpc.max_receive_message_length": -1,
      "grpc.max_send_message_length": -1,
      ...(options.tls !== undefined && options.tls !== true && options.tls.serverName !== undefined
        ? { "grpc.ssl_target_name_override": options.tls.serverName } : {}),
      ...options.channelOptions,
    };
    this.stub = new GRPCInferenceServiceClient(target, creds, channelOptions);
    this.healthStub = new HealthClient(target, creds, channelOptions);
    this.controlStub = new ControlPlaneClient(target, creds, channelOptions);
    this.token = options.token;
    this.deadlineMs = options.deadlineMs;
    this.retries = options.retries ?? 3;
  }

  /** True while the server process runs. */
  async serverLive(): Promise<boolean> {
    return (await this.call("serverLive", {})).live;
  }

  /** True once every model that should be loaded is ready. */
  async serverReady(): Promise<boolean> {
    return (await this.call("serverReady", {})).ready;
  }

  /** True when the model (the newest ready version, or `version`) can serve. */
  async modelReady(name: string, version = ""): Promise<boolean> {
    return (await this.call("modelReady", { name, version })).ready;
  }

  /** Server name, version and protocol extensions. */
  async serverMetadata(): Promise<ServerMetadataResponse> {
    return this.call("serverMetadata", {});
  }

  /** The model's versions, platform, and inputs and outputs (name, datatype, shape; -1 = variable). */
  async modelMetadata(name: string, version = ""): Promise<ModelMetadataResponse> {
    return this.call("modelMetadata", { name, version });
  }

  /** Runs the model on `inputs` (by name) and answers its outputs decoded into typed arrays. */
  async infer(model: string, inputs: Readonly<Record<string, Tensor>>, options: InferOptions = {}): Promise<InferResult> {
    const request: ModelInferRequest = {
      modelName: model, modelVersion: options.version ?? "", id: options.id ?? "",
      parameters: toParameters(options.parameters), inputs: [], rawInputContents: [],
      outputs: (options.outputs ?? []).map((name) => ({ name, parameters: {} })),
    };
    for (const [name, tensor] of Object.entries(inputs)) {
      const { datatype, raw } = encodeTensor(name, tensor);
      request.inputs.push({ name, datatype, shape: [...tensor.shape], parameters: {} });
      request.rawInputContents.push(raw);
    }
    return decodeResponse(await this.call("modelInfer", request, options.deadlineMs));
  }

  /** grpc.health.v1 Check: "" = liveness, "ready" = readiness, "model/<name>" = one model. */
  async health(service = ""): Promise<HealthStatus> {
    const check = this.healthStub.check.bind(this.healthStub) as UnaryMethod<{ service: string }, { status: number }>;
    const response = await this.withRetries(check, { service }, undefined);
    return (HealthCheckResponse_ServingStatus[response.status] ?? "UNKNOWN") as HealthStatus;
  }

  /**
   * Any unary RPC of the inference service by its camelCase name, with this client's token,
   * deadline and retries, e.g. `call("modelConfig", {name: "anomaly", version: ""})`.
   * Requests are the generated message types (their `fromPartial` fills defaults).
   */
  async call<K extends UnaryRpc>(rpc: K, request: RequestOf<K>, deadlineMs?: number): Promise<ResponseOf<K>> {
    return this.unary<RequestOf<K>, ResponseOf<K>>(this.stub, rpc, request, deadlineMs);
  }

  /**
   * The ground truth of an earlier request, by the `id` it carried: `labels` (classification: one class per row;
   * numbers and bigints as integers, booleans as `true` / `false`) or `values` (regression: one per row, or
   * rows x horizon for a forecaster). Answers the version credited and the rows. NOT_FOUND when no remembered
   * prediction has that id (unknown, already credited, or answered by a model that tracks no accuracy).
   */
  async reportGroundTruth(requestId: string, truth: GroundTruth, options: CallDeadline = {}): Promise<GroundTruthResponse> {
    return this.controlCall("reportGroundTruth", groundTruthRequest(requestId, truth), options.deadlineMs);
  }

  /**
   * Online accuracy from the reported ground truth over the last `windowS` seconds (default: since the version
   * was loaded): accuracy, precision, recall and F1 (classification) or MAE and RMSE (regression); figures that do
   * not apply, or lack samples, are NaN. FAILED_PRECONDITION for a model that tracks no accuracy.
   */
  async modelPerformance(model: string, options: ModelPerformanceOptions = {}): Promise<ModelPerformance> {
    return this.controlCall("getModelPerformance",
      { model, version: options.version ?? "", windowS: options.windowS ?? 0 }, options.deadlineMs);
  }

  /**
   * The latest evaluation of the version's live inputs against its drift reference (`evaluatedAt` 0: not
   * evaluated yet). FAILED_PRECONDITION for a model without a drift reference.
   */
  async drift(model: string, options: DriftOptions = {}): Promise<DriftReport> {
    return this.controlCall("getDrift", { model, version: options.version ?? "", windowS: 0 }, options.deadlineMs);
  }

  /**
   * Any unary RPC of the control plane by its camelCase name, with this client's token, deadline and retries,
   * e.g. `controlCall("listDeployments", {})`.
   */
  async controlCall<K extends ControlRpc>(rpc: K, request: ControlRequestOf<K>, deadlineMs?: number): Promise<ControlResponseOf<K>> {
    return this.unary<ControlRequestOf<K>, ControlResponseOf<K>>(this.controlStub, rpc, request, deadlineMs);
  }

  /** Closes the channels; calls in flight are cancelled. */
  close(): void {
    this.stub.close();
    this.healthStub.close();
    this.controlStub.close();
  }

  /** One unary RPC of a generated stub, by name (`call` and `controlCall` type the name and messages). */
  private unary<Req, Res>(stub: object, rpc: string, request: Req, deadlineMs: number | undefined): Promise<Res> {
    const method = (stub as Record<string, UnaryMethod<Req, Res>>)[rpc].bind(stub);
    return this.withRetries(method, request, deadlineMs);
  }

  private async withRetries<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, deadlineMs: number | undefined): Promise<Res> {
    const ms = deadlineMs ?? this.deadlineMs;
    const deadline = ms !== undefined && ms > 0 ? Date.now() + ms : undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once(method, request, deadline);
      } catch (err) {
        const error = InferError.from(err);
        if (error.code !== status.UNAVAILABLE || attempt >= this.retries) throw error;
        const delay = Math.random() * Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt); // full jitter
        if (deadline !== undefined && Date.now() + delay >= deadline) throw error;
        await sleep(delay);
      }
    }
  }

  private once<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, deadline: number | undefined): Promise<Res> {
    const metadata = new Metadata();
    if (this.token !== undefined) metadata.set("authorization", `Bearer ${this.token}`);
    const options: Partial<CallOptions> = deadline === undefined ? {} : { deadline: new Date(deadline) };
    return new Promise((resolve, reject) => {
      method(request, metadata, options, (error, response) => (error ? reject(error) : resolve(response)));
    });
  }
}
