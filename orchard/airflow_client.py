"""A small client for Airflow's REST API v2: token, trigger a DAG run, follow it, read logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.stack import secrets
from orchard.stack.services import AIRFLOW_PASSWORD_SECRET

FINISHED = {"success", "failed"}


class AirflowError(OrchardError):
    pass


class AirflowRefused(AirflowError):
    """Airflow refused a trigger's conf (a Param failing its schema); `reason` says which."""

    def __init__(self, dag_id: str, reason: str):
        super().__init__(f"Airflow refused the run of {dag_id}: {reason}")
        self.reason = reason


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AirflowClient:
        path = settings.secrets_dir / AIRFLOW_PASSWORD_SECRET
        if not path.exists():
            raise AirflowError(f"no Airflow password in {path}: run `orchard up` first")
        password, _ = secrets.get_or_create(settings.secrets_dir, AIRFLOW_PASSWORD_SECRET)
        return cls(settings.airflow_base_url, settings.airflow_admin_user, password)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------
    def token(self) -> str:
        try:
            response = self._http.post("/auth/token", json=self._credentials)
        except httpx.HTTPError as error:
            raise AirflowError(
                f"Airflow at {self.base_url} does not answer ({error}): is it up?"
            ) from None
        if response.status_code >= 400:
            raise AirflowError(
                f"Airflow refused the login of {self._credentials['username']!r} "
                f"({response.status_code}): check the admin password under ORCHARD_HOME/secrets"
            )
        return response.json()["access_token"]

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._token is None:
            self._token = self.token()
        headers = {"Authorization": f"Bearer {self._token}"}
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code == 401:  # token expired: log in again once
            self._token = self.token()
            headers["Authorization"] = f"Bearer {self._token}"
            response = self._http.request(method, path, headers=headers, **kwargs)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise AirflowError(f"{method} {path}: {response.status_code} {_detail(response)}")
        return response.json()

    # -- DAGs and runs ----------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the DAG processor has parsed `dag_id`; report a broken file at once."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.request("GET", f"/api/v2/dags/{dag_id}")
            if response.status_code == 200:
                return response.json()
            errors = self._json("GET", "/api/v2/importErrors").get("import_errors", [])
            for error in errors:
                if dag_id in error.get("filename", ""):
                    raise AirflowError(
                        f"DAG file {error['filename']} does not import:\n{error['stack_trace']}"
                    )
            if time.monotonic() > deadline:
                raise AirflowError(f"Airflow has no DAG {dag_id!r} after {timeout:.0f} s")
            time.sleep(1.0)

    def unpause(self, dag_id: str) -> None:
        self._json("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self._json("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": True})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        response = self.request(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            json={"logical_date": None, "conf": conf or {}},
        )
        if response.status_code == 400:
            # The first line names the bad Param; the rest is the JSON schema dump.
            reason = _detail(response).strip().splitlines()[0]
            raise AirflowRefused(dag_id, reason)
        if response.status_code >= 400:
            raise AirflowError(f"trigger {dag_id}: {response.status_code} {_detail(response)}")
        return response.json()["dag_run_id"]

    def wait_for_new_run(self, dag_id: str, after: str, timeout: float = 300.0) -> str:
        """The id of the first run of `dag_id` queued at or after `after` (ISO time), e.g.
        one an asset event triggered; waits for it to appear."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self._json(
                "GET",
                f"/api/v2/dags/{dag_id}/dagRuns",
                params={"order_by": "run_after", "run_after_gte": after, "limit": 1},
            )["dag_runs"]
            if runs:
                return runs[0]["dag_run_id"]
            if time.monotonic() > deadline:
                raise AirflowError(
                    f"no run of {dag_id} started within {timeout:.0f} s: is it unpaused, and "
                    "did the upstream run publish its asset?"
                )
            time.sleep(2.0)

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 1800.0,
        on_state: Callable[[str], None] | None = None,
    ) -> str:
        deadline = time.monotonic() + timeout
        last = None
        while True:
            state = self.run_state(dag_id, run_id)
            if state != last and on_state:
                on_state(state)
            last = state
            if state in FINISHED:
                return state
            if time.monotonic() > deadline:
                raise AirflowError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")
            time.sleep(1.0)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self._json("GET", path)["task_instances"]

    def return_value(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """What a task returned (its `return_value` XCom): for Orchard's step tasks, the
        output directory (holding `manifest.json`) they published or reused."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries"
        return self._json("GET", f"{path}/return_value", params={"deserialize": True})["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        body = self._json("GET", path, params={"full_content": True})
        content = body.get("content", "")
        if isinstance(content, str):
            return content
        # Airflow 3 returns structured entries: one dict (or string) per line.
        return "\n".join(
            entry.get("event", "") if isinstance(entry, dict) else str(entry) for entry in content
        )


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text[:500]
    return detail if isinstance(detail, str) else str(detail)[:500]
