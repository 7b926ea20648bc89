"""Export a classifier to a Hugging Face folder (`export_hf`); ONNX is `sdbert.export.onnx`.

**Hugging Face** (`export_hf`). The folder holds `config.json`, `model.safetensors`,
`tokenizer.json` and `tokenizer_config.json`, and loads offline with plain `transformers`
(`AutoModelForSequenceClassification`, `AutoTokenizer`, `pipeline("text-classification")`; the
labels come from `id2label`). Two forms:

* **custom code** (`architecture="sdbert"`): the hub's remote-code convention. The folder also
  holds `configuration_sdbert.py` and `modeling_sdbert.py` (copied from `sdbert/export/remote/`:
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

"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch import nn

from sdbert.checkpoint import read_config
from sdbert.config import InferenceSettings, SDBertConfig
from sdbert.data.tokenization import mask_token, pad_token_id, save_tokenizer, special_tokens
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
from sdbert.export.remote import AUTO_MAP, REMOTE_CODE_FILES

logger = logging.getLogger(__name__)

HFArchitecture = Literal["auto", "bert", "big_bird", "sdbert"]
HF_ARCHITECTURES = ("auto", "bert", "big_bird", "sdbert")
# The class each Hugging Face form loads as; "sdbert" is ours, through the custom code.
HF_CLASSES = {"bert": "BertForSequenceClassification", "big_bird": "BigBirdForSequenceClassification",
              "sdbert": "SDBertForSequenceClassification"}
# Our config fields that describe a training run or a local path, not the model a user downloads.
_LOCAL_CONFIG_FIELDS = ("gradient_checkpointing", "init_checkpoint")


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
    if getattr(config, "embedding_size", None) is not None:
        raise ConfigError(f"no stock Hugging Face form: this model's embeddings are factorised "
                          f"({config.embedding_size} wide, projected to the hidden size), BERT's and BigBird's are "
                          "not (--hf-architecture sdbert, the custom code, keeps it exact)")
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
    if (getattr(config, "classifier_pooling", "cls") != "cls" or runs_sparse(config)
            or getattr(config, "embedding_size", None) is not None):
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
    ours = config.to_dict() | (settings.to_config_dict() if settings is not None else {})
    out = {k: v for k, v in ours.items() if k not in _LOCAL_CONFIG_FIELDS}
    out.update(architectures=[HF_CLASSES["sdbert"]], auto_map=dict(AUTO_MAP),
               label2id={label: i for i, label in sorted(config.id2label.items())})
    return out


def write_remote_code(folder: Path) -> None:
    """Copy the custom-code modules (`sdbert/export/remote/`) into `folder`, byte for byte."""

    templates = files("sdbert.export.remote")
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
        "mask_token": mask_token(tokenizer),
    }
    if names["cls_token"] == "<s>":  # RoBERTa-style template: <s> ... </s>
        names.update(bos_token="<s>", eos_token=names["sep_token"])
    out.update({k: v for k, v in names.items() if v is not None})
    return out


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
            save_tokenizer(tokenizer, tmp)
            (tmp / "tokenizer_config.json").write_text(
                json.dumps(hf_tokenizer_config(tokenizer, config, settings), indent=2) + "\n")
        if verify:
            result.max_abs_diff = verify_hf(model, tmp, tokenizer)

    write_folder(Path(out_dir), write, overwrite=overwrite)
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
    transformers = require_extra("transformers", "hf")
    config: SDBertConfig = model.config
    remote_code = "auto_map" in read_config(Path(folder))
    if remote_code:
        lengths = probe_lengths(config)
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
            diff = max(diff, (got - torch_logits(model, ids, mask)).abs().max().item())
        tok = None
        if tokenizer is not None:  # AutoTokenizer reads the config too, custom code included
            tok = transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=remote_code)
    if not diff < TOLERANCE:
        raise CheckpointError(f"the exported Hugging Face model disagrees with ours (max abs diff {diff:.2e})")
    text = "A slow start, but the last hour is wonderful."
    if tok is not None and tok(text)["input_ids"] != tokenizer.encode(text).ids:
        raise CheckpointError("the exported tokenizer encodes text differently from ours")
    return diff



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

