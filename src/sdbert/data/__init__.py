"""Data for training and evaluation: sources, splits, tokenisation, batching.

The pipeline, one module per step:

- `sources`: `resolve_source` / `load_split` turn a `SRC` (IMDb archive or folder, CSV/JSONL/
  Parquet, or `imdb` to download) into a `TextDataset`; `imdb`, `tables` and `download` do the
  reading, `validate` the checks that name bad rows.
- `splits`: seeded stratified validation split and size limits.
- `tokenization`: checkpoint tokenizers and head/tail/head+tail truncation; `wordpiece`:
  reproducible from-scratch WordPiece training; `encoded`: the on-disk token cache.
- `batching`: length-bucketed (and DDP-sharded) batches, padding to block multiples.

Nothing here knows about models or training; `train` and the CLI put the pieces together.
"""

from sdbert.data.batching import Collator, LengthBucketedBatchSampler, collate
from sdbert.data.cache import cache_dir
from sdbert.data.dataset import TextDataset, content_fingerprint
from sdbert.data.download import IMDB_SHA256, IMDB_SIZE, IMDB_URL, download_imdb
from sdbert.data.encoded import EncodedDataset, encode_dataset, token_cache_key
from sdbert.data.imdb import IMDB_ID2LABEL, IMDB_SPLITS
from sdbert.data.sources import DATA_ENV, Source, load_split, load_splits, resolve_source
from sdbert.data.splits import stratified_subset, train_validation_split
from sdbert.data.tokenization import (
    SPECIAL_TOKENS,
    TRUNCATIONS,
    Truncation,
    encode,
    load_tokenizer,
    pad_token_id,
    save_tokenizer,
    special_tokens,
    tokenizer_hash,
)
from sdbert.data.wordpiece import train_wordpiece_tokenizer

__all__ = [
    "DATA_ENV",
    "IMDB_ID2LABEL",
    "IMDB_SHA256",
    "IMDB_SIZE",
    "IMDB_SPLITS",
    "IMDB_URL",
    "SPECIAL_TOKENS",
    "TRUNCATIONS",
    "Collator",
    "EncodedDataset",
    "LengthBucketedBatchSampler",
    "Source",
    "TextDataset",
    "Truncation",
    "cache_dir",
    "collate",
    "content_fingerprint",
    "download_imdb",
    "encode",
    "encode_dataset",
    "load_split",
    "load_splits",
    "load_tokenizer",
    "pad_token_id",
    "resolve_source",
    "save_tokenizer",
    "special_tokens",
    "stratified_subset",
    "token_cache_key",
    "tokenizer_hash",
    "train_validation_split",
    "train_wordpiece_tokenizer",
]
