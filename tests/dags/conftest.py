"""The DagBag of dags/, parsed once per session: the DAG tests read it, and the trigger-form
browser test takes the DAG ids it covers from it (a new DAG is covered without a test edit)."""

from __future__ import annotations

from functools import cache

import pytest

from tests.conftest import REPO


@cache
def load_dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="session")
def dagbag():
    return load_dagbag()
