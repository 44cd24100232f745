"""Errors the tokenizer raises on bad input: each message names the offending items."""

from __future__ import annotations


class EmbeddingError(ValueError):
    """Embeddings that cannot be quantized (NaN/inf, wrong dimension); the message names the items."""


class CodebookMismatch(ValueError):
    """A codebook is used on embeddings from a different space (model fingerprint or dimension)."""
