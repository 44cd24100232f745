"""Configuration of the fuse stage: collaborative item vectors and their fusion with the text space."""

from typing import Literal

from pydantic import Field, model_validator

from jobs.common.config import StageConfig


class FuseConfig(StageConfig):
    # Which space becomes `layout.embeddings` (what the codebook is trained on).
    space: Literal["text", "collaborative", "fused"] = "fused"
    # How the fused space is built: a contrastively trained residual projection, or the plain
    # concatenation of the text and collaborative spaces (the baseline it is measured against).
    fusion: Literal["contrastive", "concat"] = "contrastive"

    # Leakage guard: the last `holdout_last` interactions of every user never reach the collaborative
    # signal. 2 matches the leave-one-out valid + test split, so SIDs cannot encode evaluation events;
    # the held-out events are what the fusion is measured on. Users with fewer than
    # `holdout_last + min_train_events` events keep all their events for training.
    holdout_last: int = Field(default=2, ge=0)
    min_train_events: int = Field(default=2, ge=2)

    # Collaborative signal: PPMI over co-occurrence within `window` positions of a user's sequence,
    # then a truncated SVD (scipy.sparse on the driver; the item x item matrix is bounded by catalog
    # size: ~1e6 items and ~1e8 non-zeros still fit one driver).
    window: int = Field(default=5, ge=1)
    collab_dim: int = Field(default=64, ge=2, le=1024)
    # Context-distribution smoothing (Levy et al. 2015) and the PMI shift (log k, k negative samples).
    ppmi_alpha: float = Field(default=0.75, gt=0.0, le=1.0)
    ppmi_shift: float = Field(default=1.0, ge=1.0)
    # Upper bound on distinct items with interactions that the driver-side SVD accepts.
    max_collab_items: int = Field(default=2_000_000, ge=2)
    # Ridge strength of the text -> collaborative map that places items without interactions in the
    # collaborative space (so that space still covers every catalog item).
    cold_ridge: float = Field(default=1.0, gt=0.0)

    # Contrastive fusion: fused = normalise(t + A t + B c), A and B start at zero (= the text space),
    # trained with InfoNCE on co-interacted pairs plus a distillation of the text neighbourhoods.
    temperature: float = Field(default=0.05, gt=0.0, le=1.0)
    retention_weight: float = Field(default=1.0, ge=0.0)
    train_steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=256, ge=8)
    learning_rate: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    # One thread: on a busy 2-core host, 2 OpenMP threads spin against Spark workers (measured 30x slower).
    train_threads: int = Field(default=1, ge=1)

    # Measurement (written into the stage metrics): kNN depth, and bounds so it stays cheap at scale.
    eval_k: int = Field(default=10, ge=1)
    eval_max_items: int = Field(default=200_000, ge=10)
    eval_max_pairs: int = Field(default=200_000, ge=1)

    # Reruns on a new snapshot: reuse the previous version's fusion model (weights and collaborative
    # basis), aligning the new PPMI-SVD vectors to the old basis by orthogonal Procrustes on the items
    # both logs share, so the fused space keeps its identity and the frozen codebook stays valid.
    # Refit when the alignment residual (relative Frobenius error on shared items) exceeds the bound.
    reuse_previous: bool = True
    max_alignment_error: float = Field(default=0.6, gt=0.0)
    min_alignment_items: int = Field(default=10, ge=2)

    output_files: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.eval_k >= self.eval_max_items:
            raise ValueError(f"eval_k ({self.eval_k}) must be smaller than eval_max_items ({self.eval_max_items})")
        return self
