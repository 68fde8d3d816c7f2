"""The official MNN 3.6.1 wheel as the test oracle (test-only code; ``mnn`` is a test dependency).

One place for everything that runs the official tools and runtime:

    oracle.tools    the converter and the offline quantizer (``_tools.mnnconvert`` / ``_tools.mnnquant``
                    in a child Python process), op-type dumps
    oracle.runtime  the official runtime: run a file (Session or Module API, declared or Caffe order),
                    in a fresh child process, timing sessions, per-command traces, MNN's image
                    preprocessing
    oracle.compare  acceptance rules against its outputs (float budget, int8 one-step budget)

The common names are re-exported here: ``import oracle; oracle.run_oracle(path, feeds)``.

Oracle calls: the converter and quantizer run as ``_tools.mnnconvert([...])`` /
``_tools.mnnquant([...])`` in a child Python process (they print a lot and may abort the process).
The wheel's ``mnnconvert``/``mnnquant`` console scripts are never used (telemetry, and mnnquant is
broken in 3.6.1).  Paths given to them must be absolute: they run in a temporary working directory.

Observed MNN 3.6.1 behaviour with the zoo fixtures (``python tools/build_fixtures.py --ops`` prints the
op types of every model):
  * The converter accepted every ONNX op used there.  Mappings worth knowing: Gemm and MatMul with a
    constant operand -> ``Convolution`` (1x1, wrapped in Reshape/ConvertTensor plus a Shape/Rank/
    SliceTf/Unsqueeze/Concat chain that computes the dynamic reshape); activation x activation MatMul
    -> ``MatMul``; GlobalAveragePool -> ``Pooling3D`` (isGlobal); Resize -> ``Interp``; ConvTranspose
    -> ``Deconvolution``; grouped conv (1 < group < C) -> ``Slice`` + one ``Convolution`` per group +
    ``Concat``; PRelu with a [C,1,1] slope -> ``BinaryOp`` LESS/MUL + ``Select``; the Erf GELU
    pattern -> ``UnaryOp`` GELU; Sigmoid/HardSwish/Tanh/... -> ``UnaryOp``; Relu/Clip(0,6) after a
    conv are fused into it (common.relu/relu6); PP-OCR's HardSigmoid -> ``ReLU6`` with
    minValue 0 / maxValue 1 (the ReLU6 op carries its own clamp bounds);
    BatchNormalization folded; LayerNormalization -> ``LayerNorm``; Transpose -> ``Permute``;
    Slice -> ``StridedSlice``; Split -> ``Slice``; Gather -> ``GatherV2``; Reduce* -> ``Reduction``;
    Pad -> ``Padding``; Expand -> ``BroadcastTo``; ConstantOfShape -> ``Fill``; Where -> ``Select``;
    TopK -> ``TopKV2``; Div -> BinaryOp REALDIV; If -> ``If``; Loop, LSTM and GRU -> ``While`` with
    subgraphs (a bidirectional GRU adds a ``Reverse``).
  * Files with subgraphs (While/If) cannot run in the Session API: see run_oracle.
  * LSTM conversion bugs (SIGSEGV without all three outputs, silent T=1 with a symbolic sequence
    length): see zoo_graphs.build_lstm.
  * ``--fp16`` stores conv weights as IDSTQuan type 3 (quanParameter present), not as float.
  * The EMA quantizer rewrites fused ReLU6 as ``relu`` (relu6 never set) and leaves Deconvolution float.
  * The ``--JsonFile`` dump rounds floats to 6 decimal places (an alpha of 1.33e-6 prints as 1e-06):
    fine for op types, useless for bit-exact comparisons.
  * ADMM and the 8-bit ppocr_det variants: see model_zoo.ORACLE_FAILURES / ORACLE_ACCURACY_NOTES.
"""
from .compare import COSINE_MIN, REL_ERR_MAX, assert_close_to_oracle, assert_matches
from .runtime import (InputInfo, OracleSession, has_subgraphs, oracle_input_info, run_oracle,
                      run_oracle_isolated, trace)
from .tools import OracleToolError, convert, convert_onnx, mnn_op_types, quantize

__all__ = ["COSINE_MIN", "REL_ERR_MAX", "assert_close_to_oracle", "assert_matches", "InputInfo",
           "OracleSession", "has_subgraphs", "oracle_input_info", "run_oracle", "run_oracle_isolated", "trace",
           "OracleToolError", "convert", "convert_onnx", "mnn_op_types", "quantize"]
