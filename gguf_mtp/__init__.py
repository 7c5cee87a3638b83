"""gguf-mtp: Multi-Token-Prediction heads as speculative drafters for llama.cpp."""

__version__ = "0.1.0"
