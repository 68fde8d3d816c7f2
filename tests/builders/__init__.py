"""Test model builders: ``mnn_graph`` writes .mnn graphs op by op with mnnlite's own tables, ``onnx_graph``
builds ONNX graphs for the official converter (test-only code)."""
