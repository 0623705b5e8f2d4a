/**
 * Tensors as Node.js values, and their V2 wire form.
 *
 * Numeric data travels as one little-endian buffer per tensor (raw_input_contents /
 * raw_output_contents); BYTES as elements each prefixed by a 4-byte little-endian length.
 */
import { endianness } from "node:os";
import type { InferTensorContents } from "./generated/grpc_service";

/** V2 tensor datatypes. */
export type Datatype =
  | "BOOL" | "UINT8" | "UINT16" | "UINT32" | "UINT64" | "INT8" | "INT16" | "INT32" | "INT64"
  | "FP16" | "BF16" | "FP32" | "FP64" | "BYTES";

/** Typed arrays a numeric tensor can hold. */
export type NumericArray =
  | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array | Float32Array | Float64Array;

/** Data of an input tensor: a typed array, or string[] / Buffer[] for BYTES. */
export type TensorData = NumericArray | readonly string[] | readonly Uint8Array[];

/**
 * An input tensor: flat row-major data and its shape. The datatype follows from the array
 * (Float32Array: FP32, BigInt64Array: INT64, Uint8Array: UINT8, string[]: BYTES, ...);
 * give it to send BOOL (Uint8Array of 0/1) or FP16/BF16 (Uint16Array of raw bits).
 */
export interface Tensor {
  data: TensorData;
  shape: readonly number[];
  datatype?: Datatype;
}

/** An output tensor: numeric datatypes decode to typed arrays, BYTES to Buffer[]. */
export interface OutputTensor {
  name: string;
  datatype: Datatype;
  shape: number[];
  data: NumericArray | Buffer[];
}

type ArrayCtor = { new (buffer: ArrayBufferLike): NumericArray; readonly BYTES_PER_ELEMENT: number };

const ARRAYS: Readonly<Record<Exclude<Datatype, "BYTES">, ArrayCtor>> = {
  BOOL: Uint8Array, UINT8: Uint8Array, UINT16: Uint16Array, UINT32: Uint32Array, UINT64: BigUint64Array,
  INT8: Int8Array, INT16: Int16Array, INT32: Int32Array, INT64: BigInt64Array,
  FP16: Uint16Array, BF16: Uint16Array, FP32: Float32Array, FP64: Float64Array,
};

const LITTLE_ENDIAN = endianness() === "LE";

function defaultDatatype(data: NumericArray): Datatype {
  if (data instanceof Float32Array) return "FP32";
  if (data instanceof Float64Array) return "FP64";
  if (data instanceof Int32Array) return "INT32";
  if (data instanceof BigInt64Array) return "INT64";
  if (data instanceof Uint8Array) return "UINT8";
  if (data instanceof Int8Array) return "INT8";
  if (data instanceof Int16Array) return "INT16";
  if (data instanceof Uint16Array) return "UINT16";
  if (data instanceof Uint32Array) return "UINT32";
  return "UINT64";
}

function elementCount(name: string, shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`input '${name}': bad shape [${shape.join(", ")}]`);
    n *= d;
  }
  return n;
}

function swapInPlace(bytes: Buffer, itemSize: number): void {
  if (itemSize === 2) bytes.swap16();
  else if (itemSize === 4) bytes.swap32();
  else if (itemSize === 8) bytes.swap64();
}

/** The bytes as they go on the wire: a byte-swapped copy on a big-endian host. */
function toLittleEndian(bytes: Buffer, itemSize: number): Buffer {
  if (LITTLE_ENDIAN || itemSize === 1) return bytes;
  const copy = Buffer.from(bytes);
  swapInPlace(copy, itemSize);
  return copy;
}

