"""SDBERT configuration for `transformers` (custom code: load with `trust_remote_code=True`).

Written by `sdbert export --format hf` beside the weights. Self-contained: it needs `transformers`,
not `sdbert`. The fields are those of `sdbert.config.SDBertConfig` (BERT/BigBird names), so the
same `config.json` also loads back into sdbert.
"""

from transformers import PretrainedConfig

_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh", "silu")


class SDBertConfig(PretrainedConfig):
    r"""Architecture of an SDBERT encoder and its classification head.

    Beyond BERT's fields:
        attention_type (`str`): `"block_sparse"` (BigBird ITC: global first/last blocks, a window of 3
            blocks and `num_random_blocks` random blocks per query block) or `"full"`.
        block_size (`int`): tokens per block; inputs are padded to a multiple inside attention.
        num_random_blocks (`int`): random key blocks per query block.
        attention_seed (`int`): layer `i` draws its random blocks with torch's generator seeded
            `attention_seed + i`, the same pattern in training and evaluation.
        resample_random_blocks (`bool`): draw a new pattern at every training forward instead.
        pooler_activation (`str`): activation between the pooler dense and the classifier.
        classifier_pooling (`str`): `"cls"` (first token) or `"mean"` (mean of the real tokens).
        embedding_size (`int`, *optional*): ALBERT-style factorised embeddings this wide, projected to
            `hidden_size` before the LayerNorm (None: BERT's layout).
    """

    model_type = "sdbert"

    def __init__(
        self,
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=4096,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        initializer_range=0.02,
        pad_token_id=0,
        attention_type="block_sparse",
        block_size=64,
        num_random_blocks=3,
        attention_seed=0,
        resample_random_blocks=False,
        pooler_activation="tanh",
        classifier_pooling="cls",
        classifier_dropout=None,
        embedding_size=None,
        **kwargs,
    ):
        if attention_type not in ("block_sparse", "full"):
            raise ValueError(f"attention_type must be 'block_sparse' or 'full', got {attention_type!r}")
        if classifier_pooling not in ("cls", "mean"):
            raise ValueError(f"classifier_pooling must be 'cls' or 'mean', got {classifier_pooling!r}")
        for name, act in (("hidden_act", hidden_act), ("pooler_activation", pooler_activation)):
            if act not in _ACTIVATIONS:
                raise ValueError(f"{name} must be one of {_ACTIVATIONS}, got {act!r}")
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.attention_type = attention_type
        self.block_size = block_size
        self.num_random_blocks = num_random_blocks
        self.attention_seed = attention_seed
        self.resample_random_blocks = resample_random_blocks
        self.pooler_activation = pooler_activation
        self.classifier_pooling = classifier_pooling
        self.classifier_dropout = classifier_dropout
        self.embedding_size = embedding_size
        super().__init__(pad_token_id=pad_token_id, **kwargs)
