"""Airflow reads AIRFLOW_HOME when it is first imported: point it at a throwaway folder before that."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_HOME = Path(tempfile.mkdtemp(prefix="sidpipe-airflow-"))


def airflow_env(home: Path, dags_folder: Path) -> dict[str, str]:
    """Environment of an isolated Airflow: its own home, SQLite DB, DAGs folder and Spark connection."""
    import sys

    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW_CONN_SPARK_LOCAL": '{"conn_type": "spark", "host": "local[2]"}',
        "SIDPIPE_REPO": str(REPO),
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
    }


os.environ.update(airflow_env(_HOME, REPO / "dags"))
# Airflow's logging setup routes INFO to pytest's capture stream; py4j logs at exit, after it closed.
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def isolated_airflow_env():
    """``isolated_airflow_env(home, dags_folder) -> env`` for Airflow CLI subprocesses."""
    return airflow_env
