"""Export a classifier to a Hugging Face folder or to ONNX.

**Hugging Face** (`export_hf`). The folder holds `config.json`, `model.safetensors`,
`tokenizer.json` and `tokenizer_config.json`, and loads offline with plain `transformers`
(`AutoModelForSequenceClassification`, `AutoTokenizer`, `pipeline("text-classification")`; the
labels come from `id2label`). Two forms:

* **custom code** (`architecture="sdbert"`): the hub's remote-code convention. The folder also
  holds `configuration_sdbert.py` and `modeling_sdbert.py` (copied from `sdbert/hf_remote/`:
  pure PyTorch, no import of sdbert) and `config.json` an `auto_map`, so
  `from_pretrained(folder, trust_remote_code=True)` builds `SDBertForSequenceClassification` with
  our block-sparse attention (same seeded random blocks, dense fallback and exact padding), our
  pooling and our head: logits equal ours at every length, for every model. `config.json` keeps
  our field names (`model_type="sdbert"`), so sdbert loads the folder back as well;
* **stock classes** (no `trust_remote_code`), where one computes what we compute:
  full-attention models as `BertForSequenceClassification` (our parameter names are BERT's and
  our pooler (dense + `pooler_activation`) + classifier is BERT's pooler (dense + tanh) +
  classifier), or as `BigBirdForSequenceClassification` (`original_full`, or `block_sparse` with the
  same `block_size` and `num_random_blocks`; our pooler dense and classifier become BigBird's
  `classifier.dense` and `classifier.out_proj`, and BigBird's own (unused) `bert.pooler` gets the
  pooler weights too).

Both stock heads read the first token, so a model with `classifier_pooling="mean"` (the default
for sentence-transformers starts such as all-MiniLM-L6-v2) has no stock form (`transformers` has
no sequence classifier that averages the real tokens under a padding mask). Among first-token
models, the head activation decides what is exact: BERT's pooler always applies tanh; BigBird's
classification head applies the encoder's `hidden_act`, with no separate setting. And no stock
class runs our block-sparse attention beyond the dense-fallback length, `(5 + 2 r) * block_size`
tokens (see below). `architecture="auto"` therefore picks a stock class only where it is exact at
every length the model accepts, and the custom code otherwise:

| our model                                          | auto        | stock class on request (exact where)  |
|----------------------------------------------------|-------------|---------------------------------------|
| full, cls, pooler tanh                             | BERT        | -                                     |
| full, cls, pooler = hidden_act                     | BigBird     | -                                     |
| block-sparse, cls, pooler = hidden_act (BigBird)   | custom code | BigBird (up to the fallback length)   |
| block-sparse, cls, pooler tanh (a BERT start)      | custom code | BERT (up to the fallback length)      |
| mean pooling (a sentence-transformers start)       | custom code | refused                               |

A block-sparse model whose positions all fit in the fallback length runs dense attention only and
counts as full. A stock class that is not exact at all (a tanh head as BigBird, a gelu head as
BERT, mean pooling) is refused rather than shipped as a silently different model.
`architecture="bert"` for a block-sparse tanh-head model gives a `BertForSequenceClassification`
that runs full attention at every length (equal to ours up to the fallback length, and to our
model with `attention_type="full"` beyond it).

Hugging Face BigBird differs from ours on long inputs, so exact agreement holds only where both run
dense attention:

* At or below `(5 + 2 r) * block_size` tokens both use full attention; Hugging Face switches the
  model to `original_full` *for good* (`model.bert.set_attention_type`), so after one short batch a
  loaded model stays dense until you call `model.bert.set_attention_type("block_sparse")`.
* Above it, in evaluation mode, Hugging Face draws no random blocks: every random block index is 0
  (`_bigbird_block_rand_mask*` return zeros when `not self.training`), so each middle query block
  attends the first global block `r + 1` times (its keys count `r + 1` times in the softmax) and no
  random block at all. Ours keeps one seeded random pattern per layer (`attention_seed + layer`) for
  training and evaluation alike. In training mode Hugging Face draws new NumPy-random blocks on
  every call. The same weights therefore give different logits on long inputs in the two libraries
  (`benchmarks/hf_bigbird_policy.py` measures what that does to IMDb accuracy).
* Hugging Face masks with a -10000 penalty where we mask exactly; the difference is far below 1e-4.

**ONNX** (`export_onnx`). The block-sparse kernel in `attention/block_sparse.py` picks its path in
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

Both exports write into a temporary folder beside the output and rename it into place, so a failed
export leaves nothing behind, and (by default) check their own result: the Hugging Face folder is
loaded back with `transformers` (custom code with `trust_remote_code=True`, on a dense and a
sparse length) and the ONNX file with onnxruntime, and the logits compared with ours (max abs diff
< 1e-4).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch import nn

from sdbert.attention.traceable import random_block_table, traceable_block_sparse_attention, traceable_dense_attention
from sdbert.classifier import InferenceSettings
from sdbert.config import SDBertConfig
from sdbert.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

HFArchitecture = Literal["auto", "bert", "big_bird", "sdbert"]
HF_ARCHITECTURES = ("auto", "bert", "big_bird", "sdbert")
# The class each Hugging Face form loads as; "sdbert" is ours, through the custom code.
HF_CLASSES = {"bert": "BertForSequenceClassification", "big_bird": "BigBirdForSequenceClassification",
              "sdbert": "SDBertForSequenceClassification"}
# Our config fields that describe a training run or a local path, not the model a user downloads.
_LOCAL_CONFIG_FIELDS = ("gradient_checkpointing", "init_checkpoint")
ONNX_NAME = "model.onnx"
TOLERANCE = 1e-4
# Dynamic int8 keeps about two significant digits per matmul (127 weight steps, 255 activation
# steps) and the errors add up through the layers, while a graph with wrong weights, masks or axes
# moves the logits by about their own size. So the quantised self-check is loose on purpose: it
# catches a broken graph, not an accuracy change (measure that with `sdbert evaluate`).
INT8_TOLERANCE = (0.25, 0.25)  # (absolute, relative to max |logit|)
QUANTIZATION = {"int8": "int8-dynamic"}
# Tokens of real text in the self-check probes start here: ids 0-4 are [PAD], [UNK], [CLS], ... in
# our tokenizers, and a probe should look like text.
_PROBE_MIN_ID = 5


@dataclass
class ExportResult:
    """What an export wrote and how well it matched the source model."""

    path: Path
    format: str
    architecture: str
    max_abs_diff: float | None = None
    quantization: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """where the export does not behave as sdbert does (printed on stderr by `sdbert export`)"""


# --- Hugging Face ---------------------------------------------------------------------------------


def choose_hf_architecture(config: SDBertConfig, requested: HFArchitecture = "auto") -> str:
    """`"bert"`, `"big_bird"` or `"sdbert"` (custom code) for `config`; a ConfigError where a requested
    stock class cannot be exact. `"auto"` picks a stock class only where it is exact at every length
    (see the module docstring), the custom code otherwise."""
    if requested not in HF_ARCHITECTURES:
        raise ConfigError(f"architecture must be one of {', '.join(HF_ARCHITECTURES)}, got {requested!r}")
    if requested == "auto":
        return exact_stock_architecture(config) or "sdbert"
    if requested == "sdbert":
        return requested
    if getattr(config, "classifier_pooling", "cls") != "cls":
        raise ConfigError(f"no stock Hugging Face form: this model classifies from the {config.classifier_pooling} "
                          "of its token states, BERT's and BigBird's heads read the first token "
                          "(--hf-architecture sdbert, the custom code, keeps it exact)")
    if requested == "bert" and config.pooler_activation != "tanh":
        raise ConfigError(f"cannot export as BERT: BERT's pooler applies tanh, this model's head applies "
                          f"{config.pooler_activation} (--hf-architecture sdbert, the custom code, is exact)")
    if requested == "big_bird" and config.pooler_activation != config.hidden_act:
        raise ConfigError(f"cannot export exactly as BigBird: its classification head applies hidden_act "
                          f"({config.hidden_act}) where this model applies {config.pooler_activation}; "
                          "--hf-architecture sdbert (the custom code) is exact, --hf-architecture bert exact "
                          f"up to {config.dense_fallback_length} tokens")
    return requested


def exact_stock_architecture(config: SDBertConfig) -> str | None:
    """The stock class that gives our logits at every length the model accepts, if there is one."""
    if getattr(config, "classifier_pooling", "cls") != "cls" or runs_sparse(config):
        return None
    if config.pooler_activation == "tanh":
        return "bert"
    if config.pooler_activation == config.hidden_act:
        return "big_bird"
    return None


def runs_sparse(config: SDBertConfig) -> bool:
    """Whether some input the model accepts runs block-sparse attention (not the dense fallback)."""
    return config.attention_type == "block_sparse" and config.max_position_embeddings > config.dense_fallback_length


def hf_config(config: SDBertConfig, architecture: str, settings: InferenceSettings | None = None) -> dict[str, Any]:
    """The Hugging Face `config.json` of our config as `architecture` ("bert", "big_bird" or "sdbert")."""
    if architecture == "sdbert":
        return remote_code_config(config, settings)
    out: dict[str, Any] = {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "classifier_dropout": config.classifier_dropout,
        "position_embedding_type": "absolute",
        "num_labels": config.num_labels,
        "id2label": {str(i): label for i, label in sorted(config.id2label.items())},
        "label2id": {label: i for i, label in sorted(config.id2label.items())},
        "problem_type": config.problem_type,
    }
    if architecture == "bert":
        out.update(model_type="bert", architectures=["BertForSequenceClassification"])
    elif architecture == "big_bird":
        out.update(
            model_type="big_bird",
            architectures=["BigBirdForSequenceClassification"],
            attention_type=config.attention_type if config.attention_type == "block_sparse" else "original_full",
            block_size=config.block_size,
            num_random_blocks=config.num_random_blocks,
            use_bias=True,
            rescale_embeddings=False,
        )
    else:
        raise ConfigError(f"unknown architecture {architecture!r}")
    return out


def remote_code_config(config: SDBertConfig, settings: InferenceSettings | None = None) -> dict[str, Any]:
    """`config.json` for the custom code: our fields and inference settings (sdbert loads it too) + `auto_map`
    for transformers."""
    from sdbert.hf_remote import AUTO_MAP

    ours = config.to_dict() | (settings.to_config_dict() if settings is not None else {})
    out = {k: v for k, v in ours.items() if k not in _LOCAL_CONFIG_FIELDS}
    out.update(architectures=[HF_CLASSES["sdbert"]], auto_map=dict(AUTO_MAP),
               label2id={label: i for i, label in sorted(config.id2label.items())})
    return out


def write_remote_code(folder: Path) -> None:
    """Copy the custom-code modules (`sdbert/hf_remote/`) into `folder`, byte for byte."""
    from importlib.resources import files

    from sdbert.hf_remote import REMOTE_CODE_FILES

    templates = files("sdbert.hf_remote")
    for name in REMOTE_CODE_FILES:
        (folder / name).write_bytes(templates.joinpath(name).read_bytes())


def hf_state_dict(model: nn.Module, architecture: str) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face names (the inverse of `convert.state_dict_from_hf`)."""
    state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in model.state_dict().items()}
    if architecture in ("bert", "sdbert"):  # our names are BERT's, and the custom code's
        return state
    out = {}
    for name, tensor in state.items():
        if name.startswith("bert.pooler.dense."):
            part = name.rsplit(".", 1)[1]
            out[f"classifier.dense.{part}"] = tensor
            out[f"bert.pooler.{part}"] = tensor.clone()  # BigBird's own pooler: unused by its head
        elif name.startswith("classifier."):
            out[f"classifier.out_proj.{name.rsplit('.', 1)[1]}"] = tensor
        else:
            out[name] = tensor
    return out


