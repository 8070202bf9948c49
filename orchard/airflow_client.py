"""A small client for Airflow's REST API v2: token, trigger a DAG run, follow it, read logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from orchard.credentials import AirflowLogin, CredentialsError, airflow_login
from orchard.errors import OrchardError
from orchard.settings import Settings

FINISHED = {"success", "failed"}
RETRIED_STATUSES = {500, 502, 503, 504}
RETRY_WAITS_S = (1.0, 3.0, 9.0)


_REQUIRED = object()  # return_value without a default: a missing XCom is an error


class AirflowError(OrchardError):
    pass


class AirflowRefused(AirflowError):
    """Airflow refused a trigger's conf (a Param failing its schema); `reason` says which."""

    def __init__(self, dag_id: str, reason: str):
        super().__init__(f"Airflow refused the run of {dag_id}: {reason}")
        self.reason = reason


class AirflowClient:
    def __init__(self, base_url: str, login: AirflowLogin, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._login = login
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = login.token

    @classmethod
    def from_settings(cls, settings: Settings) -> AirflowClient:
        """A client of the configured Airflow, signed in with the login from settings
        (`ORCHARD_AIRFLOW_TOKEN`, or `_USERNAME` + `_PASSWORD`), else the local stack's."""
        try:
            login = airflow_login(settings)
        except CredentialsError as error:
            raise AirflowError(str(error)) from None
        return cls(settings.airflow_base_url, login)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------
    def token(self) -> str:
        login = self._login
        if login.password is None:  # a configured token: nothing to exchange
            raise AirflowError(
                f"Airflow at {self.base_url} refused the token of {login.source} (401): "
                "it is wrong or has expired; set a new ORCHARD_AIRFLOW_TOKEN, or "
                "ORCHARD_AIRFLOW_USERNAME and ORCHARD_AIRFLOW_PASSWORD instead"
            )
        credentials = {"username": login.username, "password": login.password}
        try:
            response = self._http.post("/auth/token", json=credentials)
        except httpx.HTTPError as error:
            raise AirflowError(
                f"Airflow at {self.base_url} does not answer ({error}): is it up?"
            ) from None
        if response.status_code >= 400:
            raise AirflowError(
                f"Airflow at {self.base_url} refused the login of {login.username!r} "
                f"({response.status_code}): check the password in {login.source} and "
                "ORCHARD_AIRFLOW_USERNAME"
            )
        return response.json()["access_token"]

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call; an idempotent one (not POST) that met a server error is tried
        again (RETRY_WAITS_S). The local stack's Airflow answers 500 "Database error"
        when its SQLite database stays locked for 5 s: `make run` met it on unpausing
        `orchard_build` while the scheduled DAGs' first tasks wrote at start-up. (A
        longer SQLite busy timeout made it worse: two requests in Airflow's API server
        then waited a minute on each other.)"""
        waits = () if method.upper() == "POST" else RETRY_WAITS_S
        for wait in (*waits, None):
            response = self._request(method, path, **kwargs)
            if response.status_code not in RETRIED_STATUSES or wait is None:
                return response
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
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
        """Start a run; its id is made here (Airflow's manual form), so a POST that met a
        server error can be sent again: a 409 then means the first one made the run."""
        run_id = f"manual__{datetime.now(UTC).isoformat()}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        for attempt, wait in enumerate((*RETRY_WAITS_S, None)):
            response = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)
            if response.status_code == 409 and attempt > 0:
                return run_id
            if response.status_code not in RETRIED_STATUSES or wait is None:
                break
            time.sleep(wait)
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

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.dag_run(dag_id, run_id)["state"]

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 1800.0,
        on_state: Callable[[str], None] | None = None,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> str:
        """Poll the run every second until it ends; `on_state` gets each new state,
        `on_poll` the run (its `dagRuns` entry) at every poll."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            run = self.dag_run(dag_id, run_id)
            state = run["state"]
            if state != last and on_state:
                on_state(state)
            if on_poll:
                on_poll(run)
            last = state
            if state in FINISHED:
                return state
            if time.monotonic() > deadline:
                raise AirflowError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")
            time.sleep(1.0)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self._json("GET", path)["task_instances"]

    def running_task_instances(self, run_after_gte: str) -> list[dict[str, Any]]:
        """Running task instances of every DAG's runs queued at or after `run_after_gte`."""
        params = {"state": "running", "run_after_gte": run_after_gte, "limit": 100}
        return self._json("GET", "/api/v2/dags/~/dagRuns/~/taskInstances", params=params)[
            "task_instances"
        ]

    def return_value(self, dag_id: str, run_id: str, task_id: str, default: Any = _REQUIRED) -> Any:
        """What a task returned (its `return_value` XCom): for Orchard's step tasks, the
        output directory (holding `manifest.json`) they published or reused. A task that
        returned None stores no XCom: with a `default`, that (a 404) gives the default."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries"
        response = self.request("GET", f"{path}/return_value", params={"deserialize": True})
        if response.status_code == 404 and default is not _REQUIRED:
            return default
        if response.status_code >= 400:
            raise AirflowError(
                f"GET {path}/return_value: {response.status_code} {_detail(response)}"
            )
        return response.json()["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        body = self._json("GET", path, params={"full_content": True})
        return _log_text(body.get("content", ""))

    def task_log_since(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        try_number: int = 1,
        map_index: int = -1,
        token: str | None = None,
    ) -> tuple[str, str | None]:
        """A running task's log from where the last call's `token` left off (all of it
        without one): (new text, the token for the next call; None once the log ended)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        params: dict[str, Any] = {"map_index": map_index}
        if token:
            params["token"] = token
        body = self._json("GET", path, params=params)
        return _log_text(body.get("content", "")), body.get("continuation_token")


def _log_text(content: str | list) -> str:
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