function encodeBytes(elements: readonly (string | Uint8Array)[]): Buffer {
  const parts = elements.map((e) => (typeof e === "string" ? Buffer.from(e, "utf8") : e));
  const out = Buffer.allocUnsafe(parts.reduce((n, p) => n + 4 + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    offset = out.writeUInt32LE(p.length, offset);
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** The datatype and raw little-endian bytes of an input tensor. */
export function encodeTensor(name: string, tensor: Tensor): { datatype: Datatype; raw: Buffer } {
  const { data, shape } = tensor;
  const count = elementCount(name, shape);
  if (data.length !== count) {
    throw new RangeError(`input '${name}': shape [${shape.join(", ")}] holds ${count} elements, data has ${data.length}`);
  }
  if (Array.isArray(data)) {
    if (tensor.datatype !== undefined && tensor.datatype !== "BYTES") {
      throw new TypeError(`input '${name}': string[] / Buffer[] data is BYTES, not ${tensor.datatype}`);
    }
    return { datatype: "BYTES", raw: encodeBytes(data as readonly (string | Uint8Array)[]) };
  }
  const array = data as NumericArray;
  const datatype = tensor.datatype ?? defaultDatatype(array);
  if (datatype === "BYTES" || ARRAYS[datatype] === undefined) {
    throw new TypeError(`input '${name}': datatype ${datatype} needs string[] or Buffer[] data`);
  }
  if (ARRAYS[datatype].BYTES_PER_ELEMENT !== array.BYTES_PER_ELEMENT) {
    throw new TypeError(`input '${name}': ${array.constructor.name} cannot carry ${datatype}`);
  }
  const bytes = Buffer.from(array.buffer, array.byteOffset, array.byteLength);
  return { datatype, raw: toLittleEndian(bytes, array.BYTES_PER_ELEMENT) };
}

function decodeBytes(name: string, raw: Uint8Array, count: number): Buffer[] {
  const buf = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  const out: Buffer[] = [];
  let offset = 0;
  while (offset < buf.length) {
    if (offset + 4 > buf.length) throw new RangeError(`output '${name}': truncated BYTES length prefix`);
    const length = buf.readUInt32LE(offset);
    offset += 4;
    if (offset + length > buf.length) throw new RangeError(`output '${name}': BYTES element overruns the buffer`);
    out.push(Buffer.from(buf.subarray(offset, offset + length)));
    offset += length;
  }
  if (out.length !== count) throw new RangeError(`output '${name}': ${out.length} BYTES elements for ${count}`);
  return out;
}

/** Decodes one output's raw little-endian bytes into a typed array (BYTES: Buffer[]). */
export function decodeRaw(name: string, datatype: Datatype, shape: readonly number[], raw: Uint8Array): NumericArray | Buffer[] {
  const count = elementCount(name, shape);
  if (datatype === "BYTES") return decodeBytes(name, raw, count);
  const ctor = ARRAYS[datatype];
  if (ctor === undefined) throw new TypeError(`output '${name}': unknown datatype ${datatype}`);
  if (raw.byteLength !== count * ctor.BYTES_PER_ELEMENT) {
    throw new RangeError(`output '${name}': ${raw.byteLength} bytes for ${count} ${datatype} elements`);
  }
  const owned = new ArrayBuffer(raw.byteLength); // aligned for the typed array, and not shared
  new Uint8Array(owned).set(raw);
  if (!LITTLE_ENDIAN) swapInPlace(Buffer.from(owned), ctor.BYTES_PER_ELEMENT);
  return new ctor(owned);
}

/** Decodes an output sent in typed contents fields instead of raw bytes. */
export function decodeContents(name: string, datatype: Datatype, c: InferTensorContents): NumericArray | Buffer[] {
  switch (datatype) {
    case "BYTES": return c.bytesContents.map((b) => Buffer.from(b));
    case "BOOL": return Uint8Array.from(c.boolContents, (b) => (b ? 1 : 0));
    case "INT8": return Int8Array.from(c.intContents);
    case "INT16": return Int16Array.from(c.intContents);
    case "INT32": return Int32Array.from(c.intContents);
    case "INT64": return BigInt64Array.from(c.int64Contents, (v) => BigInt(v));
    case "UINT8": return Uint8Array.from(c.uintContents);
    case "UINT16": return Uint16Array.from(c.uintContents);
    case "UINT32": return Uint32Array.from(c.uintContents);
    case "UINT64": return BigUint64Array.from(c.uint64Contents, (v) => BigInt(v));
    case "FP32": return Float32Array.from(c.fp32Contents);
    case "FP64": return Float64Array.from(c.fp64Contents);
    default: throw new TypeError(`output '${name}': ${datatype} cannot travel in typed contents`);
  }
}

/** A BYTES tensor's elements as UTF-8 strings. */
export function asStrings(tensor: { data: TensorData | Buffer[] }): string[] {
  if (!Array.isArray(tensor.data)) throw new TypeError("asStrings: not a BYTES tensor");
  return (tensor.data as readonly (string | Uint8Array)[]).map((e) =>
    typeof e === "string" ? e : Buffer.from(e.buffer, e.byteOffset, e.byteLength).toString("utf8"));
}
