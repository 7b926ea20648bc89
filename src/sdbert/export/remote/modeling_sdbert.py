"""SDBERT for `transformers` (custom code: load with `trust_remote_code=True`).

Written by `sdbert export --format hf` beside the weights. Self-contained: it needs `torch` and
`transformers`, not `sdbert`, and computes what sdbert computes, so logits equal sdbert's:

* BERT-style post-LN encoder; parameter names are those of `BertForSequenceClassification`
  (`bert.encoder.layer.0.attention.self.query.weight`, ...), so the checkpoint is sdbert's own;
* block-sparse attention (BigBird ITC): the sequence is cut into blocks of `block_size` tokens;
  the first and last blocks are global (they attend every block and every block attends them),
  every other block attends its neighbours (a window of 3) and `num_random_blocks` random blocks
  per head. Layer `i` draws them with torch's generator seeded `attention_seed + i`, the same
  pattern in training and evaluation (unlike Hugging Face BigBird, which uses block 0 for every
  random block in evaluation). Inputs of at most `(5 + 2 r) * block_size` tokens run dense
  attention. Padding is masked exactly (no -10000 penalty) and padding query rows return zeros;
* the pooler reads the first token (`classifier_pooling="cls"`) or the mean of the real tokens
  (`"mean"`), then dense + `pooler_activation`, dropout and the classifier.

The attention is the pure-PyTorch reference path of sdbert (`sdbert/attention/block_sparse.py`);
sdbert's faster kernels (C++, FlexAttention) are tested equal to it. Memory stays linear in the
sequence length: each query block attends only its gathered key blocks.
"""

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from .configuration_sdbert import SDBertConfig

ACT2FN = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "tanh": torch.tanh,
    "silu": F.silu,
}


# --- attention kernels: `q, k, v` are (batch, heads, seq, head_dim) ---------------------------------


def bigbird_block_layout(num_blocks: int, num_random_blocks: int, *, num_heads: int = 1, seed: int = 0) -> torch.Tensor:
    """Boolean block layout `(num_heads, num_blocks, num_blocks)`: `[h, i, j]` is true where query
    block `i` of head `h` attends key block `j`. Deterministic for `seed`; dense for `<= 5 + 2 r` blocks."""
    nb, r = num_blocks, num_random_blocks
    if nb <= 5 + 2 * r:
        return torch.ones(num_heads, nb, nb, dtype=torch.bool)
    rows = torch.arange(nb)
    window = (rows[:, None] - rows[None, :]).abs() <= 1  # (nb, nb)
    fixed = window.clone()
    fixed[:, 0] = fixed[:, -1] = True  # every block attends the global blocks
    fixed[0, :] = fixed[-1, :] = True  # the global blocks attend everything
    layout = fixed.expand(num_heads, nb, nb).clone()
    if r > 0:
        # The top-r of uniform scores over the blocks not yet attended: r draws without replacement.
        generator = torch.Generator().manual_seed(seed)
        scores = torch.rand(num_heads, nb, nb, generator=generator)
        scores = scores.masked_fill(fixed, -1.0)
        picks = scores[:, 1:-1].topk(r, dim=-1).indices  # (H, nb-2, r)
        layout[:, 1:-1].scatter_(-1, picks, True)
    return layout


@lru_cache(maxsize=256)
@torch.inference_mode(False)  # a cached tensor made under inference_mode could never join autograd later
def sparse_plan(num_blocks: int, num_random_blocks: int, num_heads: int, seed: int):
    """The layout as index lists: `(global_rows, sparse_rows, key_blocks (H, m, W), key_valid (H, m, W))`.
    Global rows attend every key block in every head; each sparse row lists its key blocks in
    ascending order, padded to the widest row `W` (`key_valid` is false on the padding slots)."""
    layout = bigbird_block_layout(num_blocks, num_random_blocks, num_heads=num_heads, seed=seed)
    is_global = layout.all(dim=-1).all(dim=0)  # (nb,)
    global_rows = is_global.nonzero().flatten()
    sparse_rows = (~is_global).nonzero().flatten()
    sub = layout[:, sparse_rows]  # (H, m, nb)
    width = int(sub.sum(-1).max()) if sparse_rows.numel() else 0
    # A stable descending sort puts each row's attended blocks first, in ascending block order.
    order = torch.sort(sub.to(torch.uint8), dim=-1, descending=True, stable=True)
    key_blocks = order.indices[..., :width].contiguous()
    key_valid = order.values[..., :width].bool().contiguous()
    return global_rows, sparse_rows, key_blocks, key_valid


