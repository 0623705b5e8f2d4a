"""Concrete models the engine ships with: training data generators, builders and evaluation.

Each task package builds a Triton-layout model directory (``config.pbtxt`` plus ``1/model.onnx``);
:mod:`infer.tasks.default_repository` assembles them into the default model repository.
"""
