"""What Hugging Face BigBird's evaluation-time random blocks do to a block-sparse model's accuracy.

Our block-sparse attention keeps one seeded random pattern per layer in training and evaluation
alike. `transformers`' BigBird draws no random blocks in `eval()` mode: every random block index is
0 (`_bigbird_block_rand_mask*` return zeros when `not self.training`), so each middle query block
sees the first global block `r + 1` times and no random block. Above `(5 + 2r) * block_size` tokens
the same weights therefore give different logits in the two libraries. This script measures how
much that matters on labelled data:

1. our model, exactly as `sdbert evaluate` runs it (same subset, tokenisation and batches);
2. the same weights in `transformers.BigBirdModel` (`attention_type="block_sparse"`, eval mode) on
   the same token ids and batches, with our classification head applied to its token states;
3. the same again with `attention_type="original_full"` (dense attention), for scale.

Step 2 uses the encoder, not `BigBirdForSequenceClassification`, because `sdbert export --format hf`
refuses models whose head BigBird cannot express (mean pooling, or a tanh head under a gelu
encoder: the quick preset's models are both). For a model it does export, the exported classifier
equals encoder + our head (that is what its self-check verifies), so the numbers are the same. The
ids are ours (head+tail truncation), so only the attention differs; batches at or below the dense
length run full attention on both sides and must agree to < 1e-4, which the script checks.

    python benchmarks/hf_bigbird_policy.py --model /tmp/quick/sparse_teacher \
        --data /work/shared/data/aclImdb_v1.tar.gz --limit 1000
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch


def hf_encoder(model, attention_type: str):
    """`transformers.BigBirdModel` holding `model`'s encoder weights, in eval mode."""
    import transformers

    from sdbert.export import hf_config, hf_state_dict

    config = transformers.BigBirdConfig(**{**hf_config(model.config, "big_bird"), "attention_type": attention_type})
    encoder = transformers.BigBirdModel(config, add_pooling_layer=False).eval()
    state = {k.removeprefix("bert."): v for k, v in hf_state_dict(model, "big_bird").items()
             if k.startswith("bert.") and not k.startswith("bert.pooler.")}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected or any("position_ids" not in k and "token_type_ids" not in k for k in missing):
        raise RuntimeError(f"weights do not fit BigBirdModel: missing {missing}, unexpected {unexpected}")
    return encoder


def batches(model, ids, batch_size: int):
    """The batches `sdbert evaluate` runs (one block count per batch, padded to a block multiple)."""
    from sdbert.inference import batch_groups

    config = model.config
    for group in batch_groups([len(x) for x in ids], batch_size=batch_size, block_size=config.block_size):
        width = math.ceil(max(len(ids[i]) for i in group) / config.block_size) * config.block_size
        input_ids = torch.full((len(group), width), config.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for row, i in enumerate(group):
            input_ids[row, : len(ids[i])] = torch.as_tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        yield group, input_ids, mask


def main() -> None:
    from sdbert.data import load_split, stratified_subset
    from sdbert.model import SDBertForSequenceClassification
    from sdbert.training.setup import encode

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a block-sparse sdbert model folder")
    parser.add_argument("--data", required=True, help="IMDb archive or any labelled source sdbert reads")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=1000, help="seeded stratified subset (as sdbert evaluate)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output-json", help="also write the result here")
    args = parser.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()  # the "changing attention type" warning is expected here

    model = SDBertForSequenceClassification.from_pretrained(args.model).eval()
    config = model.config
    if config.attention_type != "block_sparse":
        parser.error("the model has full attention: Hugging Face runs it exactly")
    dataset = load_split(args.data, args.split, id2label=config.id2label, progress=False)
    if args.limit < len(dataset):
        dataset = stratified_subset(dataset, args.limit, seed=args.seed)
    max_length = config.max_length or config.max_position_embeddings
    encoded = encode(model, dataset, max_length=max_length, truncation=config.truncation)
    ids = [encoded.sequence(i).tolist() for i in range(len(encoded))]
    labels = torch.as_tensor(encoded.labels)
    dense_length = config.dense_fallback_length

    systems = {"sdbert": None, "hf_block_sparse_eval": hf_encoder(model, "block_sparse"),
               "hf_original_full": hf_encoder(model, "original_full")}
    logits = {name: torch.empty(len(ids), config.num_labels) for name in systems}
    seconds = dict.fromkeys(systems, 0.0)
    dense_check, sparse_examples = 0.0, 0
    with torch.inference_mode():
        for group, input_ids, mask in batches(model, ids, args.batch_size):
            sparse = input_ids.shape[1] > dense_length
            sparse_examples += len(group) * sparse
            for name, encoder in systems.items():
                start = time.perf_counter()
                if encoder is None:
                    out = model(input_ids, attention_mask=mask).logits
                else:
                    if name == "hf_block_sparse_eval":  # HF switches itself to full for good after a short batch
                        encoder.set_attention_type("block_sparse")
                    hidden = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
                    out = model.classifier(model.bert.pooler(hidden, mask.bool()))
                seconds[name] += time.perf_counter() - start
                logits[name][torch.as_tensor(group)] = out.float()
            if not sparse:  # both libraries run dense attention here: they must agree
                dense_check = max(dense_check, (logits["hf_block_sparse_eval"][torch.as_tensor(group)]
                                                - logits["sdbert"][torch.as_tensor(group)]).abs().max().item())
    if dense_check >= 1e-4:
        raise SystemExit(f"HF and ours disagree where both are dense (max abs diff {dense_check:.2e}): a bug")

    ours = logits["sdbert"]
    result = {
        "model": args.model, "split": args.split, "examples": len(ids), "max_length": max_length,
        "truncation": config.truncation, "block_size": config.block_size,
        "num_random_blocks": config.num_random_blocks, "dense_up_to_tokens": dense_length,
        "examples_in_sparse_batches": sparse_examples, "max_abs_diff_dense_batches": dense_check,
        "systems": {},
    }
    result["transformers"] = transformers.__version__
    for name, values in logits.items():
        predictions = values.argmax(-1)
        result["systems"][name] = {
            "accuracy": round((predictions == labels).float().mean().item(), 4),
            "agreement_with_sdbert": round((predictions == ours.argmax(-1)).float().mean().item(), 4),
            "mean_abs_logit_diff_vs_sdbert": round((values - ours).abs().mean().item(), 4),
            "max_abs_logit_diff_vs_sdbert": round((values - ours).abs().max().item(), 4),
            "seconds": round(seconds[name], 1),
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output_json:
        with open(args.output_json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