def hf_tokenizer_config(tokenizer, config: SDBertConfig, settings: InferenceSettings | None = None) -> dict[str, Any]:
    """`tokenizer_config.json` that makes `AutoTokenizer` load our `tokenizer.json` as it is."""
    from sdbert.data.tokenization import pad_token_id, special_tokens

    prefix, suffix = special_tokens(tokenizer)
    out: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": (settings or InferenceSettings()).tokens_per_text(config.max_position_embeddings),
        "model_input_names": ["input_ids", "attention_mask"],
        "padding_side": "right",
        # tail truncation is transformers' left side; head+tail has no equivalent there (export_hf warns)
        "truncation_side": "left" if settings is not None and settings.truncation == "tail" else "right",
        "clean_up_tokenization_spaces": False,
    }
    names = {
        "cls_token": tokenizer.id_to_token(prefix[0]) if prefix else None,
        "sep_token": tokenizer.id_to_token(suffix[-1]) if suffix else None,
        "pad_token": tokenizer.id_to_token(pad_token_id(tokenizer)),
        "unk_token": json.loads(tokenizer.to_str()).get("model", {}).get("unk_token"),
        "mask_token": next((t for t in ("[MASK]", "<mask>") if tokenizer.token_to_id(t) is not None), None),
    }
    if names["cls_token"] == "<s>":  # RoBERTa-style template: <s> ... </s>
        names.update(bos_token="<s>", eos_token=names["sep_token"])
    out.update({k: v for k, v in names.items() if v is not None})
    return out


