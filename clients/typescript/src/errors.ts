/**
 * The one error the client throws for a failed call.
 *
 * ```
 * Error
 * └── InferError        a gRPC status other than OK: code (number), codeName, details
 * ```
 *
 * Misuse caught before anything is sent (a shape that does not match the data, an
 * unsupported value) throws the built-in TypeError or RangeError instead.
 */
import { Metadata, status as Status, type ServiceError } from "@grpc/grpc-js";

/** gRPC status names by number ("NOT_FOUND" for 5). */
const CODE_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Status)
    .filter(([, value]) => typeof value === "number")
    .map(([name, value]) => [value as number, name]),
);

/** The name of a gRPC status code, e.g. codeName(3) === "INVALID_ARGUMENT". */
export function codeName(code: number): string {
  return CODE_NAMES.get(code) ?? `UNKNOWN_CODE_${code}`;
}

/** A call that ended with a gRPC status other than OK. */
export class InferError extends Error {
  /** gRPC status code, e.g. 5 (compare with `status.NOT_FOUND` from @grpc/grpc-js). */
  readonly code: number;
  /** Its name, e.g. "NOT_FOUND". */
  readonly codeName: string;
  /** The server's message; infer's names the field at fault. */
  readonly details: string;
  /** Trailing metadata the server sent with the status. */
  readonly metadata: Metadata;

  constructor(code: number, details: string, metadata: Metadata = new Metadata(), options?: ErrorOptions) {
    super(`${codeName(code)}: ${details}`, options);
    this.name = "InferError";
    this.code = code;
    this.codeName = codeName(code);
    this.details = details;
    this.metadata = metadata;
  }

  /** Wraps a grpc-js ServiceError (or any thrown value) as an InferError. */
  static from(err: unknown): InferError {
    if (err instanceof InferError) return err;
    const e = err as Partial<ServiceError>;
    if (typeof e?.code === "number") {
      return new InferError(e.code, e.details ?? e.message ?? "", e.metadata ?? new Metadata(), { cause: err });
    }
    return new InferError(Status.UNKNOWN, String((err as Error)?.message ?? err), new Metadata(), { cause: err });
  }
}
