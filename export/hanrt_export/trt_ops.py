"""TensorRT's ONNX operator support table, as data (stdlib only: no torch, no onnx).

Source: onnx-tensorrt ``docs/operators.md`` ("Operator Support Matrix": operator, supported?,
supported types). The version read is the **TensorRT 10.15** release of that file (the nearest
10.x whose full text was available to us; the 10.0 header was seen, its table was not),
taken back to **TensorRT 10.3** (the version JetPack 6 ships) with onnx-tensorrt's
``CHANGELOG.md``:

- removed, added after 10.3: ``BlackmanWindow``, ``HammingWindow``, ``HannWindow`` (10.4),
  ``STFT`` (10.5), ``Attention`` (10.14), ``RotaryEmbedding``, ``RMSNormalization``,
  ``TensorScatter`` (10.15);
- the ``FP4`` type removed everywhere (``FLOAT4E2M1`` support arrived in 10.8);
- ``Pow`` restricted to float types (integer exponents arrived in 10.8, integer bases in 10.12).

Facts not settled by those two files, kept as 10.15 states them: ``Gelu`` and ``Mish`` (absent
from the 9.2 table, their addition not in the changelog); restrictions column details. The
opset range is the 10.0 header's "inclusive range of opset 9 to opset 20" (10.3 parses at least
that). Data-type rules stated in the file's header notes, which the lint enforces:

- INT8, INT4 and FP8 are *quantized types*: supported only through quantization from a
  higher-precision float (``QuantizeLinear`` -> ``DequantizeLinear``); ``DequantizeLinear``
  takes INT8/FP8/INT4 data and its ``x_zero_point`` must be zero; ``QuantizeLinear``'s
  ``y_zero_point`` must be 0.
- UINT8 is supported only as a network input or output type (and in 10.3 only through a Cast:
  NVIDIA's answer in TensorRT issue #3985; ``Cast`` is the only operator listing UINT8).
"""

from __future__ import annotations

__all__ = ["TRT_VERSION", "SOURCE", "OPSET_RANGE", "SUPPORTED", "UNSUPPORTED", "QUANTIZED_TYPES",
           "TYPE_NAMES"]

TRT_VERSION = "10.3"
SOURCE = ("onnx-tensorrt docs/operators.md (TensorRT 10.15 release) taken back to 10.3 with "
          "onnx-tensorrt CHANGELOG.md")
OPSET_RANGE = (9, 20)  # default ONNX domain, inclusive

# ONNX TensorProto.DataType number -> the table's type name
TYPE_NAMES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16",
              11: "DOUBLE", 16: "BF16", 17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8", 22: "INT4",
              4: "UINT16", 5: "INT16", 8: "STRING", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64",
              15: "COMPLEX128", 21: "UINT4", 23: "FP4"}
QUANTIZED_TYPES = frozenset({"INT8", "FP8", "INT4"})

_F = "FP32 FP16 BF16"
_FI = _F + " INT32 INT64"
_FIB = _FI + " BOOL"

