"""The SDBERT encoder: BERT-style embeddings, post-LN layers, block-sparse or full attention.

Parameter names follow Hugging Face's `BertForSequenceClassification`
(`bert.encoder.layer.0.attention.self.query.weight`, ...), so BERT checkpoints load as they are
and RoBERTa/BigBird ones with a few renames (see `convert.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sdbert.attention import block_sparse_attention, dense_attention
from sdbert.checkpoint import load_model, save_model
from sdbert.config import SDBertConfig
from sdbert.errors import ConfigError
from sdbert.hub import resolve_model_dir

logger = logging.getLogger(__name__)

ACT2FN = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "tanh": torch.tanh,
    "silu": F.silu,
}


def full_attention_fn(q, k, v, *, key_padding_mask, config, layer_idx, seed, dropout_p):
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    return dense_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def block_sparse_attention_fn(q, k, v, *, key_padding_mask, config, layer_idx, seed, dropout_p):
    return block_sparse_attention(
        q, k, v,
        block_size=config.block_size,
        num_random_blocks=config.num_random_blocks,
        key_padding_mask=key_padding_mask,
        seed=seed,
        dropout_p=dropout_p,
    )


# One signature for every attention implementation (Hugging Face's registry idea).
ATTENTION_FUNCTIONS = {"full": full_attention_fn, "block_sparse": block_sparse_attention_fn}


@dataclass
class SequenceClassifierOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class SDBertEmbeddings(nn.Module):
    def __init__(self, config: SDBertConfig):
        super().__init__()
        width = config.embedding_size or config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        # Factorised tables (ALBERT): the sum is projected to the hidden size before the LayerNorm.
        self.projection = None if config.embedding_size is None else nn.Linear(width, config.hidden_size, bias=False)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        if seq_len > self.position_embeddings.num_embeddings:
            raise ConfigError(f"input has {seq_len} tokens but the model has "
                             f"{self.position_embeddings.num_embeddings} positions")
        positions = torch.arange(seq_len, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        if self.projection is not None:
            x = self.projection(x)
        return self.dropout(self.LayerNorm(x))


class SDBertSelfAttention(nn.Module):
    """Projects q/k/v and calls the configured attention function (the kernel knows no modules)."""

    def __init__(self, config: SDBertConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def attention_seed(self) -> int:
        if self.training and self.config.resample_random_blocks:
            return int(torch.randint(0, 2**31 - 1, ()).item())
        return self.config.attention_seed + self.layer_idx

    def forward(self, hidden: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        batch, seq_len, width = hidden.shape
        # (B, S, H * D) -> (B, H, S, D)
        split = lambda t: t.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.query(hidden)), split(self.key(hidden)), split(self.value(hidden))
        attention = ATTENTION_FUNCTIONS[self.config.attention_type]
        context = attention(
            q, k, v,
            key_padding_mask=key_padding_mask,
            config=self.config,
            layer_idx=self.layer_idx,
            seed=self.attention_seed(),
            dropout_p=self.config.attention_probs_dropout_prob if self.training else 0.0,
        )
        return context.transpose(1, 2).reshape(batch, seq_len, width)  # (B, S, H * D)


class SDBertResidualOutput(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): the post-LN block end of BERT."""

    def __init__(self, in_features: int, config: SDBertConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class SDBertAttention(nn.Module):
    def __init__(self, config: SDBertConfig, layer_idx: int):
        super().__init__()
        self.self = SDBertSelfAttention(config, layer_idx)
        self.output = SDBertResidualOutput(config.hidden_size, config)

    def forward(self, hidden, key_padding_mask):
        return self.output(self.self(hidden, key_padding_mask), hidden)


class SDBertIntermediate(nn.Module):
    def __init__(self, config: SDBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))


