"""Config: typed, validated with the key named, loadable from YAML, hashed stably."""

import pytest

from jobs.common.config import ConfigError
from jobs.common.pipeline_config import DEFAULT_CONFIG, PipelineConfig


def test_default_yaml_loads_and_hash_is_stable():
    a, b = PipelineConfig.load(DEFAULT_CONFIG), PipelineConfig.load(DEFAULT_CONFIG)
    assert a.config_hash() == b.config_hash()
    assert PipelineConfig.load(overrides={"seed": a.seed + 1}).config_hash() != a.config_hash()


def test_stage_hash_changes_only_with_its_own_section():
    base = PipelineConfig.load()
    other = PipelineConfig.load(overrides={"ingest": {"strip_html": not base.ingest.strip_html}})
    assert other.stage_hash("ingest") != base.stage_hash("ingest")
    assert other.stage_hash("sft") == base.stage_hash("sft")


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("ingest:\n  strip_htm: true\n")
    with pytest.raises(ConfigError, match=r"ingest\.strip_htm"):
        PipelineConfig.load(path)


def test_bad_value_is_an_error_naming_key_and_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("spark:\n  shuffle_partitions: 0\n")
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitions.*got 0"):
        PipelineConfig.load(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        PipelineConfig.load(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        PipelineConfig.load(tmp_path / "list.yaml")


def test_default_yaml_documents_exactly_the_built_in_defaults():
    assert PipelineConfig.load(DEFAULT_CONFIG).to_dict() == PipelineConfig().to_dict()
