"""Configuration of the sids stage (assign, resolve collisions, render tokens, trie, glossary)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from jobs.common.config import StageConfig


class SidConfig(StageConfig):
    resolution: Literal["disambiguation", "reassign", "hybrid"] = "reassign"
    token_template: str = "<{level}_{code}>"
    level_names: str = "abcdefgh"
    item_template: str = "<item_{code}>"
    glossary_top_terms: int = Field(default=8, ge=1)
    glossary_examples: int = Field(default=3, ge=0)
    # frozen-codebook reruns: unchanged items (same item_id + text_hash, or same raw codes) keep their SID
    keep_unchanged: bool = True
    output_files: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self):
        from tokenizer.render import TokenFormat

        TokenFormat(self.token_template, self.level_names, self.item_template)  # raises on a bad format
        return self

    def token_format(self):
        from tokenizer.render import TokenFormat

        return TokenFormat(self.token_template, self.level_names, self.item_template, hybrid=self.resolution == "hybrid")
