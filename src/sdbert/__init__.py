"""SDBERT: SparseDistilBERT, small fast block-sparse transformers for long documents.

The shape of the package, library first:

* `sdbert.attention` the kernels (block-sparse, dense oracle, native C++, FlexAttention, traceable);
  `sdbert.model` / `sdbert.config` the encoder (the config holds the architecture only);
  `sdbert.data` sources, splits, tokenisation, batching.
* `sdbert.classifier.Classifier` is what users hold: the model, its tokenizer and its
  `InferenceSettings` (tokens per text, truncation), loaded and saved as one folder; training
  workflows build one, and predict, evaluate and serve read one.
* Workflows are functions of one typed config: `sdbert.training.finetune.finetune(FinetuneConfig)`,
  `sdbert.training.distill.distill(DistillConfig)`, `sdbert.paper.runner.reproduce(ReproduceConfig)`,
  `sdbert.evaluation.evaluate(EvaluateConfig)` and the
  `sdbert.bench` runners. `sdbert.training.loop` is the one training loop they share.
* `sdbert.commands` is the CLI: each command builds its flags from those configs (`sdbert.cli_args`)
  and calls the workflow; user errors are `sdbert.errors.SDBertError`s (one line, exit status 2).
"""

from sdbert.config import SDBertConfig

__version__ = "0.1.0"
__all__ = ["Classifier", "InferenceSettings", "SDBertConfig", "SDBertForSequenceClassification", "__version__"]


def __getattr__(name: str):
    # The model and the classifier pull in torch; importing them lazily keeps `sdbert --help` fast.
    if name == "SDBertForSequenceClassification":
        # lazy facade: `import sdbert` (and `sdbert --help`) must not import torch
        from sdbert.model import SDBertForSequenceClassification

        return SDBertForSequenceClassification
    if name in ("Classifier", "InferenceSettings"):
        # lazy facade: `import sdbert` (and `sdbert --help`) must not import torch
        from sdbert import classifier

        return getattr(classifier, name)
    raise AttributeError(name)
