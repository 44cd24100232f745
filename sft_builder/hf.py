"""The Hugging Face view of the corpus: a DatasetDict (train/validation/test) read from the Parquet folder."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from jobs.common.io import fingerprint_path
from schemas.convert import to_hf_features
from schemas.sft import SFT_RECORDS, SPLITS


def split_files(parquet_root: Path | str, split: str, task: str = "*") -> list[str]:
    """The Parquet files of one split (and task), in a stable order."""
    return sorted(glob.glob(os.path.join(str(parquet_root), f"split={split}", f"task={task}", "*.parquet")))


def load_corpus(parquet_root: Path | str, *, cache_dir: Path | str, task: str = "*"):
    """DatasetDict of the Parquet corpus with Features derived from SFT_RECORDS (HF caches in ``cache_dir``)."""
    from datasets import Dataset, DatasetDict

    features = to_hf_features(SFT_RECORDS)
    out = {}
    for split in SPLITS:
        files = split_files(parquet_root, split, task)
        if files:
            ds = Dataset.from_parquet(files, features=features, cache_dir=str(cache_dir))
        else:
            ds = Dataset.from_dict({name: [] for name in features}, features=features)
        # datasets derives the fingerprint from the (temporary) cache path; the content's hash keeps
        # save_to_disk byte-identical across reruns
        out[split] = Dataset(ds.data, info=ds.info, split=ds.split, fingerprint=_content_fingerprint(parquet_root, files, split))
    return DatasetDict(out)


def _content_fingerprint(parquet_root: Path | str, files: list[str], split: str) -> str:
    parts = [str(SFT_RECORDS.metadata), split] + [f"{os.path.relpath(f, parquet_root)}:{fingerprint_path(f)}" for f in files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def write_dataset_dict(parquet_root: Path | str, out_dir: Path | str) -> dict[str, int]:
    """``save_to_disk`` the corpus at ``out_dir`` (replaced); returns rows per split. HF's cache lives in a
    temporary folder removed afterwards, never in the home folder."""
    from datasets.utils import logging as hf_logging

    out_dir = Path(out_dir)
    cache = tempfile.mkdtemp(prefix="sidpipe-hf-")
    # A batch job's log is no place for progress bars (one per split, twice)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        dd = load_corpus(parquet_root, cache_dir=cache)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        dd.save_to_disk(str(out_dir))
        return {split: dd[split].num_rows for split in SPLITS}
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
        shutil.rmtree(cache, ignore_errors=True)
