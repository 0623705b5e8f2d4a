"""Carry built models to the lent GPU machine, which cannot download or build them (no weights packages there).

A call to the device tool carries at most 64 MiB, and the FP32 sentence encoder alone is 90 MB, so ``pack``
stores each FP32 initializer of a model's ``model.onnx`` as FP16 and gzips the file; ``unpack`` restores FP32
initializers (the FP16 values, exactly) and the rest of the model directory.  The unpacked model is the built
model with its weights rounded to FP16 (relative change <= 2^-11 per weight); ``gpu_check.py`` measures every
engine against ONNX Runtime on the CPU *on the unpacked file*, so the rounding does not enter the comparisons.
An initializer that FP16 cannot hold (magnitude over 65504) stays FP32.

    python benchmarks/gpu_models.py pack REPO OUT_DIR --models nlp_embed_fp32 vision_classify_fp32
    python benchmarks/gpu_models.py unpack OUT_DIR REPO
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

_MARK = "infer.packed_fp16"  # metadata: the initializers stored as FP16 by pack
_PACKED = "model.onnx.f16.gz"


def pack_model(src: Path, dst: Path) -> tuple[int, int]:
    """Write ``src`` (ONNX) to ``dst`` with FP32 initializers as FP16, gzipped; returns (bytes in, bytes out)."""
    model = onnx.load(str(src))
    packed = []
    for init in model.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        if values.size < 16 or not np.all(np.abs(values) <= 65504):
            continue
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), init.name))
        packed.append(init.name)
    model.metadata_props.add(key=_MARK, value="\n".join(packed))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(dst, "wb", compresslevel=6) as f:
        f.write(model.SerializeToString())
    return src.stat().st_size, dst.stat().st_size


def unpack_model(src: Path, dst: Path) -> None:
    with gzip.open(src, "rb") as f:
        model = onnx.load_from_string(f.read())
    marks = [p for p in model.metadata_props if p.key == _MARK]
    names = set(marks[0].value.split("\n")) if marks else set()
    for init in model.graph.initializer:
        if init.name in names:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    for p in marks:
        model.metadata_props.remove(p)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))


def pack(repo: Path, out: Path, models: list[str]) -> None:
    for name in models:
        src = repo / name
        if not (src / "config.pbtxt").is_file():
            raise SystemExit(f"gpu_models: {src} is not a model directory")
        for f in src.rglob("*"):
            if not f.is_file() or ".engines" in f.parts:
                continue
            target = out / name / f.relative_to(src)
            if f.name == "model.onnx":
                before, after = pack_model(f, target.with_name(_PACKED))
                print(f"{name}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)


def unpack(out: Path, repo: Path) -> list[str]:
    names = []
    for model_dir in sorted(p for p in out.iterdir() if (p / "config.pbtxt").is_file()):
        for f in model_dir.rglob("*"):
            if not f.is_file():
                continue
            target = repo / model_dir.name / f.relative_to(model_dir)
            if f.name == _PACKED:
                unpack_model(f, target.with_name("model.onnx"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
        names.append(model_dir.name)
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("repo", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--models", nargs="+", default=["nlp_embed_fp32", "vision_classify_fp32"])
    b = sub.add_parser("unpack")
    b.add_argument("out", type=Path)
    b.add_argument("repo", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack(args.repo, args.out, args.models)
    else:
        print("unpacked:", ", ".join(unpack(args.out, args.repo)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
