"""Data contracts of sidpipe, declared once as pyarrow schemas.

Every other representation (Spark ``StructType``, Hugging Face ``Features``, great-expectations
suites) is derived from these objects in :mod:`schemas.convert`; column names are referenced through
the ``C`` namespaces of each module, never retyped as string literals elsewhere.
"""

from schemas.catalog import CATALOG, RAW_CATALOG
from schemas.embeddings import EMBEDDINGS
from schemas.interactions import INTERACTIONS, RAW_INTERACTIONS
from schemas.quarantine import QUARANTINE
from schemas.sft import SFT_RECORDS
from schemas.sids import SIDS

SCHEMA_VERSION = "1"

ALL = {
    "raw_catalog": RAW_CATALOG,
    "catalog": CATALOG,
    "raw_interactions": RAW_INTERACTIONS,
    "interactions": INTERACTIONS,
    "quarantine": QUARANTINE,
    "embeddings": EMBEDDINGS,
    "sids": SIDS,
    "sft_records": SFT_RECORDS,
}

__all__ = [
    "ALL",
    "CATALOG",
    "EMBEDDINGS",
    "INTERACTIONS",
    "QUARANTINE",
    "RAW_CATALOG",
    "RAW_INTERACTIONS",
    "SCHEMA_VERSION",
    "SFT_RECORDS",
    "SIDS",
]
