"""asr: speech and audio sequence recognition with stacked (Bi)LSTM models."""
__version__ = "0.1.0"


def load_model(name_or_path="digits", device="cpu"):
    """A ready model from a registry name (`asr models`), package file, experiment dir or URL."""
    from .registry import load_model as _load

    return _load(name_or_path, device)


__all__ = ["load_model", "__version__"]
