"""Every entry point logs sidpipe's progress and keeps libraries' INFO chatter out (run in a fresh
interpreter: pytest's own log capture would hide what a real run prints)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

EMIT = """
import logging, sys
{setup}
logging.getLogger("sidpipe.check").info("gate passed")
logging.getLogger("great_expectations._docs_decorators").info("Skipping registering function")
logging.getLogger("great_expectations").warning("library warning")
"""


def _stderr(setup: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", EMIT.format(setup=setup)], cwd=REPO, capture_output=True, text=True, check=True
    )
    return done.stderr


@pytest.mark.parametrize(
    "setup",
    [
        "from jobs.common.logs import configure_logging; configure_logging()",
        # what a stage's spark-submit runs before the stage (argument errors exit before any Spark work)
        (
            "from jobs.common import stage\n"
            "try:\n    stage.stage_main('ingest', None, ['--bogus'])\nexcept SystemExit:\n    pass"
        ),
    ],
    ids=["configure_logging", "stage_main"],
)
def test_pipeline_info_shows_and_library_info_does_not(setup):
    err = _stderr(setup)
    assert "INFO sidpipe.check: gate passed" in err
    assert "WARNING great_expectations: library warning" in err
    assert "Skipping registering function" not in err


def test_cli_verbose_lets_library_info_through():
    quiet = _stderr("from sidpipe import cli; cli.main(['versions', '/nonexistent-root'])")
    loud = _stderr("from sidpipe import cli; cli.main(['-v', 'versions', '/nonexistent-root'])")
    assert "Skipping registering function" not in quiet and "gate passed" not in quiet
    assert "Skipping registering function" in loud and "INFO sidpipe.check: gate passed" in loud


@pytest.mark.parametrize(
    ("setup", "chatter"),
    [
        # GX pins one of its loggers at INFO when imported; creating the gates' context used to log
        ("from schemas.expectations._ge import gx_context; gx_context()", "INFO great_expectations"),
        # each Spark worker that loads the model used to draw transformers' weight-loading bar
        (
            "from jobs.embed.config import EmbedConfig\n"
            "from jobs.embed.encoder import EncoderSpec, TextEncoder\n"
            "TextEncoder(EncoderSpec.from_config(EmbedConfig()))",
            "Loading weights",
        ),
    ],
    ids=["gate_context", "model_load"],
)
def test_libraries_that_force_their_own_output_stay_quiet(setup, chatter):
    err = _stderr("from jobs.common.logs import configure_logging; configure_logging()\n" + setup)
    assert "INFO sidpipe.check: gate passed" in err
    assert chatter not in err, err[-2000:]
