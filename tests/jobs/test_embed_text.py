"""Rendering catalog items into model text, and the embed config's validation (no Spark, no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.common.config import ConfigError
from jobs.common.pipeline_config import PipelineConfig
from jobs.embed.config import TEMPLATE_FIELDS, EmbedConfig
from jobs.embed.text import primary_field_missing, record_json, render_text, text_hash
from schemas.catalog import CATALOG

ITEM = {
    "item_id": "7",
    "title": "  Stanley TRA708T   Staples ",
    "brand": "Stanley",
    "category_path": ["Industrial & Scientific", "Fasteners", "Staples"],
    "description": "Heavy-duty staples\nfor insulation.",
}


def test_template_fields_are_catalog_columns():
    assert set(TEMPLATE_FIELDS) <= set(CATALOG.names)


def test_renders_every_part_in_template_order():
    text = render_text(ITEM, EmbedConfig())
    assert text.split("\n") == [
        "Stanley TRA708T Staples",
        "Brand: Stanley",
        "Category: Industrial & Scientific > Fasteners > Staples",
        "Heavy-duty staples for insulation.",
    ]


@pytest.mark.parametrize("missing", [None, "", "   ", float("nan")])
def test_missing_title_falls_back_to_other_fields_without_dangling_labels(missing):
    cfg = EmbedConfig()
    item = {**ITEM, "title": missing, "brand": missing}
    text = render_text(item, cfg)
    assert (
        text == "Category: Industrial & Scientific > Fasteners > Staples\nHeavy-duty staples for insulation."
    )
    assert "Brand" not in text
    assert primary_field_missing(item, cfg)
    assert not primary_field_missing(ITEM, cfg)


def test_category_path_from_arrow_arrives_as_numpy_array():
    item = {**ITEM, "category_path": np.array(["A", " ", "B"], dtype=object)}
    assert "Category: A > B" in render_text(item, EmbedConfig())


def test_item_without_any_text_renders_empty():
    item = {"item_id": "9", "title": " ", "brand": None, "category_path": [], "description": None}
    assert render_text(item, EmbedConfig()) == ""
    assert render_text({**item, "category_path": ["", "  "]}, EmbedConfig()) == ""


def test_custom_template_separator_and_attributes():
    cfg = EmbedConfig(template=("{brand} {title}", "{attributes}"), separator=" | ", category_separator="/")
    item = {**ITEM, "attributes": [("size", "1/2 in"), ("color", " steel ")]}
    assert render_text(item, cfg) == "Stanley Stanley TRA708T Staples | color: steel; size: 1/2 in"
    # a part needs every field it names
    assert render_text({**item, "brand": None}, cfg) == "color: steel; size: 1/2 in"
    assert render_text({**item, "attributes": {"size": "2 in"}}, cfg).endswith("| size: 2 in")


def test_text_is_not_truncated_by_characters():
    long_description = "word " * 5000
    text = render_text({**ITEM, "description": long_description}, EmbedConfig())
    assert len(text) > 20000  # the tokenizer truncates at max_seq_length, not the renderer


def test_text_hash_is_stable_and_content_sensitive():
    assert text_hash("abc") == text_hash("abc")
    assert text_hash("abc") != text_hash("abd")
    assert len(text_hash("")) == 32


def test_record_json_is_readable_json():
    record = json.loads(
        record_json(
            {**ITEM, "category_path": np.array(["A"]), "price": float("nan")},
            ["item_id", "category_path", "price"],
        )
    )
    assert record == {"item_id": "7", "category_path": ["A"], "price": None}


@pytest.mark.parametrize(
    "override, message",
    [
        ({"template": ["{titel}"]}, "unknown field"),
        ({"template": []}, "at least one part"),
        ({"template": ["no fields here"]}, "names no field"),
        ({"template": ["{title"]}, "not a valid format string"),
        ({"device": "gpu"}, "device must be"),
        ({"max_seq_length": 0}, "max_seq_length"),
        ({"batch_size": 0}, "batch_size"),
        ({"precision": "fp8"}, "precision"),
        ({"modle": "x"}, "modle"),
    ],
)
def test_bad_config_is_rejected_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=message):
        PipelineConfig.load(overrides={"embed": override})


def test_default_config_loads_and_hashes():
    cfg = PipelineConfig.load()
    assert cfg.embed.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert cfg.embed.config_hash() == EmbedConfig().config_hash()
    assert EmbedConfig(max_seq_length=64).config_hash() != EmbedConfig().config_hash()
