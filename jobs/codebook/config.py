"""Configuration of the codebook stage (train a residual-quantization codebook, or reuse the frozen one)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from jobs.common.config import StageConfig


class CodebookConfig(StageConfig):
    method: Literal["rq_kmeans", "rqvae"] = "rq_kmeans"
    levels: int = Field(default=3, ge=1, le=8)
    codebook_size: int = Field(default=256, ge=2, le=65536)
    # capacity-constrained (balanced) assignment per level: every code holds at most
    # ceil(n / K * capacity_slack) training items, frozen as per-code prices
    balanced: bool = True
    capacity_slack: float = Field(default=1.0, ge=1.0)
    # per-prefix capacity prices (frozen in the codebook, so encoding stays per item): items sharing a
    # code prefix are spread over distinct codes at the last level ("last"), every level below the
    # first ("deep"), or not at all ("off"). Takes raw collisions on the sample from 23% to 0.6%.
    prefix_balance: Literal["off", "last", "deep"] = "last"
    kmeans_iters: int = Field(default=5, ge=1)
    # bounded training sample drawn from Spark (deterministic by item_id hash and seed)
    max_train_items: int = Field(default=200_000, ge=1)
    # RQ-VAE only
    latent_dim: int = Field(default=32, ge=1)
    hidden: tuple[int, ...] = (256, 128)
    epochs: int = Field(default=60, ge=1)
    batch_size: int = Field(default=512, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    beta: float = Field(default=0.25, ge=0)
    device: str = "cpu"
    # frozen-codebook reruns: reuse the previous version's codebook unless forced or drifted
    force_retrain: bool = False
    max_new_item_share: float = Field(default=0.2, ge=0, le=1)
    max_recon_error_ratio: float = Field(default=1.5, gt=0)  # new items' first-level error / returning items'
    max_frozen_collision_rate: float = Field(default=0.4, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self):
        if self.method == "rqvae" and self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be cpu or cuda[:n], got {self.device!r}")
        return self

    def fit_settings(self) -> dict:
        """Keyword settings of ``tokenizer.fit`` for the configured method."""
        common = {"levels": self.levels, "codebook_size": self.codebook_size, "balanced": self.balanced,
                  "capacity_slack": self.capacity_slack, "prefix_balance": self.prefix_balance}
        if self.method == "rq_kmeans":
            return {**common, "iters": self.kmeans_iters}
        return {**common, "latent_dim": self.latent_dim, "hidden": tuple(self.hidden), "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "beta": self.beta, "device": self.device}