def load_for_export(path: str | os.PathLike[str], *, revision: str | None = None):
    """`(model, tokenizer or None, settings)` of a model folder: what an export writes. A folder without a
    tokenizer still exports (its card and notes say what that leaves out)."""
    from sdbert.data.tokenization import SENTENCEPIECE_NAME, load_tokenizer
    from sdbert.hub import resolve_model_dir
    from sdbert.model import SDBertForSequenceClassification

    folder = resolve_model_dir(path, revision=revision)
    model = SDBertForSequenceClassification.from_pretrained(folder).eval()
    has_tokenizer = any((folder / name).is_file() for name in ("tokenizer.json", SENTENCEPIECE_NAME, "vocab.txt"))
    return model, load_tokenizer(folder) if has_tokenizer else None, InferenceSettings.from_folder(folder)


def export_hf(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    *,
    tokenizer=None,
    settings: InferenceSettings | None = None,
    architecture: HFArchitecture = "auto",
    overwrite: bool = False,
    verify: bool = True,
) -> ExportResult:
    """Write `model` (an `SDBertForSequenceClassification`), with its `tokenizer` and inference `settings`
    when given, as a Hugging Face model folder.

    `architecture="auto"` picks BERT or BigBird where the stock class is exact at every length and the
    custom code (`"sdbert"`, loaded with `trust_remote_code=True`) otherwise; a requested stock class
    that cannot be exact is refused (see the module docstring). With `verify`, the folder is loaded
    back with `transformers` and must give our logits (< 1e-4) on padded batches (stock classes: at
    or below the dense-fallback length; custom code: in the dense and the sparse regime).
    """
    config: SDBertConfig = model.config
    arch = choose_hf_architecture(config, architecture)
    result = ExportResult(Path(out_dir), "hf", arch)
    result.notes.extend(_hf_notes(config, arch))
    if tokenizer is not None and settings is not None and settings.truncation == "head+tail":
        result.warnings.append(
            f"this model reads the head and the tail of a text longer than {settings.max_length or 'its'} tokens "
            "(head+tail truncation); transformers' tokenizers keep only one end, so pipeline() keeps the head and "
            "its probabilities on longer texts differ from `sdbert predict`'s: cut such texts yourself")
    if tokenizer is None:
        result.notes.append("the model has no tokenizer: AutoTokenizer and pipeline() will not work")

    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps(hf_config(config, arch, settings), indent=2) + "\n")
        save_file(hf_state_dict(model, arch), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if arch == "sdbert":
            write_remote_code(tmp)
        if tokenizer is not None:
            from sdbert.data.tokenization import save_tokenizer

            save_tokenizer(tokenizer, tmp)
            (tmp / "tokenizer_config.json").write_text(
                json.dumps(hf_tokenizer_config(tokenizer, config, settings), indent=2) + "\n")
        if verify:
            result.max_abs_diff = verify_hf(model, tmp, tokenizer)

    _write_folder(Path(out_dir), write, overwrite=overwrite)
    return result


def _hf_notes(config: SDBertConfig, arch: str) -> list[str]:
    fallback = config.dense_fallback_length
    if arch == "sdbert":
        notes = ["custom code: transformers loads it with trust_remote_code=True "
                 "(AutoModelForSequenceClassification.from_pretrained, pipeline)"]
        stock = {"tanh": "bert", config.hidden_act: "big_bird"}.get(config.pooler_activation)
        if config.classifier_pooling == "cls" and stock and runs_sparse(config):
            notes.append(f"--hf-architecture {stock} writes a stock {HF_CLASSES[stock]} instead, equal to this "
                         f"model up to {fallback} tokens")
        return notes
    if arch == "bert" and runs_sparse(config):
        return [f"exported as BERT: Hugging Face runs full attention at every length (ours is "
                f"block-sparse above {fallback} tokens)"]
    if arch == "big_bird" and runs_sparse(config):
        return [f"Hugging Face BigBird equals this model up to {fallback} tokens; "
                "above that its evaluation-time random blocks differ (all block 0)"]
    return []


def verify_hf(model: nn.Module, folder: Path, tokenizer=None) -> float:
    """Load `folder` with `transformers` and compare its logits with `model`'s: for a stock class where
    both run dense attention, for the custom code (`auto_map` in `config.json`, loaded with
    `trust_remote_code=True`) at a dense and a sparse length. Returns the max abs difference;
    raises CheckpointError above the tolerance, or when the exported tokenizer differs from `tokenizer`."""
    transformers = _require("transformers", "hf")
    config: SDBertConfig = model.config
    remote_code = "auto_map" in json.loads((Path(folder) / "config.json").read_text())
    if remote_code:
        lengths = _probe_lengths(config)
    else:
        lengths = (min(config.max_position_embeddings, config.dense_fallback_length if
                       config.attention_type == "block_sparse" else 64),)
    diff = 0.0
    with torch.inference_mode(), _quiet_transformers(transformers):
        hf = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(folder), trust_remote_code=remote_code).eval()
        for length in lengths:
            ids, mask = probe_batch(config, length)
            got = hf(input_ids=ids, attention_mask=mask).logits.float()
            diff = max(diff, (got - _torch_logits(model, ids, mask)).abs().max().item())
        tok = None
        if tokenizer is not None:  # AutoTokenizer reads the config too, custom code included
            tok = transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=remote_code)
    if not diff < TOLERANCE:
        raise CheckpointError(f"the exported Hugging Face model disagrees with ours (max abs diff {diff:.2e})")
    text = "A slow start, but the last hour is wonderful."
    if tok is not None and tok(text)["input_ids"] != tokenizer.encode(text).ids:
        raise CheckpointError("the exported tokenizer encodes text differently from ours")
    return diff


