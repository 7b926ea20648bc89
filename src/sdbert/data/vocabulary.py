"""Cut a vocabulary to the pieces a corpus uses most: a student's smaller embedding table.

Most of a small BERT is its embedding table (30,522 x 384 of all-MiniLM-L6-v2's 22.7M parameters), and a
corpus of movie reviews uses a fraction of it. The cut keeps the special tokens, every single-character
piece (`c` and `##c`, or SentencePiece's `▁c`) of the characters the corpus holds, so that any word of
those characters still spells out, and then the most frequent pieces up to the asked size. WordPiece
matches the longest known prefix and Unigram the best-scoring split, and neither choice can change when
pieces it did not use disappear: a word whose pieces were all kept is tokenised exactly as before; a
rarer word is split into shorter kept pieces instead of becoming unknown. The kept pieces keep their
relative order, and the new id of a piece indexes `VocabularyCut.ids` for its old id: the rows of the old
embedding table to keep.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from sdbert.errors import ConfigError


@dataclass(frozen=True)
class VocabularyCut:
    tokenizer: Tokenizer
    """the cut tokenizer: same pipeline, the kept pieces renumbered 0..n-1"""
    ids: list[int]
    """old id of every new id: the rows of the old embedding table, in the new order"""


def piece_counts(tokenizer: Tokenizer, texts: Sequence[str]) -> Counter:
    """How often each piece id occurs in `texts` (special tokens not added)."""
    counts: Counter = Counter()
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        counts.update(encoding.ids)
    return counts


def cut_vocabulary(tokenizer: Tokenizer, texts: Sequence[str], size: int, *,
                   keep: Collection[int] = ()) -> VocabularyCut:
    """`tokenizer` with at most `size` pieces: the specials and `keep` (e.g. the model's pad id), the corpus's
    single characters, then the pieces `texts` use most (ties to the lower id, so the cut is reproducible)."""
    spec = json.loads(tokenizer.to_str())
    vocab = piece_ids(spec["model"])
    needed = set(keep) | {t["id"] for t in spec["added_tokens"]} | fallback_ids(tokenizer, texts, vocab, spec["model"])
    if len(needed) > size:
        raise ConfigError(f"a vocabulary of {size} pieces cannot hold the {len(needed)} special and single-character "
                          f"pieces this corpus needs: ask for at least {len(needed)}")
    ranked = sorted(piece_counts(tokenizer, texts).items(), key=lambda item: (-item[1], item[0]))
    kept = set(needed)
    for piece_id, _ in ranked:
        if len(kept) >= size:
            break
        kept.add(piece_id)
    ids = sorted(kept)
    return VocabularyCut(renumbered(spec, ids), ids)


def piece_ids(model: dict) -> dict[str, int]:
    """piece -> id of a WordPiece (BERT) or Unigram (SentencePiece, e.g. BigBird's) model. A BPE model's
    merges chain through intermediate pieces, so it cannot simply lose some."""
    if model["type"] == "WordPiece":
        return model["vocab"]
    if model["type"] == "Unigram":
        return {piece: i for i, (piece, _score) in enumerate(model["vocab"])}
    raise ConfigError(f"cutting the vocabulary needs a WordPiece (BERT) or Unigram (SentencePiece) tokenizer, this "
                      f"one is {model['type']}")


def fallback_ids(tokenizer: Tokenizer, texts: Sequence[str], vocab: dict[str, int], model: dict) -> set[int]:
    """The pieces any word of `texts` can fall back to: the unknown token, the single-character pieces of
    every character in the normalised texts (`c`, and `##c` or `▁c`), and SentencePiece's byte pieces."""
    normalize = tokenizer.normalizer.normalize_str if tokenizer.normalizer is not None else str
    characters = set().union(*(set(normalize(text)) for text in texts))
    if model["type"] == "WordPiece":
        prefixes, extra = ("", model.get("continuing_subword_prefix") or "##"), [model.get("unk_token")]
    else:  # Unigram: a word starts with the metaspace; byte fallback spells whatever is left
        prefixes, extra = ("", "▁"), ["▁"]
        if model.get("unk_id") is not None:
            extra.append(model["vocab"][model["unk_id"]][0])
        if model.get("byte_fallback"):
            extra += [f"<0x{b:02X}>" for b in range(256)]
    pieces = [prefix + c for c in characters for prefix in prefixes] + [p for p in extra if p]
    return {vocab[piece] for piece in pieces if piece in vocab}


def renumbered(spec: dict, ids: list[int]) -> Tokenizer:
    """The tokenizer of `spec` holding only the pieces of `ids`, renumbered in that order."""
    new_id = {old: new for new, old in enumerate(ids)}
    model = spec["model"]
    if model["type"] == "WordPiece":
        model["vocab"] = {piece: new_id[old] for piece, old in model["vocab"].items() if old in new_id}
    else:
        model["vocab"] = [model["vocab"][old] for old in ids]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    for token in spec["added_tokens"]:
        token["id"] = new_id[token["id"]]
    remap_post_processor(spec.get("post_processor"), new_id)
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
    return Tokenizer.from_str(json.dumps(spec))


def remap_post_processor(processor: dict | None, new_id: dict[int, int]) -> None:
    """The special-token ids a post-processor adds (template, BERT/RoBERTa or a sequence of them), renumbered."""
    if not processor:
        return
    for special in processor.get("special_tokens", {}).values():  # TemplateProcessing
        special["ids"] = [new_id[i] for i in special["ids"]]
    for name in ("cls", "sep"):  # BertProcessing, RobertaProcessing: [token, id]
        if name in processor:
            processor[name][1] = new_id[processor[name][1]]
    for inner in processor.get("processors", []):  # Sequence
        remap_post_processor(inner, new_id)
