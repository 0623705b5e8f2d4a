// The tensor codec alone: no sockets.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeRaw, encodeTensor, type NumericArray } from "../src/tensor";
import { asStrings } from "../src/index";

const SAMPLES: Array<[string, NumericArray]> = [
  ["FP32", Float32Array.of(1.5, -2, 3.25, Number.POSITIVE_INFINITY)],
  ["FP64", Float64Array.of(1e300, -0.5, Math.PI, 0)],
  ["INT8", Int8Array.of(-128, 127, 0, 1)],
  ["INT16", Int16Array.of(-32768, 32767, 0, 1)],
  ["INT32", Int32Array.of(-(2 ** 31), 2 ** 31 - 1, 0, 1)],
  ["INT64", BigInt64Array.of(-(2n ** 63n), 2n ** 63n - 1n, 0n, 1n)],
  ["UINT8", Uint8Array.of(0, 255, 1, 2)],
  ["UINT16", Uint16Array.of(0, 65535, 1, 2)],
  ["UINT32", Uint32Array.of(0, 2 ** 32 - 1, 1, 2)],
  ["UINT64", BigUint64Array.of(0n, 2n ** 64n - 1n, 1n, 2n)],
];

describe("tensor codec", () => {
  for (const [datatype, data] of SAMPLES) {
    it(`round-trips ${datatype} as little-endian raw bytes`, () => {
      const encoded = encodeTensor("x", { data, shape: [2, 2] });
      assert.equal(encoded.datatype, datatype);
      assert.equal(encoded.raw.length, data.byteLength);
      const decoded = decodeRaw("x", encoded.datatype, [2, 2], encoded.raw);
      assert.equal(decoded.constructor, data.constructor);
      assert.deepEqual(decoded, data);
    });
  }

  it("writes little-endian bytes", () => {
    assert.deepEqual([...encodeTensor("x", { data: Int32Array.of(1), shape: [1] }).raw], [1, 0, 0, 0]);
    assert.deepEqual([...encodeTensor("x", { data: Float32Array.of(1), shape: [1] }).raw], [0, 0, 0x80, 0x3f]);
  });

  it("encodes BYTES with 4-byte little-endian length prefixes", () => {
    const { datatype, raw } = encodeTensor("s", { data: ["ab", "", "é"], shape: [3] });
    assert.equal(datatype, "BYTES");
    assert.deepEqual([...raw], [2, 0, 0, 0, 0x61, 0x62, 0, 0, 0, 0, 2, 0, 0, 0, 0xc3, 0xa9]);
    const decoded = decodeRaw("s", "BYTES", [3, 1], raw);
    assert.deepEqual(asStrings({ data: decoded as Buffer[] }), ["ab", "", "é"]);
  });

  it("takes Buffer[] as BYTES and an explicit BOOL datatype", () => {
    assert.equal(encodeTensor("b", { data: [Buffer.from([0, 255])], shape: [1] }).raw.length, 6);
    assert.equal(encodeTensor("f", { data: Uint8Array.of(1, 0), shape: [2], datatype: "BOOL" }).datatype, "BOOL");
  });

  it("encodes a view at its offset, not the whole buffer", () => {
    const view = new Float64Array(Float64Array.of(1, 2, 3, 4).buffer, 8, 2);
    assert.deepEqual(decodeRaw("v", "FP64", [2], encodeTensor("v", { data: view, shape: [2] }).raw), Float64Array.of(2, 3));
  });

  it("decodes from an unaligned buffer", () => {
    const raw = Buffer.alloc(9).subarray(1);
    raw.writeDoubleLE(2.5, 0);
    assert.deepEqual(decodeRaw("u", "FP64", [1], raw), Float64Array.of(2.5));
  });

  it("refuses data that does not fill the shape, naming the input", () => {
    assert.throws(() => encodeTensor("history", { data: Float32Array.of(1, 2, 3), shape: [2, 2] }), /'history'.*4 elements/);
    assert.throws(() => encodeTensor("h", { data: Float32Array.of(1), shape: [-1] }), RangeError);
  });

  it("refuses a datatype the array cannot carry", () => {
    assert.throws(() => encodeTensor("x", { data: Float32Array.of(1), shape: [1], datatype: "FP64" }), TypeError);
    assert.throws(() => encodeTensor("x", { data: ["a"], shape: [1], datatype: "FP32" }), TypeError);
  });

  it("refuses raw output bytes of the wrong size or a broken BYTES prefix", () => {
    assert.throws(() => decodeRaw("y", "FP32", [2], Buffer.alloc(4)), /'y'/);
    assert.throws(() => decodeRaw("y", "BYTES", [1], Buffer.from([9, 0, 0, 0, 1])), /overruns/);
  });
});