# operator -> supported types (space-separated in the source, as in the table's column)
_TABLE = {
    "Abs": _FI, "Acos": _F, "Acosh": _F, "Add": _FI, "And": "BOOL", "ArgMax": _FI, "ArgMin": _FI,
    "Asin": _F, "Asinh": _F, "Atan": _F, "Atanh": _F, "AveragePool": _F, "BatchNormalization": _F,
    "Cast": _FIB + " UINT8", "CastLike": _FIB + " UINT8", "Ceil": _F, "Celu": _F, "Clip": _F,
    "Concat": _FIB, "Constant": _FIB + " FP8 INT4", "ConstantOfShape": _FIB + " FP8 INT4",
    "Conv": _F, "ConvTranspose": _F, "Cos": _F, "Cosh": _F, "CumSum": _F,
    "DeformConv": "FP32 FP16", "DepthToSpace": _FI, "DequantizeLinear": "INT8 FP8 INT4",
    "Div": _FI, "Dropout": _F, "Einsum": _F, "Elu": _F, "Equal": _FI, "Erf": _F, "Exp": _F,
    "Expand": _FIB, "EyeLike": _FIB, "Flatten": _FIB, "Floor": _F, "Gather": _FIB,
    "GatherElements": _FIB, "GatherND": _FIB, "Gelu": _FI + " INT8", "Gemm": _F,
    "GlobalAveragePool": _F, "GlobalLpPool": _F, "GlobalMaxPool": _F, "Greater": _FI,
    "GreaterOrEqual": _FI, "GridSample": "FP32 FP16", "GroupNormalization": _F, "GRU": _F,
    "HardSigmoid": _F, "HardSwish": _F, "Hardmax": _F, "Identity": _FIB, "If": _FIB,
    "ImageScaler": _F, "InstanceNormalization": _F, "IsInf": _F, "IsNaN": _FI,
    "LayerNormalization": _F, "LeakyRelu": _F, "Less": _FI, "LessOrEqual": _FI, "Log": _F,
    "LogSoftmax": _F, "Loop": _FIB, "LRN": _F, "LSTM": _F, "LpNormalization": _F, "LpPool": _F,
    "MatMul": _F, "Max": _FI, "MaxPool": _F, "Mean": _FI + " FP8", "MeanVarianceNormalization": _F,
    "Min": _FI, "Mish": "FP32 FP16", "Mod": _FI, "Mul": _FI, "Neg": _FI,
    "NonMaxSuppression": "FP32 FP16", "NonZero": "FP32 FP16", "Not": "BOOL", "OneHot": _FIB,
    "Or": "BOOL", "Pad": _FI, "ParametricSoftplus": _F, "Pow": _F, "PRelu": _F,
    "QuantizeLinear": _F, "RandomNormal": _F, "RandomNormalLike": _F, "RandomUniform": _F,
    "RandomUniformLike": _F, "Range": _FI, "Reciprocal": _F, "ReduceL1": _FI, "ReduceL2": _FI,
    "ReduceLogSum": _FI, "ReduceLogSumExp": _FI, "ReduceMax": _FI, "ReduceMean": _FI,
    "ReduceMin": _FI, "ReduceProd": _FI, "ReduceSum": _FI, "ReduceSumSquare": _FI, "Relu": _FI,
    "Reshape": _FIB, "Resize": _F, "ReverseSequence": _FIB, "RNN": _F, "RoiAlign": "FP32 FP16",
    "Round": _F, "ScaledTanh": _F, "Scan": _F, "Scatter": _FI, "ScatterElements": _FI,
    "ScatterND": _FI, "Selu": _F, "Shape": _FIB, "Shrink": _FI, "Sigmoid": _F, "Sign": _FI,
    "Sin": _F, "Sinh": _F, "Size": _FIB, "Slice": _FIB, "Softmax": _F, "Softplus": _F,
    "Softsign": _F, "SpaceToDepth": _FI, "Split": _FIB, "Sqrt": _F, "Squeeze": _FIB, "Sub": _FI,
    "Sum": _FI, "Tan": _F, "Tanh": _F, "ThresholdedRelu": _F, "Tile": _FIB, "TopK": _FI,
    "Transpose": _FIB, "Trilu": _FIB, "Unsqueeze": _FIB, "Upsample": _F, "Where": _FIB,
    "Xor": "BOOL",
}
SUPPORTED: dict[str, frozenset[str]] = {op: frozenset(t.split()) for op, t in _TABLE.items()}

# Listed with "N" (not supported) in the table, or added only after 10.3.
UNSUPPORTED = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
    "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det",
    "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool",
    "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement",
    "OptionalHasElement", "QLinearConv", "QLinearMatMul", "RegexFullMatch", "SequenceAt",
    "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer",
    "StringSplit", "TfIdfVectorizer", "Unique",
    # added after 10.3 (onnx-tensorrt CHANGELOG.md)
    "BlackmanWindow", "HammingWindow", "HannWindow", "STFT", "Attention", "RotaryEmbedding",
    "RMSNormalization", "TensorScatter",
})
