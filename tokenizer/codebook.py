"""The frozen codebook: the narrow, invertible contract every stage uses.

``Codebook.encode(emb) -> codes (n, L) int32`` and ``Codebook.decode(codes) -> emb`` (the quantized
vector back in the input space). A codebook is plain numpy (an optional MLP encoder/decoder for RQ-VAE,
per-level centroids and balancing prices), so Spark workers need neither torch nor faiss to encode,
and it is saved as plain ``.npy`` files plus one JSON, named by a content hash (``codebook_id``).

Levels below the first may carry a sparse **per-prefix price table** (:class:`PrefixPrices`): the
capacity prices of that level inside each prefix group, found in training so that items sharing a
prefix spread over the level's codes (see :func:`tokenizer.kmeans.prefix_prices`). The cost of code
``k`` at level ``l`` is ``||r - c_k||^2 + price[l, k] + table_l[prefix, k]``: it depends on the item's
own earlier codes only, so encoding stays a per-item function of the frozen codebook.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokenizer.errors import CodebookMismatch, EmbeddingError
from tokenizer.kmeans import _CHUNK, assign, pairwise_sq_dist

FORMAT_VERSION = "1"  # codebooks without per-prefix prices (their ids are unchanged)
PREFIX_FORMAT_VERSION = "2"  # with per-prefix prices: an older reader must refuse, not ignore, them
META_FILE = "codebook.json"

Layer = tuple[np.ndarray, np.ndarray]  # (weight (in, out), bias (out,))


def mlp_forward(x: np.ndarray, layers: Sequence[Layer]) -> np.ndarray:
    """ReLU MLP with a linear last layer, float64 (what RQ-VAE's torch modules compute)."""
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(layers):
        h = h @ w.astype(np.float64) + b.astype(np.float64)
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


@dataclass(frozen=True, eq=False)
class PrefixPrices:
    """Sparse prices of one level per (prefix, code): row i adds ``values[i]`` to code ``codes[i]`` for
    items whose codes on the levels above are ``keys[i]``. Rows sorted by (prefix, code)."""

    keys: np.ndarray  # (m, level) int32
    codes: np.ndarray  # (m,) int32
    values: np.ndarray  # (m,) float32

    @classmethod
    def build(cls, keys: np.ndarray, codes: np.ndarray, values: np.ndarray) -> PrefixPrices:
        keys = np.asarray(keys, dtype=np.int32)
        codes = np.asarray(codes, dtype=np.int32)
        order = np.lexsort((codes, *keys.T[::-1])) if len(codes) else np.zeros(0, np.int64)
        return cls(np.ascontiguousarray(keys[order]), codes[order], np.asarray(values, dtype=np.float32)[order])

    def __len__(self) -> int:
        return len(self.codes)

    def _table(self) -> dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]:
        table = self.__dict__.get("_lookup")
        if table is None:
            table = {}
            if len(self.codes):
                bounds = np.flatnonzero((np.diff(self.keys, axis=0) != 0).any(1)) + 1
                for rows in np.split(np.arange(len(self.codes)), bounds):
                    table[tuple(int(v) for v in self.keys[rows[0]])] = (self.codes[rows], self.values[rows].astype(np.float64))
            object.__setattr__(self, "_lookup", table)
        return table

    def add_to(self, cost: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
        """Add the table's prices to ``cost`` (n, K) in place, row by row from each row's own prefix."""
        table = self._table()
        if not table or len(cost) == 0:
            return cost
        uniq, inverse = np.unique(np.asarray(prefixes), axis=0, return_inverse=True)
        inverse = inverse.ravel()
        for u, key in enumerate(uniq):
            hit = table.get(tuple(int(v) for v in key))
            if hit is not None:
                rows = np.flatnonzero(inverse == u)
                cost[np.ix_(rows, hit[0])] += hit[1][None, :]
        return cost


@dataclass(frozen=True)
class Codebook:
    method: str  # "rq_kmeans" | "rqvae"
    centroids: np.ndarray  # (L, K, latent_dim) float32
    prices: np.ndarray  # (L, K) float32 balancing prices; zeros for a plain quantizer
    input_dim: int
    encoder: tuple[Layer, ...] = ()  # empty: identity (RQ-KMeans quantizes the embedding itself)
    decoder: tuple[Layer, ...] = ()
    space: dict[str, Any] = field(default_factory=dict)  # {"space": ..., "model_fingerprint": ...}
    config: dict[str, Any] = field(default_factory=dict)  # training settings, seed included
    metrics: dict[str, Any] = field(default_factory=dict)  # deterministic training metrics
    # per level (index = level, 0-based): per-prefix price table or None; empty: none anywhere
    prefix_prices: tuple[PrefixPrices | None, ...] = ()

    @property
    def levels(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def codebook_size(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def latent_dim(self) -> int:
        return int(self.centroids.shape[2])

    # -- the contract ------------------------------------------------------------------------
    def encode(self, emb: np.ndarray, item_ids: Sequence[str] | None = None) -> np.ndarray:
        """Codes (n, L) int32 of each row; rejects NaN/inf and wrong dimensions naming the items."""
        x = check_embeddings(emb, self.input_dim, item_ids)
        return self._codes_of_latent(self.to_latent(x))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """The quantized vector (input space, float32) of each code tuple."""
        latent = self.decode_latent(codes)
        out = mlp_forward(latent, self.decoder) if self.decoder else latent
        return out.astype(np.float32)

    def quantize(self, emb: np.ndarray, item_ids: Sequence[str] | None = None) -> np.ndarray:
        """``decode(encode(emb))``: what the codebook reconstructs for each embedding."""
        return self.decode(self.encode(emb, item_ids))

    # -- pieces ------------------------------------------------------------------------------
    def to_latent(self, x: np.ndarray) -> np.ndarray:
        return mlp_forward(x, self.encoder) if self.encoder else np.asarray(x, dtype=np.float64)

    def decode_latent(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] < self.levels:
            raise ValueError(f"codes must have shape (n, {self.levels}), got {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        out = np.zeros((len(codes), self.latent_dim))
        for level in range(self.levels):
            out += self.centroids[level].astype(np.float64)[codes[:, level]]
        return out

    def residuals(self, emb: np.ndarray, level: int) -> np.ndarray:
        """Latent residual entering ``level`` (0-based) for each embedding (used by resolution)."""
        return self._walk(self.to_latent(check_embeddings(emb, self.input_dim)), level)[1]

    def level_costs(self, residual: np.ndarray, level: int, prefixes: np.ndarray | None = None) -> np.ndarray:
        """(n, K) cost of every code at ``level`` for the given residuals (distance + price).

        With ``prefixes`` (n, level), the codes of the levels above, the level's per-prefix prices are
        added too: then the argmin is exactly the code :meth:`encode` gives.
        """
        cost = pairwise_sq_dist(residual, self.centroids[level]) + self.prices[level].astype(np.float64)[None, :]
        table = self._prefix_table(level)
        if table is not None and prefixes is not None:
            table.add_to(cost, np.asarray(prefixes)[:, :level])
        return cost

    def _prefix_table(self, level: int) -> PrefixPrices | None:
        return self.prefix_prices[level] if level < len(self.prefix_prices) else None

    def _walk(self, r: np.ndarray, upto: int) -> tuple[np.ndarray, np.ndarray]:
        """Codes of the first ``upto`` levels and the residual entering level ``upto``."""
        codes = np.empty((len(r), upto), dtype=np.int32)
        for level in range(upto):
            table = self._prefix_table(level)
            if table is None or not len(table):
                c = assign(r, self.centroids[level], self.prices[level])
            else:
                c = np.empty(len(r), dtype=np.int32)
                for start in range(0, len(r), _CHUNK):
                    part = slice(start, start + _CHUNK)
                    c[part] = self.level_costs(r[part], level, codes[part, :level]).argmin(1)
            codes[:, level] = c
            r = r - self.centroids[level].astype(np.float64)[c]
        return codes, r

    def _codes_of_latent(self, r: np.ndarray) -> np.ndarray:
        return self._walk(r, self.levels)[0]

    def check_space(self, *, dim: int, model_fingerprint: str | None, space: str | None = None) -> None:
        """Refuse embeddings from another space than the one this codebook was trained on."""
        problems = []
        if dim != self.input_dim:
            problems.append(f"dimension {dim} != {self.input_dim}")
        trained_fp = self.space.get("model_fingerprint")
        if trained_fp and model_fingerprint and model_fingerprint != trained_fp:
            problems.append(f"model fingerprint {model_fingerprint!r} != {trained_fp!r}")
        trained_space = self.space.get("space")
        if trained_space and space and space != trained_space:
            problems.append(f"space {space!r} != {trained_space!r}")
        if problems:
            raise CodebookMismatch(
                f"codebook {self.codebook_id} was trained on another embedding space: " + "; ".join(problems) + " (retrain the codebook)"
            )

    # -- identity and storage ----------------------------------------------------------------
    @property
    def codebook_id(self) -> str:
        """Content hash of the weights, method, config and embedding space (not of metrics)."""
        h = hashlib.sha256()
        h.update(json.dumps(self._identity(), sort_keys=True, default=str).encode())
        for name, arr in self._arrays():
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return "cb-" + h.hexdigest()[:16]

    def _prefix_levels(self) -> list[int]:
        return [lv for lv, t in enumerate(self.prefix_prices) if t is not None and len(t)]

    def _identity(self) -> dict[str, Any]:
        ident = {
            "format": PREFIX_FORMAT_VERSION if self._prefix_levels() else FORMAT_VERSION,
            "method": self.method,
            "input_dim": self.input_dim,
            "levels": self.levels,
            "codebook_size": self.codebook_size,
            "latent_dim": self.latent_dim,
            "space": self.space,
            "config": self.config,
        }
        if self._prefix_levels():  # absent otherwise, so codebooks without tables keep their ids
            ident["prefix_price_levels"] = self._prefix_levels()
        return ident

    def _arrays(self) -> list[tuple[str, np.ndarray]]:
        arrays = [("centroids", self.centroids.astype(np.float32)), ("prices", self.prices.astype(np.float32))]
        for prefix, layers in (("encoder", self.encoder), ("decoder", self.decoder)):
            for i, (w, b) in enumerate(layers):
                arrays += [(f"{prefix}_{i}_w", w.astype(np.float32)), (f"{prefix}_{i}_b", b.astype(np.float32))]
        for lv in self._prefix_levels():
            t = self.prefix_prices[lv]
            arrays += [(f"prefix_{lv}_keys", t.keys.astype(np.int32)), (f"prefix_{lv}_codes", t.codes.astype(np.int32)),
                       (f"prefix_{lv}_prices", t.values.astype(np.float32))]
        return arrays

    def save(self, path: str | Path) -> Path:
        """Write ``<path>/codebook.json`` + one ``.npy`` per array (byte-identical for equal codebooks)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, arr in self._arrays():
            np.save(path / f"{name}.npy", arr, allow_pickle=False)
        meta = {
            **self._identity(),
            "codebook_id": self.codebook_id,
            "encoder_layers": len(self.encoder),
            "decoder_layers": len(self.decoder),
            "metrics": self.metrics,
        }
        tmp = path / f".{META_FILE}.tmp"
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n")
        tmp.replace(path / META_FILE)  # written last: a directory without it is not a codebook
        return path

    @classmethod
    def load(cls, path: str | Path) -> Codebook:
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"no codebook at {path} (missing {META_FILE})")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") not in (FORMAT_VERSION, PREFIX_FORMAT_VERSION):
            raise ValueError(f"codebook at {path} has format {meta.get('format')!r}, expected {FORMAT_VERSION!r} or {PREFIX_FORMAT_VERSION!r}")

        def layers(prefix: str, n: int) -> tuple[Layer, ...]:
            return tuple((np.load(path / f"{prefix}_{i}_w.npy"), np.load(path / f"{prefix}_{i}_b.npy")) for i in range(n))

        cb = cls(
            method=meta["method"],
            centroids=np.load(path / "centroids.npy"),
            prices=np.load(path / "prices.npy"),
            input_dim=int(meta["input_dim"]),
            encoder=layers("encoder", meta["encoder_layers"]),
            decoder=layers("decoder", meta["decoder_layers"]),
            space=meta["space"],
            config=meta["config"],
            metrics=meta.get("metrics", {}),
            prefix_prices=_load_prefix_prices(path, meta.get("prefix_price_levels", []), int(meta["levels"])),
        )
        if cb.codebook_id != meta["codebook_id"]:
            raise ValueError(f"codebook at {path} is corrupt: content hash {cb.codebook_id} != recorded {meta['codebook_id']}")
        return cb

    def with_metadata(self, **changes: Any) -> Codebook:
        from dataclasses import replace

        return replace(self, **changes)


def check_embeddings(emb: Any, dim: int | None, item_ids: Sequence[str] | None = None, *, max_named: int = 10) -> np.ndarray:
    """Stack embeddings into (n, dim) float64, or raise :class:`EmbeddingError` naming bad items."""

    def names(idx: Sequence[int]) -> str:
        labels = [str(item_ids[i]) if item_ids is not None else f"row {i}" for i in idx[:max_named]]
        more = f" (+{len(idx) - max_named} more)" if len(idx) > max_named else ""
        return ", ".join(labels) + more

    if isinstance(emb, np.ndarray) and emb.ndim == 2:
        x = emb.astype(np.float64, copy=False)
        if dim is not None and x.shape[1] != dim:
            raise EmbeddingError(f"embeddings have dimension {x.shape[1]}, expected {dim} (all {len(x)} items)")
    else:
        rows = [np.asarray(v, dtype=np.float64) if v is not None else np.empty(0) for v in emb]
        want = dim if dim is not None else (len(rows[0]) if rows else 0)
        bad = [i for i, r in enumerate(rows) if r.ndim != 1 or len(r) != want]
        if bad:
            raise EmbeddingError(f"{len(bad)} embeddings have the wrong dimension (expected {want}): items {names(bad)}")
        x = np.stack(rows) if rows else np.empty((0, want))
    finite = np.isfinite(x).all(1)
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        raise EmbeddingError(f"{len(bad)} embeddings contain NaN or inf: items {names(bad)}")
    return x


def _load_prefix_prices(path: Path, levels: Sequence[int], total: int) -> tuple[PrefixPrices | None, ...]:
    if not levels:
        return ()
    out: list[PrefixPrices | None] = [None] * total
    for lv in levels:
        out[lv] = PrefixPrices(np.load(path / f"prefix_{lv}_keys.npy"), np.load(path / f"prefix_{lv}_codes.npy"),
                               np.load(path / f"prefix_{lv}_prices.npy"))
    return tuple(out)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")
