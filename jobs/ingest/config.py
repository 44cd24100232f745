"""Configuration of the ingest stage."""

from typing import Literal

from pydantic import Field

from jobs.common.config import StageConfig


class IngestConfig(StageConfig):
    # Text fields of which at least one must be non-empty after normalisation for an item to be usable.
    usable_text_fields: tuple[Literal["title", "description"], ...] = ("title", "description")
    strip_html: bool = True
    # How a category path is split when it arrives as one string (CSV, LC-Rec): ">" for "A > B", or
    # "lcrec" for the LC-Rec comma layout where names themselves may contain ", ".
    category_separator: str = ">"
    default_event_type: str = Field(default="interaction", min_length=1)
    # Write outputs into this many files (0 = let Spark decide). One file keeps the sample readable.
    output_files: int = Field(default=1, ge=0)