# --- ONNX -----------------------------------------------------------------------------------------


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
    _require("onnxscript", "onnx")
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
            _write_folder(out, write, overwrite=overwrite)
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
    from sdbert.checkpoint import write_config

    write_config(folder, model.config, settings)
    if tokenizer is not None:
        from sdbert.data.tokenization import save_tokenizer

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
    _require("onnxruntime", "onnx")
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
    from sdbert.onnx_runtime import create_session

    config: SDBertConfig = model.config
    if lengths is None:
        lengths = _probe_lengths(config)
    session = create_session(onnx_path)
    worst, scale = 0.0, 0.0
    for length in lengths:
        ids, mask = probe_batch(config, length)
        got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        with torch.inference_mode():
            expected = _torch_logits(model, ids, mask)
        worst = max(worst, (torch.from_numpy(got) - expected).abs().max().item())
        scale = max(scale, expected.abs().max().item())
    absolute, relative = tolerance
    limit = absolute + relative * scale
    if not worst < limit:
        raise CheckpointError(f"onnxruntime disagrees with PyTorch (max abs diff {worst:.2e}, allowed {limit:.2e})")
    return worst


# --- shared ---------------------------------------------------------------------------------------


def _probe_lengths(config: SDBertConfig) -> tuple[int, int]:
    """A length in the dense regime and one in the sparse regime (past the fallback, not a block
    multiple), both within the model's positions."""
    return (min(config.max_position_embeddings, 48),
            min(config.max_position_embeddings, config.dense_fallback_length + 2 * config.block_size + 5))


