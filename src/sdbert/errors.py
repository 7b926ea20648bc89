"""Errors a user can cause. The CLI turns them into a one-line message and exit status 2."""
import importlib


class SDBertError(Exception):
    """Base class: the message is shown to the user as is, without a traceback."""


class ConfigError(SDBertError, ValueError):
    """An impossible or inconsistent configuration."""


class CheckpointError(SDBertError):
    """A model folder that is missing, corrupt or of a kind we cannot read."""


class DataError(SDBertError):
    """A data source that is missing, corrupt or has the wrong shape."""


class MissingDependency(ConfigError):
    """An optional package a feature needs is not installed."""


EXTRAS = {"onnxruntime": "onnx", "onnx": "onnx", "onnxscript": "onnx", "fastapi": "serve", "uvicorn": "serve",
          "httpx": "serve", "prometheus_client": "serve", "transformers": "hf", "sentencepiece": "hf",
          "huggingface_hub": "hub", "matplotlib": "plot", "pyarrow": "data", "sklearn": "baseline"}
"""The `pip install 'sdbert[extra]'` that brings each optional package."""


def missing_hint(module: str, purpose: str) -> str:
    """The one wording for a missing optional package: what needs it and how to install it."""
    extra = EXTRAS.get(module.split(".")[0])
    how = f"pip install 'sdbert[{extra}]'" if extra else f"pip install {module}"
    return f"{purpose} needs {module.split('.')[0]}, which is not installed: {how}"


def require(module: str, purpose: str):
    """Import and return `module`, or raise MissingDependency with `missing_hint`'s one line."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(missing_hint(module, purpose)) from None
