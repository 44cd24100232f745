"""RQ-VAE: MLP encoder -> L residual vector-quantization levels -> MLP decoder (torch; CPU or CUDA).

Training: every level is initialised by k-means on the latent residuals of a sample; the loss is
reconstruction + codebook + beta * commitment (straight-through estimator); codes unused during an
epoch are restarted on the latent residuals that are worst served (dead-code restart). With
``balanced``, every batch is assigned to codes by Sinkhorn (the argmax of an entropic transport plan
with equal mass per code), so no level collapses onto a few codes while the encoder moves; the exact
per-code capacity prices of :mod:`tokenizer.kmeans` are computed once on the trained latents and
frozen into the codebook, so encoding stays a per-item rule. Deterministic for a seed on a given
device. The trained model is exported as a plain-numpy :class:`~tokenizer.codebook.Codebook`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tokenizer.codebook import Codebook, PrefixPrices, check_embeddings
from tokenizer.kmeans import balance_prices, fit_level, pairwise_sq_dist, prefix_prices, reseed_dead_codes
from tokenizer.rq_kmeans import prefix_levels, training_metrics


@dataclass(frozen=True)
class RQVAESettings:
    levels: int = 3
    codebook_size: int = 256
    latent_dim: int = 32
    hidden: tuple[int, ...] = (256, 128)
    epochs: int = 60
    batch_size: int = 512
    lr: float = 1e-3
    beta: float = 0.25
    balanced: bool = True
    capacity_slack: float = 1.0
    dead_code_restart: bool = True
    prefix_balance: str = "last"  # per-prefix capacity prices at export (see tokenizer.rq_kmeans)
    sinkhorn_epsilon: float = 0.01  # entropy of the batch assignment, on distances scaled to [0, 2]
    sinkhorn_iters: int = 30
    device: str = "cpu"


def _mlp(sizes: list[int]):
    from torch import nn

    layers: list[Any] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def sinkhorn_codes(dist, *, epsilon: float, iters: int):
    """Balanced codes for a batch: row-wise argmax of the entropic transport plan between the rows
    (mass 1 each) and the codes (equal mass each). Distances are scaled to [0, 2] per row first, so
    ``epsilon`` does not depend on the latent scale, which grows during training. Float64 scaling
    vectors (two matrix-vector products per iteration) instead of log-domain updates: the kernel's
    range, exp(-2 / epsilon), stays far inside float64."""
    import torch

    d = dist.double()
    lo, hi = d.min(), d.max()
    kernel = torch.exp(-(d - d.min(1, keepdim=True).values) / ((hi - lo) / 2 + 1e-12) / epsilon)
    rows, codes = d.shape
    per_code = torch.full((codes,), rows / codes, dtype=d.dtype, device=d.device)
    v = torch.ones(codes, dtype=d.dtype, device=d.device)
    for _ in range(iters):
        u = 1.0 / (kernel @ v)
        v = per_code / (kernel.T @ u)
    return (kernel * v[None, :]).argmax(1)


class ResidualVQ:
    """L codebooks with straight-through residual quantization: nearest code, or Sinkhorn-balanced
    codes per batch (``balance``) during training."""

    def __init__(self, *, centroids, balance=None):
        import torch

        self.codebooks = [torch.nn.Parameter(c) for c in centroids]
        self.balance = balance

    def __call__(self, z):
        import torch

        residual = z
        quantized = torch.zeros_like(z)
        codes, cb_loss, commit_loss = [], z.new_zeros(()), z.new_zeros(())
        for cb in self.codebooks:
            dist = torch.cdist(residual.detach(), cb.detach()) ** 2
            idx = self.balance(dist) if self.balance is not None else dist.argmin(1)
            q = cb[idx]
            cb_loss = cb_loss + ((residual.detach() - q) ** 2).sum(1).mean()
            commit_loss = commit_loss + ((residual - q.detach()) ** 2).sum(1).mean()
            quantized = quantized + q
            residual = residual - q.detach()
            codes.append(idx)
        # straight-through: gradients flow to the encoder as if quantization were the identity
        return z + (quantized - z).detach(), torch.stack(codes, 1), cb_loss, commit_loss


def fit_rqvae(emb: np.ndarray, *, seed: int, settings: RQVAESettings | None = None, space: dict[str, Any] | None = None, item_ids=None) -> Codebook:
    """Train an RQ-VAE on ``emb`` (n, d) and export it as a :class:`Codebook`."""
    import torch

    s = settings or RQVAESettings()
    x_np = check_embeddings(emb, None, item_ids).astype(np.float32)
    n, dim = x_np.shape
    if n < s.codebook_size:
        raise ValueError(f"need at least {s.codebook_size} training items, got {n}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = torch.device(s.device)
    x = torch.from_numpy(x_np).to(device)
    encoder = _mlp([dim, *s.hidden, s.latent_dim]).to(device)
    decoder = _mlp([s.latent_dim, *reversed(s.hidden), dim]).to(device)
    capacity = max(1, int(np.ceil(n / s.codebook_size * s.capacity_slack)))

    # plain k-means initialisation of every level on the initial latent residuals (balance comes from
    # the Sinkhorn batch assignment: the random encoder's latents move too much to price them now)
    with torch.no_grad():
        residual = encoder(x).double().cpu().numpy()
    centroids = []
    for level in range(s.levels):
        c, _ = fit_level(residual, s.codebook_size, seed=seed + 1000 * level, balanced=False, iters=10)
        codes = pairwise_sq_dist(residual, c).argmin(1)
        residual = residual - c[codes]
        centroids.append(torch.tensor(c, dtype=torch.float32, device=device))
    balance = (lambda dist: sinkhorn_codes(dist, epsilon=s.sinkhorn_epsilon, iters=s.sinkhorn_iters)) if s.balanced else None
    rvq = ResidualVQ(centroids=centroids, balance=balance)
    params = list(encoder.parameters()) + list(decoder.parameters()) + rvq.codebooks
    opt = _Adam(params, lr=s.lr)
    history = []
    for epoch in range(s.epochs):
        order = torch.randperm(n, generator=gen).to(device)
        usage = torch.zeros(s.levels, s.codebook_size, device=device)
        totals = np.zeros(3)
        for start in range(0, n, s.batch_size):
            batch = x[order[start : start + s.batch_size]]
            z = encoder(batch)
            zq, codes, cb_loss, commit_loss = rvq(z)
            recon = ((decoder(zq) - batch) ** 2).sum(1).mean()
            loss = recon + cb_loss + s.beta * commit_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            for level in range(s.levels):
                usage[level] += torch.bincount(codes[:, level], minlength=s.codebook_size)
            totals += [recon.item() * len(batch), cb_loss.item() * len(batch), commit_loss.item() * len(batch)]
        restarted = _restart_dead_codes(encoder, x, rvq, usage) if s.dead_code_restart else 0
        history.append({"epoch": epoch, "recon": totals[0] / n, "codebook": totals[1] / n, "commit": totals[2] / n, "restarted": restarted,
                        "codes_used": [int((u > 0).sum()) for u in usage]})

    encoder_layers = _export(encoder)
    # the exported (float32 numpy) encoder's latents: what encode will compute
    latent = Codebook(method="rqvae", centroids=np.zeros((1, 1, s.latent_dim), np.float32), prices=np.zeros((1, 1), np.float32),
                      input_dim=dim, encoder=encoder_layers).to_latent(x_np)
    final_prices, tables = [], []
    by_prefix = prefix_levels(s.prefix_balance, s.levels)
    final_codes = np.zeros((n, s.levels), dtype=np.int32)
    residual = latent
    for level in range(s.levels):
        c = rvq.codebooks[level].detach().cpu().numpy().astype(np.float64)
        dist = pairwise_sq_dist(residual, c)
        p = balance_prices(dist, capacity) if s.balanced else np.zeros(s.codebook_size)
        p = p.astype(np.float32).astype(np.float64)
        cost = dist + p[None, :]
        table = None
        if level in by_prefix:
            keys, tcodes, values, _ = prefix_prices(residual, cost, final_codes[:, :level], capacity_slack=s.capacity_slack)
            table = PrefixPrices.build(keys, tcodes, values)
            table.add_to(cost, final_codes[:, :level])
        final_codes[:, level] = cost.argmin(1)
        residual = residual - c[final_codes[:, level]]
        final_prices.append(p)
        tables.append(table)
    cb = Codebook(
        method="rqvae",
        centroids=np.stack([c.detach().cpu().numpy() for c in rvq.codebooks]).astype(np.float32),
        prices=np.stack(final_prices).astype(np.float32),
        input_dim=dim,
        encoder=encoder_layers,
        decoder=_export(decoder),
        space=dict(space or {}),
        config={"method": "rqvae", "seed": seed, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()
                                                   if k != "device" and not (k == "prefix_balance" and v == "off")}},
        prefix_prices=tuple(tables) if any(t is not None and len(t) for t in tables) else (),
    )
    metrics = training_metrics(cb, x_np)
    metrics["loss_history"] = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()} for h in history[:: max(1, s.epochs // 10)]]
    metrics["final_loss"] = {k: round(v, 6) for k, v in history[-1].items() if isinstance(v, float)} if history else {}
    return cb.with_metadata(metrics=metrics)


def _restart_dead_codes(encoder, x, rvq, usage) -> int:
    """Move the codes no batch used this epoch onto the latent residuals worst served by their
    nearest code, level by level; returns how many codes were restarted."""
    import torch

    restarted = 0
    with torch.no_grad():
        residual = encoder(x).double().cpu().numpy()
        for level, cb in enumerate(rvq.codebooks):
            c = cb.detach().double().cpu().numpy()
            dist = pairwise_sq_dist(residual, c)
            codes = dist.argmin(1)
            dead = np.flatnonzero(usage[level].cpu().numpy() == 0)
            if len(dead):
                c = reseed_dead_codes(residual, c, dead, dist[np.arange(len(codes)), codes])
                cb.data.copy_(torch.from_numpy(c).to(cb))
                restarted += min(len(dead), len(residual))
            residual = residual - c[codes]
    return restarted


class _Adam:
    """Plain Adam (same update as torch.optim.Adam). torch.optim's first use imports torch._dynamo,
    which costs many seconds on a small CPU box; this keeps short training runs short."""

    def __init__(self, params, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        import torch

        self.params, self.lr, self.betas, self.eps, self.t = list(params), lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        self.t += 1
        b1, b2 = self.betas
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                if p.grad is None:
                    continue
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


def _export(seq) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    from torch import nn

    return tuple(
        (m.weight.detach().cpu().numpy().T.copy().astype(np.float32), m.bias.detach().cpu().numpy().astype(np.float32))
        for m in seq
        if isinstance(m, nn.Linear)
    )
