"""The four item spaces and the contrastive fusion that joins text and collaborative signal.

Spaces (every one covers every item that has a text vector, rows unit-norm):
- text: the text embedding as given.
- collaborative: the PPMI-SVD vector where the item has interactions; otherwise its text vector mapped
  by a ridge regression fitted on items that have both (so cold items are placed by their text).
- concat: ``normalise([text, collaborative])``, the baseline.
- fused: ``normalise(t + A t + B c)``, then centred. A and B start at zero (no bias: a shared
  offset would pull every item toward one direction), so before training the fused space *is* the
  text space (up to centring); training pulls co-interacted items together (InfoNCE, in-batch
  negatives) while a distillation term keeps each batch's neighbourhood structure close to the text
  space's. Items with no interactions go through the same map with their text-derived collaborative
  vector.

Applying a space is plain numpy (:func:`build_space`), so Spark workers need no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from jobs.fuse.collab import fit_ridge_map, l2_normalize

SPACES = ("text", "collaborative", "concat", "fused")


@dataclass(frozen=True)
class FusionWeights:
    """Everything needed to map (text, collaborative-or-missing) to any space, as float32 arrays."""

    cold_map: np.ndarray  # (d_text, d_collab): text -> collaborative for items without interactions
    text_residual: np.ndarray | None = None  # (d_text, d_text), A^T
    collab_proj: np.ndarray | None = None  # (d_collab, d_text), B^T
    center: np.ndarray | None = None  # (d_text,), mean fused vector of the training items
    history: dict = field(default_factory=dict, compare=False)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"cold_map": self.cold_map}
        if self.text_residual is not None:
            out.update(text_residual=self.text_residual, collab_proj=self.collab_proj, center=self.center)
        return out


def fit_cold_map(text: np.ndarray, collab: np.ndarray, *, ridge: float) -> np.ndarray:
    return fit_ridge_map(text, collab, ridge=ridge)


def collaborative_space(text: np.ndarray, collab: np.ndarray, has_collab: np.ndarray, cold_map: np.ndarray) -> np.ndarray:
    """Collaborative vectors for every item: the real one where present, else the text-mapped one."""
    has_collab = np.asarray(has_collab, dtype=bool)
    out = np.array(collab, dtype=np.float32, copy=True)
    if (~has_collab).any():
        out[~has_collab] = l2_normalize(np.asarray(text, dtype=np.float32)[~has_collab] @ cold_map)
    return out


def build_space(space: str, text: np.ndarray, collab: np.ndarray, has_collab: np.ndarray, weights: FusionWeights,
                *, fusion: str = "contrastive") -> np.ndarray:
    """Rows of ``space`` for a batch of items (``collab`` rows are ignored where ``has_collab`` is False)."""
    text = np.asarray(text, dtype=np.float32)
    if space == "text":
        return l2_normalize(text)
    c_space = collaborative_space(text, collab, has_collab, weights.cold_map)
    if space == "collaborative":
        return c_space
    if space == "concat" or (space == "fused" and fusion == "concat"):
        return l2_normalize(np.hstack([text, c_space]))
    if space == "fused":
        if weights.text_residual is None:
            raise ValueError("fused space requested but the fusion weights were not trained")
        fused = l2_normalize(text + text @ weights.text_residual + c_space @ weights.collab_proj)
        return fused if weights.center is None else l2_normalize(fused - weights.center)
    raise ValueError(f"unknown space {space!r}; expected one of {SPACES}")


def train_contrastive(
    text: np.ndarray,
    collab_space: np.ndarray,
    pair_a: np.ndarray,
    pair_b: np.ndarray,
    pair_weight: np.ndarray,
    *,
    cold_map: np.ndarray,
    seed: int,
    steps: int = 300,
    batch_size: int = 512,
    temperature: float = 0.05,
    retention_weight: float = 1.0,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    threads: int = 2,
) -> FusionWeights:
    """Train the residual fusion on co-interacted pairs (indices into ``text``/``collab_space`` rows)."""
    import torch

    text = np.ascontiguousarray(text, dtype=np.float32)
    collab_space = np.ascontiguousarray(collab_space, dtype=np.float32)
    if len(pair_a) == 0:
        raise ValueError("contrastive fusion needs at least one co-interacted pair")
    n, d_text = text.shape
    d_collab = collab_space.shape[1]

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        text_t = torch.from_numpy(text)
        collab_t = torch.from_numpy(collab_space)
        a_t = torch.as_tensor(np.asarray(pair_a, dtype=np.int64))
        b_t = torch.as_tensor(np.asarray(pair_b, dtype=np.int64))
        w_t = torch.as_tensor(np.asarray(pair_weight, dtype=np.float64))

        residual = torch.nn.Linear(d_text, d_text, bias=False)
        collab_proj = torch.nn.Linear(d_collab, d_text, bias=False)
        for p in (*residual.parameters(), *collab_proj.parameters()):
            torch.nn.init.zeros_(p)
        params = [*residual.parameters(), *collab_proj.parameters()]
        opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)

        def embed(idx):
            t = text_t[idx]
            return torch.nn.functional.normalize(t + residual(t) + collab_proj(collab_t[idx]), dim=1)

        history = {"pair_loss": [], "retention_loss": []}
        for _ in range(steps):
            pick = torch.multinomial(w_t, batch_size, replacement=True, generator=gen)
            ia, ib = a_t[pick], b_t[pick]
            fa, fb = embed(ia), embed(ib)
            logits = fa @ fb.T / temperature
            # Another pair in the batch with the same target item is not a negative.
            same_target = (ib[None, :] == ib[:, None]) & ~torch.eye(len(ib), dtype=torch.bool)
            logits = logits.masked_fill(same_target, float("-inf"))
            labels = torch.arange(len(ia))
            pair_loss = 0.5 * (torch.nn.functional.cross_entropy(logits, labels)
                               + torch.nn.functional.cross_entropy(logits.T, labels))

            loss = pair_loss
            if retention_weight > 0:
                ir = torch.randint(0, n, (batch_size,), generator=gen)
                fr, tr = embed(ir), text_t[ir]
                eye = torch.eye(len(ir), dtype=torch.bool)
                teacher = torch.softmax((tr @ tr.T / temperature).masked_fill(eye, float("-inf")), dim=1)
                student = torch.log_softmax((fr @ fr.T / temperature).masked_fill(eye, float("-inf")), dim=1)
                retention = torch.nn.functional.kl_div(student.masked_fill(eye, 0.0), teacher, reduction="batchmean")
                loss = loss + retention_weight * retention
                history["retention_loss"].append(float(retention.detach()))
            history["pair_loss"].append(float(pair_loss.detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
        trained = FusionWeights(
            cold_map=np.asarray(cold_map, dtype=np.float32),
            text_residual=residual.weight.detach().numpy().T.astype(np.float32).copy(),
            collab_proj=collab_proj.weight.detach().numpy().T.astype(np.float32).copy(),
            history=history,
        )
        # Contrastive training drifts every item toward a shared direction (mean cosine 0.2 -> 0.5 on
        # the sample); removing the mean restores spread for residual quantisation without changing
        # which items are close (held-out recall is unchanged by it, measured).
        uncentered = build_space("fused", text, collab_space, np.ones(n, dtype=bool), trained)
        return replace(trained, center=uncentered.mean(axis=0).astype(np.float32))
    finally:
        torch.set_num_threads(previous_threads)