def probe_batch(config: SDBertConfig, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of two: `length` random tokens, and a shorter padded row (`(2, length)` int64 each)."""
    g = torch.Generator().manual_seed(seed)
    low = min(_PROBE_MIN_ID, config.vocab_size - 1)
    ids = torch.randint(low, config.vocab_size, (2, length), generator=g)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, max(1, (2 * length) // 3):] = 0
    return ids.masked_fill(mask == 0, config.pad_token_id), mask


def _torch_logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(ids, attention_mask=mask).logits.float()
    finally:
        model.train(was_training)


def _write_folder(out: Path, write, *, overwrite: bool) -> None:
    """Call `write(tmp)` on a fresh folder beside `out`, then move it onto `out`.

    The fresh folder has `out`'s own name (inside a private temporary parent): transformers caches
    the custom code of a local folder under the folder's name, so the self-check's load leaves the
    entry a later load of `out` reuses, not one per export."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    parent = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    tmp = parent / out.name
    try:
        tmp.mkdir()  # an ordinary folder (the umask's permissions), unlike mkdtemp's private one
        write(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{module} is not installed: pip install 'sdbert[{extra}]'") from None


@contextlib.contextmanager
def _quiet_transformers(transformers):
    """Hide BigBird's 'changing attention type' warning and the loading progress bar of the
    self-check (both expected)."""
    logging_ = transformers.utils.logging
    verbosity, bars = logging_.get_verbosity(), logging_.is_progress_bar_enabled()
    logging_.set_verbosity_error()
    logging_.disable_progress_bar()
    try:
        yield
    finally:
        logging_.set_verbosity(verbosity)
        if bars:
            logging_.enable_progress_bar()


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