class SDBertLayer(nn.Module):
    def __init__(self, config: SDBertConfig, layer_idx: int):
        super().__init__()
        self.attention = SDBertAttention(config, layer_idx)
        self.intermediate = SDBertIntermediate(config)
        self.output = SDBertResidualOutput(config.intermediate_size, config)

    def forward(self, hidden, key_padding_mask):
        attended = self.attention(hidden, key_padding_mask)
        return self.output(self.intermediate(attended), attended)


class SDBertEncoder(nn.Module):
    def __init__(self, config: SDBertConfig):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList(SDBertLayer(config, i) for i in range(config.num_hidden_layers))

    def forward(self, hidden, key_padding_mask, output_hidden_states=False):
        states = [hidden] if output_hidden_states else None
        for layer in self.layer:
            if self.config.gradient_checkpointing and self.training:
                hidden = checkpoint(layer, hidden, key_padding_mask, use_reentrant=False)
            else:
                hidden = layer(hidden, key_padding_mask)
            if states is not None:
                states.append(hidden)
        return hidden, tuple(states) if states is not None else None


class SDBertPooler(nn.Module):
    """dense + activation on the first token (or the mean of the real tokens); BERT's pooler and
    RoBERTa/BigBird's head dense."""

    def __init__(self, config: SDBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.pooler_activation]
        self.mean = config.classifier_pooling == "mean"

    def forward(self, hidden, key_padding_mask=None):
        if not self.mean:
            return self.act(self.dense(hidden[:, 0]))
        if key_padding_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            weights = key_padding_mask.to(hidden.dtype).unsqueeze(-1)  # (B, S, 1)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.act(self.dense(pooled))


class SDBertModel(nn.Module):
    def __init__(self, config: SDBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = SDBertEmbeddings(config)
        self.encoder = SDBertEncoder(config)
        self.pooler = SDBertPooler(config)

    def forward(self, input_ids, key_padding_mask=None, token_type_ids=None, output_hidden_states=False):
        """Returns `(sequence_output (B, S, hidden), hidden_states or None)`."""
        hidden = self.embeddings(input_ids, token_type_ids)
        return self.encoder(hidden, key_padding_mask, output_hidden_states)


class SDBertForSequenceClassification(nn.Module):
    """Encoder + pooler + linear classifier. `forward(input_ids, attention_mask)` -> `.logits`."""

    def __init__(self, config: SDBertConfig):
        super().__init__()
        self.config = config
        self.bert = SDBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        # The folder `from_pretrained` read (as in transformers); its tokenizer and settings save with us.
        self.name_or_path: str | None = None
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> SequenceClassifierOutput:
        key_padding_mask = None
        if attention_mask is not None:
            key_padding_mask = attention_mask.bool()
            if bool(key_padding_mask.all()):
                key_padding_mask = None  # nothing to mask: take SDPA's unmasked fast path
        hidden, states = self.bert(input_ids, key_padding_mask, token_type_ids, output_hidden_states)
        logits = self.classifier(self.dropout(self.bert.pooler(hidden, key_padding_mask)))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(logits=logits, loss=loss, hidden_states=states)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def save_pretrained(self, path: str | Path, *, tokenizer=None, settings=None) -> None:
        """`config.json` and `model.safetensors` with the tokenizer and inference settings
        (`sdbert.classifier.InferenceSettings`): those given, else the ones of the folder the model was
        loaded from (`name_or_path`), so a loaded model saves as a whole folder again."""
        save_model(self, path, tokenizer=tokenizer, settings=settings)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, revision: str | None = None,
                        **overrides) -> SDBertForSequenceClassification:
        """Load an sdbert folder or a Hugging Face BERT / RoBERTa / BigBird folder, local or a hub name
        (`org/name`, at `revision`, through huggingface_hub's cache).

        `overrides` replace config fields (e.g. `attention_type="block_sparse"`,
        `max_position_embeddings=4096` to extend positions, `num_labels=2`).
        """
        folder = resolve_model_dir(path, revision=revision)
        model = load_model(cls, folder, **overrides)
        model.name_or_path = str(folder)
        return model


