"""SDBERT: SparseDistilBERT, small fast block-sparse transformers for long documents."""

from sdbert.config import SDBertConfig

__version__ = "0.1.0"
__all__ = ["SDBertConfig", "SDBertForSequenceClassification", "__version__"]


def __getattr__(name: str):
    # The model pulls in torch.nn; importing it lazily keeps `sdbert --help` fast.
    if name == "SDBertForSequenceClassification":
        from sdbert.model import SDBertForSequenceClassification

        return SDBertForSequenceClassification
    raise AttributeError(name)
