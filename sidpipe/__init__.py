"""sidpipe: catalog + interaction logs -> semantic IDs -> multi-task SFT corpus."""

__version__ = "0.1.0"


def load(root, version: str = "latest", *, dataset: str = "sidpipe"):
    """Load a published version's Hugging Face ``DatasetDict`` (offline, from disk)."""
    from sidpipe.publish import load_dataset_dict

    return load_dataset_dict(root, version=version, dataset=dataset)
