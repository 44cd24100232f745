"""The plain-Python encoder: model resolution, fingerprints, batching, and equivalence with encode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jobs.embed.config import EmbedConfig
from jobs.embed.encoder import (
    EncoderSpec,
    ModelNotFoundError,
    bundled_model_path,
    get_encoder,
    pad_batch,
    resolve_model_path,
    token_budget_batches,
    weights_fingerprint,
)
from jobs.embed.text import render_text

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "amazon_scientific" / "catalog.jsonl"


def sample_texts(n: int, *, start: int = 0) -> list[str]:
    cfg = EmbedConfig()
    with open(SAMPLE, encoding="utf-8") as fh:
        items = [json.loads(line) for _, line in zip(range(start + n), fh)][start:]
    return [render_text(item, cfg) for item in items]


# -- resolving the model -------------------------------------------------------------------------


def test_bundled_model_resolves_offline():
    path = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    assert path == bundled_model_path() and (path / "model.safetensors").is_file()
    assert resolve_model_path(str(path)) == path.resolve()


@pytest.mark.parametrize(
    "model", ["/nonexistent/models/minilm", "./no-such-model-dir", "no-such-local-model"]
)
def test_missing_model_path_fails_at_once_with_a_clear_message(model):
    with pytest.raises(ModelNotFoundError, match="does not exist.*embed.model must be"):
        EncoderSpec.from_config(EmbedConfig(model=model))


def test_folder_without_a_model_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelNotFoundError, match="holds no model"):
        resolve_model_path(str(tmp_path))


def test_hub_id_missing_from_the_offline_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        resolve_model_path("some-org/some-model-that-is-not-cached")


def test_weights_fingerprint_tracks_weight_files_not_docs(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(bundled_model_path(), model)
    original = weights_fingerprint(model)
    assert original == weights_fingerprint(bundled_model_path())
    (model / "README.md").write_text("edited docs")
    assert weights_fingerprint(model) == original
    with open(model / "model.safetensors", "r+b") as fh:  # flip one byte of the weights
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    assert weights_fingerprint(model) != original


def test_spec_fingerprint_depends_on_what_decides_the_vectors():
    base = EncoderSpec.from_config(EmbedConfig())
    assert base.device == "cpu" and base.precision == "fp32" and base.batch_size == 32
    assert EncoderSpec.from_config(EmbedConfig(batch_size=7)).fingerprint == base.fingerprint
    assert EncoderSpec.from_config(EmbedConfig(max_seq_length=64)).fingerprint != base.fingerprint
    with pytest.raises(ValueError, match="needs a GPU"):
        EncoderSpec.from_config(EmbedConfig(device="cpu", precision="fp16"))


# -- batching ------------------------------------------------------------------------------------


def test_token_budget_batches_cover_everything_once_within_budget():
    lengths = sorted([128, 128, 97, 64, 64, 40, 33, 20, 17, 9, 9, 5, 3], reverse=True)
    batches = token_budget_batches(lengths, 256)
    covered = [i for sl in batches for i in range(sl.start, sl.stop)]
    assert covered == list(range(len(lengths)))
    for sl in batches:
        assert (sl.stop - sl.start) * lengths[sl.start] <= 256 or sl.stop - sl.start == 1
    # short texts share a batch, long ones do not
    assert batches[0] == slice(0, 2) and batches[-1].stop - batches[-1].start > 2
    assert token_budget_batches([], 256) == []
    assert token_budget_batches([500], 256) == [slice(0, 1)]


def test_pad_batch_right_pads_with_mask():
    ids, mask = pad_batch([[101, 7, 102], [101, 102]], pad_id=0)
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


# -- the encoder against bare SentenceTransformer.encode -------------------------------------------


@pytest.fixture(scope="module")
def encoder():
    return get_encoder(EncoderSpec.from_config(EmbedConfig(), threads=None))


def test_encoder_is_loaded_once_per_process(encoder):
    assert get_encoder(EncoderSpec.from_config(EmbedConfig())) is encoder
    assert encoder.uses_fast_path and encoder.max_length == 128 and encoder.dimension == 384


def test_fast_path_matches_sentence_transformers_encode(encoder):
    texts = sample_texts(64)
    tokenizer = encoder.model.tokenizer
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    assert max(lengths) > 128 > min(lengths)  # both truncated and short texts are covered
    fast = encoder.encode(texts)
    bare = encoder.model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    assert fast.shape == (64, 384) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, bare, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)


def test_vectors_do_not_depend_on_input_order_or_batching(encoder):
    texts = sample_texts(24, start=100)
    forward = encoder.encode(texts)
    backward = encoder.encode(texts[::-1])[::-1]
    np.testing.assert_allclose(forward, backward, atol=1e-6, rtol=0)
    one = encoder.encode(texts[5:6])
    np.testing.assert_allclose(one[0], forward[5], atol=1e-6, rtol=0)
    assert encoder.encode([]).shape == (0, 384)


def test_pretruncated_tokenisation_equals_the_tokenizers_own_truncation(encoder):
    texts = sample_texts(400)
    texts += ["word " * 2000, "x" * 5000, "short", "a " + "b" * 900 + " c"]  # long, no spaces, short, edge
    assert encoder._plan.word_level_pretokenizer
    plain = encoder.model.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]
    assert encoder.tokenize(texts) == plain
    assert sum(len(t) > 128 * 6 for t in texts) > 50  # the shortcut was actually taken


def test_pipelined_batches_give_the_same_vectors(encoder):
    # The CUDA path's producer thread (tokenise + pad ahead of the forward pass), run on CPU.
    texts = sample_texts(24, start=200)
    np.testing.assert_array_equal(
        encoder._encode_fast(texts, pipelined=True), encoder._encode_fast(texts, pipelined=False)
    )


def test_prefetch_keeps_order_reraises_and_stops_its_producer():
    import threading

    from jobs.embed.encoder import _prefetch

    assert list(_prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("tokenizer broke")

    with pytest.raises(ValueError, match="tokenizer broke"):
        list(_prefetch(failing(), depth=2))

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    stream = _prefetch(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # the consumer gives up (e.g. CUDA OOM): the producer must not block forever
    assert not any(t.name == "embed-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) < 10


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs CUDA")
def test_cuda_fp16_fast_path_matches_bare_encode_on_the_gpu():
    spec = EncoderSpec.from_config(EmbedConfig(device="cuda"))
    assert (spec.precision, spec.batch_size >= 256) == ("fp16", True)
    gpu = get_encoder(spec)
    texts = sample_texts(512)
    fast = gpu.encode(texts)
    bare = gpu.model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    # fp16 kernels differ with batch shapes: compare directions, not bits
    assert float(np.min(np.sum(fast * bare, axis=1))) > 0.999
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-3)
