"""Semantic-ID tokenizer: plain numpy / faiss / torch, callable without Spark.

The narrow contract: ``tokenizer.train.fit(emb, seed) -> Codebook``; ``Codebook.encode(emb) -> codes``;
``Codebook.decode(codes) -> emb``. Resolution, rendering, trie and glossary live in their modules.
Code inside the project imports the submodules directly (``from tokenizer.train import fit``).
"""

from tokenizer.codebook import Codebook, check_embeddings
from tokenizer.errors import CodebookMismatch, EmbeddingError
from tokenizer.render import TokenFormat, render
from tokenizer.train import METHODS, fit

__all__ = ["METHODS", "Codebook", "CodebookMismatch", "EmbeddingError", "TokenFormat", "check_embeddings", "fit", "render"]
