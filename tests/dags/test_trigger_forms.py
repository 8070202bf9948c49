"""The Airflow UI as a data engineer uses it: Debian's Chromium (tests/ui/browser.py) logs
into the stack's Airflow and opens the *Trigger* dialog of every DAG in the DagBag, so a
new DAG is covered without editing this file.

Each dialog must submit the Params' defaults as they are: its *Trigger* button enabled, no
Param and no section of the form flagged, and the run Airflow creates carrying exactly the
defaults. Those DAGs are paused meanwhile (the dialog's "Unpause … on trigger" unticked), so
their runs wait queued and do no work; the runs are deleted and the DAGs left as they were.
`orchard_smoke` is triggered from its dialog for real and followed to *Success* on the run
page the dialog opens. Every DAG page also renders its `doc_md` (*Dag Docs*).

Screenshots land in test-artifacts/airflow/ (git-ignored): `<dag>-trigger.png`, the dialog
with its defaults, taken before the checks; `orchard_smoke-run.png`; `<dag>-docs.png`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Locator, Page, expect

from orchard import credentials
from orchard.airflow_client import AirflowClient
from testkit.browser import chromium, require_browser
from tests.conftest import REPO
from tests.dags.conftest import load_dagbag

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = REPO / "test-artifacts" / "airflow"
SMOKE = "orchard_smoke"
SMOKE_TIMEOUT = 300_000  # ms: a Ray job and an MLflow run on a busy 2-core machine
# What the form marks wrong: a section whose title carries the error icon, or a field
# marked invalid ("This field is required" and the like).
FLAGGED_SECTION = '[data-part="item-trigger"]:has(> .chakra-stack svg)'
FLAGGED_FIELD = "[data-invalid]"


def dag_ids() -> list[str]:
    return sorted(load_dagbag().dag_ids)


@dataclass
class AirflowUI:
    page: Page
    url: str

    def open_trigger_dialog(self, dag_id: str) -> Locator:
        self.page.goto(f"{self.url}/dags/{dag_id}")
        self.page.get_by_test_id("trigger-dag-button").click()
        dialog = self.page.get_by_role("dialog")
        expect(dialog).to_contain_text(f"Trigger Dag - {dag_id}")
        expect(dialog.get_by_test_id("config-form")).to_be_visible()
        return dialog


@pytest.fixture(scope="module")
def airflow(stack) -> Iterator[AirflowClient]:
    client = AirflowClient.from_settings(stack.settings())
    for dag_id in dag_ids():
        client.wait_for_dag(dag_id)  # parsed by the stack's DAG processor, or its import error
    yield client
    client.close()


@pytest.fixture(scope="module")
def ui(stack, airflow) -> Iterator[AirflowUI]:
    """One page of one headless Chromium, logged into the stack's Airflow as its admin."""
    require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    settings = stack.settings()
    password, _ = credentials.airflow_admin_password(settings)
    with chromium() as browser:
        # Tall enough for a whole dialog, so its screenshot shows the Trigger button.
        context = browser.new_context(viewport={"width": 1280, "height": 1800})
        context.set_default_timeout(60_000)
        page = context.new_page()
        page.goto(settings.airflow_base_url)
        page.get_by_label("Username").fill(settings.airflow_username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url)
        try:
            yield AirflowUI(page=page, url=settings.airflow_base_url)
        finally:
            context.close()


def defaults(dag_id: str) -> dict:
    return {name: param.value for name, param in load_dagbag().dags[dag_id].params.items()}


def check_submittable(dialog: Locator, dag_id: str) -> None:
    """The dialog with its defaults: every Param shown, none flagged, Trigger enabled."""
    form = dialog.get_by_test_id("config-form")
    params = load_dagbag().dags[dag_id].params
    for name in params:
        expect(
            form.locator(f'[id="element_{name}"], [name="element_{name}"]').first
        ).to_be_attached()
    # A label reads "Title *" where the form takes the Param as required.
    labels = {
        re.sub(r"\s*\*$", "", text.strip())
        for text in form.locator('label[data-part="label"]').all_text_contents()
    }
    titles = {param.schema.get("title", name) for name, param in params.items()}
    assert titles <= labels, f"{dag_id}: the form lacks {titles - labels}"
    flagged = [*form.locator(FLAGGED_SECTION).all_inner_texts()]
    flagged += form.locator(FLAGGED_FIELD).all_inner_texts()
    assert flagged == [], f"{dag_id}: the form flags {flagged} with the defaults"
    expect(dialog.get_by_test_id("trigger-dag-submit")).to_be_enabled()


