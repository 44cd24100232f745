"""Shared checks of the tokenizer tests."""

from __future__ import annotations

import numpy as np
import pytest

from tokenizer.codebook import Codebook


@pytest.fixture
def assert_round_trip(tmp_path):
    """``assert_round_trip(codebook, emb, tampered_file, tampered_array)``: save/load keeps the id and the
    codes, a re-save is byte-identical, and overwriting one array file makes ``load`` refuse it as corrupt."""

    def check(codebook: Codebook, emb: np.ndarray, tampered_file: str, tampered_array: np.ndarray) -> None:
        codebook.save(tmp_path / "a")
        loaded = Codebook.load(tmp_path / "a")
        assert loaded.codebook_id == codebook.codebook_id
        np.testing.assert_array_equal(loaded.encode(emb), codebook.encode(emb))
        loaded.save(tmp_path / "b")
        for f in sorted((tmp_path / "a").iterdir()):
            assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name
        np.save(tmp_path / "a" / tampered_file, tampered_array)
        with pytest.raises(ValueError, match="corrupt"):
            Codebook.load(tmp_path / "a")

    return check