def dense_attention(q, k, v, *, attn_mask=None, dropout_p=0.0):
    """Softmax attention over all keys; `attn_mask` bool, true = may attend. Rows with no allowed key
    return zeros (not NaN)."""
    if attn_mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    has_key = attn_mask.any(dim=-1, keepdim=True)
    if bool(has_key.all()):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask | ~has_key, dropout_p=dropout_p)
    return out * has_key.to(out.dtype)


def block_sparse_attention(q, k, v, *, block_size, num_random_blocks, key_padding_mask=None, seed=0, dropout_p=0.0):
    """BigBird block-sparse attention; `key_padding_mask` `(batch, seq)` bool, true for real tokens.
    Padding query rows return zeros."""
    batch, heads, seq_len, _ = q.shape
    if key_padding_mask is not None:
        key_padding_mask = key_padding_mask.bool()
        if bool(key_padding_mask.all()):
            key_padding_mask = None  # nothing to hide: the cheaper unmasked calls give the same result
    num_blocks = -(-seq_len // block_size)
    if num_blocks <= 5 + 2 * num_random_blocks:  # too short for sparsity to pay: dense, as BigBird does
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        out = dense_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    else:
        plan = [t.to(q.device) for t in sparse_plan(num_blocks, num_random_blocks, heads, seed)]
        out = _block_sparse(q, k, v, block_size, key_padding_mask, plan, dropout_p)
    if key_padding_mask is None:
        return out
    return out * key_padding_mask[:, None, :, None].to(out.dtype)


def _block_sparse(q, k, v, bs, key_padding_mask, plan, dropout_p):
    batch, heads, seq_len, head_dim = q.shape
    global_rows, sparse_rows = plan[0], plan[1]
    nb = -(-seq_len // bs)
    pad = nb * bs - seq_len
    if pad:
        # Pad inside; the padded keys are masked out and the padded queries cut off at the end.
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        if key_padding_mask is None:
            key_padding_mask = torch.ones(batch, seq_len, dtype=torch.bool, device=q.device)
        key_padding_mask = F.pad(key_padding_mask, (0, pad), value=False)
    out = q.new_empty(batch, heads, nb, bs, head_dim)
    if global_rows.numel():
        out[:, :, global_rows] = _global_rows(q, k, v, bs, global_rows, key_padding_mask, dropout_p)
    if sparse_rows.numel():
        out[:, :, sparse_rows] = _sparse_rows(q, k, v, bs, plan, key_padding_mask, dropout_p)
    return out.view(batch, heads, nb * bs, head_dim)[:, :, :seq_len]


def _global_rows(q, k, v, bs, rows, key_padding_mask, dropout_p):
    """Query blocks that see every key: one dense call over `len(rows) * bs` queries."""
    batch, heads, n, head_dim = q.shape
    qg = q.view(batch, heads, n // bs, bs, head_dim)[:, :, rows]  # (B, H, g, bs, D)
    qg = qg.reshape(batch, heads, -1, head_dim)  # (B, H, g * bs, D)
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    out = dense_attention(qg, k, v, attn_mask=mask, dropout_p=dropout_p)
    return out.view(batch, heads, rows.numel(), bs, head_dim)


def _sparse_rows(q, k, v, bs, plan, key_padding_mask, dropout_p):
    """Each remaining query block attends its own `W` key blocks, gathered per head."""
    _, sparse_rows, key_blocks, key_valid = plan
    batch, heads, n, head_dim = q.shape
    nb = n // bs
    m, width = key_blocks.shape[-2:]
    head_index = torch.arange(heads, device=q.device)[:, None, None]  # (H, 1, 1)
    qs = q.view(batch, heads, nb, bs, head_dim)[:, :, sparse_rows]  # (B, H, m, bs, D)
    kb = k.view(batch, heads, nb, bs, head_dim)
    vb = v.view(batch, heads, nb, bs, head_dim)
    # Advanced indexing over (head, block) gathers each head's own key blocks.
    kg = kb[:, head_index, key_blocks].reshape(batch, heads, m, width * bs, head_dim)
    vg = vb[:, head_index, key_blocks].reshape(batch, heads, m, width * bs, head_dim)
    allowed = None
    if not bool(key_valid.all()):
        allowed = key_valid.repeat_interleave(bs, dim=-1)[None]  # (1, H, m, W * bs)
    if key_padding_mask is not None:
        key_real = key_padding_mask.view(batch, nb, bs)[:, key_blocks]  # (B, H, m, W, bs)
        key_real = key_real.reshape(batch, heads, m, width * bs)
        allowed = key_real if allowed is None else allowed & key_real
    if allowed is None:
        return F.scaled_dot_product_attention(qs, kg, vg, dropout_p=dropout_p)
    # A query block whose keys are all padding attends nothing: run it unmasked and zero it.
    has_key = allowed.any(dim=-1, keepdim=True)  # (B, H, m, 1)
    allowed = allowed | ~has_key
    out = F.scaled_dot_product_attention(qs, kg, vg, attn_mask=allowed[..., None, :], dropout_p=dropout_p)
    return out * has_key[..., None].to(out.dtype)


# --- modules ----------------------------------------------------------------------------------------


class SDBertEmbeddings(nn.Module):
    def __init__(self, config: SDBertConfig):
        super().__init__()
        factorised = getattr(config, "embedding_size", None)
        width = factorised or config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.projection = None if factorised is None else nn.Linear(width, config.hidden_size, bias=False)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        seq_len = input_ids.shape[1]
        if seq_len > self.position_embeddings.num_embeddings:
            raise ValueError(f"input has {seq_len} tokens but the model has "
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
    def __init__(self, config: SDBertConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def attention_seed(self) -> int:
        if self.training and self.config.resample_random_blocks:
            return int(torch.randint(0, 2**31 - 1, ()).item())
        return self.config.attention_seed + self.layer_idx

    def forward(self, hidden, key_padding_mask):
        batch, seq_len, width = hidden.shape
        # (B, S, H * D) -> (B, H, S, D)
        split = lambda t: t.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.query(hidden)), split(self.key(hidden)), split(self.value(hidden))
        dropout_p = self.config.attention_probs_dropout_prob if self.training else 0.0
        if self.config.attention_type == "block_sparse":
            context = block_sparse_attention(q, k, v, block_size=self.config.block_size,
                                             num_random_blocks=self.config.num_random_blocks,
                                             key_padding_mask=key_padding_mask, seed=self.attention_seed(),
                                             dropout_p=dropout_p)
        else:
            mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
            context = dense_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return context.transpose(1, 2).reshape(batch, seq_len, width)  # (B, S, H * D)


class SDBertResidualOutput(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): the post-LN block end of BERT."""

    def __init__(self, in_features: int, config: SDBertConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
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
        self.layer = nn.ModuleList(SDBertLayer(config, i) for i in range(config.num_hidden_layers))

    def forward(self, hidden, key_padding_mask, output_hidden_states=False):
        states = [hidden] if output_hidden_states else None
        for layer in self.layer:
            hidden = layer(hidden, key_padding_mask)
            if states is not None:
                states.append(hidden)
        return hidden, tuple(states) if states is not None else None


class SDBertPooler(nn.Module):
    """dense + activation on the first token, or on the mean of the real tokens."""

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


# --- transformers models ----------------------------------------------------------------------------


class SDBertPreTrainedModel(PreTrainedModel):
    config_class = SDBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = False
    _no_split_modules = ["SDBertLayer"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _key_padding_mask(attention_mask):
    """`(B, S)` bool (true = real token), or None when nothing is padded (SDPA's unmasked path)."""
    if attention_mask is None:
        return None
    mask = attention_mask.bool()
    return None if bool(mask.all()) else mask


class SDBertModel(SDBertPreTrainedModel):
    """The encoder and its pooler: `last_hidden_state` `(B, S, hidden)`, `pooler_output` `(B, hidden)`."""

    def __init__(self, config: SDBertConfig):
        super().__init__(config)
        self.embeddings = SDBertEmbeddings(config)
        self.encoder = SDBertEncoder(config)
        self.pooler = SDBertPooler(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, output_hidden_states=None,
                return_dict=None):
        output_hidden_states = output_hidden_states if output_hidden_states is not None else \
            self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        key_padding_mask = _key_padding_mask(attention_mask)
        hidden = self.embeddings(input_ids, token_type_ids)
        hidden, states = self.encoder(hidden, key_padding_mask, bool(output_hidden_states))
        pooled = self.pooler(hidden, key_padding_mask)
        if not return_dict:
            return (hidden, pooled) + ((states,) if states is not None else ())
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled, hidden_states=states)


class SDBertForSequenceClassification(SDBertPreTrainedModel):
    """Encoder + pooler + dropout + linear classifier; `forward(input_ids, attention_mask)` -> `.logits`."""

    def __init__(self, config: SDBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = SDBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                output_hidden_states=None, return_dict=None):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None if labels is None else self._loss(logits, labels)
        if not return_dict:
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def _loss(self, logits, labels):
        """Hugging Face's rule: regression for one label, cross-entropy for class ids, else multi-label."""
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.squeeze(-1).float())
        if self.config.problem_type == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels).float(), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
