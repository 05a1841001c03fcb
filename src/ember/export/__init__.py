"""`ember export`: a run's model as ONNX (dynamic batch, and sequence axes for token models),
checked against the eager model on test samples; optional int8 by onnxruntime's quantizer."""

from ember.export.onnx import export_onnx

__all__ = ["export_onnx"]
