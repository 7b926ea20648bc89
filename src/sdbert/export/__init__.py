"""Export a classifier as a Hugging Face folder (`hf.py`, stock classes or the custom code in
`remote/`) or as ONNX (`onnx.py`); `common.py` holds what both share."""

from sdbert.export.common import ExportResult, load_for_export, probe_batch
from sdbert.export.hf import HF_ARCHITECTURES, HF_CLASSES, HFArchitecture, choose_hf_architecture, export_hf, verify_hf
from sdbert.export.onnx import INT8_TOLERANCE, ONNX_NAME, QUANTIZATION, TraceableClassifier, export_onnx, verify_onnx

__all__ = ["HF_ARCHITECTURES", "HF_CLASSES", "INT8_TOLERANCE", "ONNX_NAME", "QUANTIZATION", "ExportResult",
           "HFArchitecture", "TraceableClassifier", "choose_hf_architecture", "export_hf", "export_onnx",
           "load_for_export", "probe_batch", "verify_hf", "verify_onnx"]