def submit(ui: AirflowUI, dialog: Locator, dag_id: str) -> dict:
    """Click the dialog's Trigger; the run Airflow created (the POST's answer)."""

    def is_trigger(response) -> bool:
        return response.request.method == "POST" and response.url.endswith(
            f"/api/v2/dags/{dag_id}/dagRuns"
        )

    with ui.page.expect_response(is_trigger) as answer:
        dialog.get_by_test_id("trigger-dag-submit").click()
    response = answer.value
    assert response.ok, f"{dag_id}: Airflow refused the defaults: {response.text()}"
    return response.json()


@pytest.mark.parametrize("dag_id", [d for d in dag_ids() if d != SMOKE])
def test_the_trigger_dialog_submits_the_params_defaults(dag_id, airflow, ui):
    was_paused = airflow.wait_for_dag(dag_id)["is_paused"]
    airflow.pause(dag_id)
    run = None
    try:
        dialog = ui.open_trigger_dialog(dag_id)
        dialog.screenshot(path=ARTIFACTS / f"{dag_id}-trigger.png")
        check_submittable(dialog, dag_id)
        unpause = dialog.locator("label").filter(has_text=f"Unpause {dag_id} on trigger")
        unpause.click()  # ticked by default: the run must wait queued, doing no work
        expect(unpause.locator("input")).not_to_be_checked()
        run = submit(ui, dialog, dag_id)
        assert run["conf"] == defaults(dag_id)
        assert airflow.wait_for_dag(dag_id)["is_paused"]
        assert airflow.run_state(dag_id, run["dag_run_id"]) == "queued"
    finally:
        if run is not None:
            airflow.request("DELETE", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}")
        if not was_paused:
            airflow.unpause(dag_id)


def test_orchard_smoke_runs_from_its_trigger_dialog_to_success(airflow, ui):
    airflow.unpause(SMOKE)
    dialog = ui.open_trigger_dialog(SMOKE)
    dialog.screenshot(path=ARTIFACTS / f"{SMOKE}-trigger.png")
    check_submittable(dialog, SMOKE)
    run = submit(ui, dialog, SMOKE)
    assert run["conf"] == defaults(SMOKE)
    # The dialog opens the new run's page, whose header follows the run's state.
    ui.page.wait_for_url(re.compile(f"/dags/{SMOKE}/runs/{re.escape(run['dag_run_id'])}"))
    header = ui.page.get_by_test_id("header-card")
    expect(header.get_by_role("heading", name=run["dag_run_id"])).to_be_visible()
    state = header.get_by_test_id("state-badge")
    expect(state).to_have_text(re.compile("Success|Failed"), timeout=SMOKE_TIMEOUT)
    ui.page.screenshot(path=ARTIFACTS / f"{SMOKE}-run.png")
    expect(state).to_have_text("Success")


@pytest.mark.parametrize("dag_id", dag_ids())
def test_the_dag_page_renders_its_doc_md(dag_id, ui):
    doc = load_dagbag().dags[dag_id].doc_md
    ui.page.goto(f"{ui.url}/dags/{dag_id}")
    ui.page.get_by_test_id("markdown-button").click()
    docs = ui.page.get_by_role("dialog")
    expect(docs.get_by_role("heading", name=dag_id, exact=True)).to_be_visible()
    docs.screenshot(path=ARTIFACTS / f"{dag_id}-docs.png")
    # Rendered, not shown as source: every bold and code span became an element.
    assert "###" not in docs.inner_text() and "**" not in docs.inner_text()
    assert docs.locator("strong").count() == len(re.findall(r"\*\*[^*]+\*\*", doc))
    assert docs.locator("code").count() == len(re.findall(r"`[^`]+`", doc))
    ui.page.keyboard.press("Escape")
