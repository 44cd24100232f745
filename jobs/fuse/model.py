"""The fusion model as an artifact: weights (one ``.npy`` per array, so the bytes are deterministic)
plus ``fusion.json`` naming the space it defines. A rerun on a new snapshot loads it to keep the fused
space, and with it the frozen codebook, valid."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jobs.common.io import atomic_write_text
from jobs.fuse.fusion import FusionWeights

FORMAT = "1"
DESCRIPTION = "fusion.json"


@dataclass(frozen=True)
class FusionModel:
    weights: FusionWeights
    # model_fingerprint of the space the weights define (what the codebook checks)
    fingerprint: str
    text_fingerprint: str
    space: str
    fusion: str
    # snapshot whose log fixed the collaborative basis; later snapshots are rotated into it
    fitted_in: str

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for name, array in self.weights.to_arrays().items():
            with open(path / f"{name}.npy", "wb") as f:
                np.save(f, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
        description = {
            "format": FORMAT, "fingerprint": self.fingerprint, "text_fingerprint": self.text_fingerprint,
            "space": self.space, "fusion": self.fusion, "fitted_in": self.fitted_in,
            "arrays": sorted(self.weights.to_arrays()),
        }
        atomic_write_text(path / DESCRIPTION, json.dumps(description, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> FusionModel | None:
        """The model saved under ``path``, or None when there is none (a version from before fusion models)."""
        described = path / DESCRIPTION
        if not described.is_file():
            return None
        d = json.loads(described.read_text())
        if d.get("format") != FORMAT:
            raise ValueError(f"{described}: fusion model format {d.get('format')!r}, expected {FORMAT!r}")
        arrays = {name: np.load(path / f"{name}.npy", allow_pickle=False) for name in d["arrays"]}
        return cls(weights=FusionWeights(**arrays), fingerprint=d["fingerprint"], text_fingerprint=d["text_fingerprint"],
                   space=d["space"], fusion=d["fusion"], fitted_in=d["fitted_in"])
