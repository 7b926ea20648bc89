"""Export a classifier to ONNX (`export_onnx`).

The block-sparse kernel in `attention/block_sparse.py` picks its path in
Python (dense below the fallback length, the fused CPU band kernel, `bool(mask.all())` shortcuts,
a plan built on the CPU per length), which a graph with a dynamic sequence axis cannot express.
The export therefore traces `TraceableClassifier`: the same modules and weights, attention
from `attention/traceable.py` (tensor ops only, random blocks of every length precomputed with the
same seeds, dense-vs-sparse as `torch.cond` -> ONNX `If`, padding to a block multiple inside the
graph). Inputs `input_ids` and `attention_mask` (int64, `(batch, sequence)`, both axes dynamic up
to `max_position_embeddings`), output `logits` `(batch, num_labels)`. The folder also holds our
`config.json` and `tokenizer.json`, which is all `OnnxClassifier` (and `sdbert predict/serve`) need.

`quantize="int8"` then applies onnxruntime's dynamic quantisation (`quantize_dynamic`, `QInt8`
weights): every MatMul/Gemm weight and the embedding tables are stored as int8 with one scale per
tensor, activations are quantised per call, so the file is about 4x smaller and the interface
(inputs, output, dynamic axes) is the fp32 graph's. The graph's metadata records it
(`sdbert.quantization = "int8-dynamic"`, which `OnnxClassifier.quantization` reads). Its logits are
not equal to ours, only close: the self-check compares them with a loose tolerance
(`INT8_TOLERANCE`), and whether the accuracy holds is a question for `sdbert evaluate` on real data.

"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from sdbert.attention.traceable import random_block_table, traceable_block_sparse_attention, traceable_dense_attention
from sdbert.checkpoint import write_config
from sdbert.config import InferenceSettings, SDBertConfig
from sdbert.data.tokenization import save_tokenizer
from sdbert.errors import CheckpointError, ConfigError
from sdbert.export.common import (
    TOLERANCE,
    ExportResult,
    probe_batch,
    probe_lengths,
    require_extra,
    torch_logits,
    write_folder,
)
from sdbert.onnx_runtime import create_session

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
# Dynamic int8 keeps about two significant digits per matmul (127 weight steps, 255 activation
# steps) and the errors add up through the layers, while a graph with wrong weights, masks or axes
# moves the logits by about their own size. So the quantised self-check is loose on purpose: it
# catches a broken graph, not an accuracy change (measure that with `sdbert evaluate`).
INT8_TOLERANCE = (0.25, 0.25)  # (absolute, relative to max |logit|)
QUANTIZATION = {"int8": "int8-dynamic"}


class TraceableClassifier(nn.Module):
    """`SDBertForSequenceClassification`'s evaluation forward with export-friendly attention.

    Shares the wrapped model's modules (no copy of the weights); adds one random-block table per
    layer for block-sparse models. `forward(input_ids, attention_mask) -> logits`.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        config: SDBertConfig = model.config
        self.sparse = config.attention_type == "block_sparse"
        if self.sparse:
            max_blocks = -(-config.max_position_embeddings // config.block_size)
            for i in range(config.num_hidden_layers):
                # Evaluation seeds, as SDBertSelfAttention.attention_seed() gives them outside training.
                table = random_block_table(max_blocks, config.num_random_blocks, config.num_attention_heads,
                                           config.attention_seed + i)
                self.register_buffer(f"random_blocks_{i}", table, persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        config: SDBertConfig = self.model.config
        bert = self.model.bert
        mask = attention_mask.bool()
        hidden = bert.embeddings(input_ids, None)
        batch, seq_len, width = hidden.shape
        heads, head_dim = config.num_attention_heads, config.head_dim
        split = lambda t: t.view(batch, seq_len, heads, head_dim).transpose(1, 2)  # (B, S, H * D) -> (B, H, S, D)
        for i, layer in enumerate(bert.encoder.layer):
            attention = layer.attention.self
            q, k, v = split(attention.query(hidden)), split(attention.key(hidden)), split(attention.value(hidden))
            if self.sparse:
                context = traceable_block_sparse_attention(
                    q, k, v, mask, getattr(self, f"random_blocks_{i}"),
                    block_size=config.block_size, num_random_blocks=config.num_random_blocks)
            else:
                context = traceable_dense_attention(q, k, v, mask)
            context = context.transpose(1, 2).reshape(batch, seq_len, width)  # (B, S, H * D)
            attended = layer.attention.output(context, hidden)
            hidden = layer.output(layer.intermediate(attended), attended)
        return self.model.classifier(bert.pooler(hidden, mask))


def export_onnx(
    model: nn.Module,
    out: str | os.PathLike[str],
    *,
    tokenizer=None,
    settings: InferenceSettings | None = None,
    opset: int | None = None,
    quantize: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
    verify_lengths: tuple[int, ...] | None = None,
) -> ExportResult:
    """Write `model` as an ONNX folder: `model.onnx` + our `config.json` (with the inference `settings`)
    + `tokenizer.json` (when `tokenizer` is given).

    `out` is the folder (a path ending in `.onnx` writes only that file). With `verify`, onnxruntime
    must reproduce our logits (< 1e-4) on padded batches at `verify_lengths` (default: one length in
    the dense regime and one in the sparse regime). `quantize="int8"` stores dynamic int8 weights
    (see the module docstring); its self-check uses `INT8_TOLERANCE`.
    """
    require_extra("onnxscript", "onnx")
    if quantize not in (None, *QUANTIZATION):
        raise ConfigError(f"quantize must be one of {', '.join(QUANTIZATION)}, got {quantize!r}")
    config: SDBertConfig = model.config
    out = Path(out)
    single_file = out.suffix == ".onnx"
    result = ExportResult(out, "onnx", config.attention_type)
    if quantize:
        result.quantization = QUANTIZATION[quantize]
    was_training = model.training
    model.eval()
    try:
        def write(tmp: Path) -> None:
            onnx_path = tmp / (out.name if single_file else ONNX_NAME)
            _write_onnx_graph(model, onnx_path, opset=opset, quantize=quantize,
                              verify_lengths=verify_lengths, verify=verify)
            if not single_file:
                _write_onnx_companions(model, tmp, tokenizer, settings)
            if verify:
                result.max_abs_diff = verify_onnx(model, onnx_path, verify_lengths,
                                                  tolerance=INT8_TOLERANCE if quantize else (TOLERANCE, 0.0))

        if single_file:
            _write_single_file(out, write, overwrite=overwrite)
        else:
            write_folder(out, write, overwrite=overwrite)
    finally:
        model.train(was_training)
    return result


def _write_onnx_graph(model: nn.Module, onnx_path: Path, *, opset: int | None, quantize: str | None,
                      verify_lengths: tuple[int, ...] | None, verify: bool) -> None:
    # Each stage takes from seconds to minutes on a CPU: say which one runs (the CLI shows INFO lines).
    logger.info("export: tracing the model into an ONNX graph")
    if not quantize:
        _torch_onnx_export(model, onnx_path, opset)
        if verify:
            logger.info("export: checking the graph's logits against the model's in onnxruntime")
        return
    fp32_path = onnx_path.with_name("fp32.onnx")
    _torch_onnx_export(model, fp32_path, opset)
    if verify:  # the fp32 graph must be exact before its quantisation is worth checking
        logger.info("export: checking the fp32 graph's logits against the model's in onnxruntime")
        verify_onnx(model, fp32_path, verify_lengths)
    logger.info("export: quantising the weights to %s", quantize)
    quantize_onnx(fp32_path, onnx_path)
    fp32_path.unlink()
    if verify:
        logger.info("export: checking the quantised graph's logits in onnxruntime")


def _write_onnx_companions(model: nn.Module, folder: Path, tokenizer, settings: InferenceSettings | None) -> None:
    """Our `config.json` and `tokenizer.json` beside the graph, so sdbert predict/serve read the folder."""
    write_config(folder, model.config, settings)
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder)


def _write_single_file(out: Path, write, *, overwrite: bool) -> None:
    """`write` fills a temporary folder beside `out`; its `out.name` replaces `out` atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        write(Path(tmp))
        if out.exists() and not overwrite:
            raise ConfigError(f"{out} exists; pass --overwrite to replace it")
        os.replace(Path(tmp) / out.name, out)


def _torch_onnx_export(model: nn.Module, path: Path, opset: int | None) -> None:
    config: SDBertConfig = model.config
    wrapper = TraceableClassifier(model).eval()
    # An example in the sparse regime (both branches are traced either way); batch 2 and length > 1
    # keep torch.export from specialising the dynamic axes to 0/1.
    length = max(2, min(config.max_position_embeddings, config.dense_fallback_length + config.block_size + 1))
    ids, mask = probe_batch(config, length)
    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", min=1, max=config.max_position_embeddings)
    dynamic = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}
    kwargs = {} if opset is None else {"opset_version": opset}
    with _quiet_torch_export(), torch.no_grad():
        try:
            program = torch.onnx.export(wrapper, (ids, mask), input_names=["input_ids", "attention_mask"],
                                        output_names=["logits"], dynamic_shapes=dynamic, dynamo=True,
                                        verbose=False, **kwargs)
        except Exception as exc:  # the exporter raises many types; one line is what a user can act on
            raise CheckpointError(f"ONNX export failed: {str(exc).strip().splitlines()[0]}") from exc
    # Constant folding merges and drops weights, so the graph's initializers do not count parameters.
    program.model.metadata_props.update({"sdbert.parameters": str(model.num_parameters()),
                                         "sdbert.attention_type": config.attention_type})
    program.save(str(path), external_data=False)


def quantize_onnx(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Dynamic int8 quantisation of the fp32 graph `source` into `target` (same inputs and outputs),
    keeping its metadata and recording `sdbert.quantization`."""
    require_extra("onnxruntime", "onnx")
    # optional extra [onnx]
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime suggests its shape-inference pre-pass through the root logger; our graph's shapes are
    # dynamic, so the pre-pass has nothing to add and the hint is noise.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    except Exception as exc:  # onnxruntime raises many types; one line is what a user can act on
        raise CheckpointError(f"int8 quantisation failed: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        root.setLevel(level)
    graph = onnx.load(str(target))  # quantize_dynamic copies the source's metadata
    metadata = {p.key: p.value for p in graph.metadata_props} | {"sdbert.quantization": QUANTIZATION["int8"]}
    onnx.helper.set_model_props(graph, metadata)
    onnx.save(graph, str(target))


def verify_onnx(model: nn.Module, onnx_path: str | os.PathLike[str], lengths: tuple[int, ...] | None = None,
                *, tolerance: tuple[float, float] = (TOLERANCE, 0.0)) -> float:
    """Max abs difference between onnxruntime's and our logits on padded probe batches; raises
    CheckpointError above `tolerance` = (absolute, relative to our largest |logit|)."""
    config: SDBertConfig = model.config
    if lengths is None:
        lengths = probe_lengths(config)
    session = create_session(onnx_path)
    worst, scale = 0.0, 0.0
    for length in lengths:
        ids, mask = probe_batch(config, length)
        got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        with torch.inference_mode():
            expected = torch_logits(model, ids, mask)
        worst = max(worst, (torch.from_numpy(got) - expected).abs().max().item())
        scale = max(scale, expected.abs().max().item())
    absolute, relative = tolerance
    limit = absolute + relative * scale
    if not worst < limit:
        raise CheckpointError(f"onnxruntime disagrees with PyTorch (max abs diff {worst:.2e}, allowed {limit:.2e})")
    return worst


@contextlib.contextmanager
def _quiet_torch_export():
    """The exporter warns about torchvision, deprecations and specialisations: not the user's concern."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx",
                                                    "torch._export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
