"""The Airflow UI as its users drive it, in a real browser: Debian's chromium, headless,
through selenium, against `airflow standalone` (API server, scheduler, DAG processor) started
for this module with a private home and port.

- A data engineer triggers `feature_backfill` from its trigger form: the form explains its
  params, cannot be sent while a required date is missing, refuses a set name that is not a
  name with an error naming the param (no run is made), and the run it starts carries exactly
  the params typed, and the scheduler runs it. (The run's
  success needs a lake and Spark: tests/test_feature_backfill_dag.py runs the same DAG to
  success with `airflow dags test`.)
- On call, during an incident drill, pauses `streaming_features` from its page: the API reads
  it paused, and a run requested meanwhile (as a redeploy would) is not started by the same
  scheduler that started the backfill's.

Screenshots of the trigger form and of the paused DAG are kept in the module's folder (its
path is printed): the artifacts a person looks at when this fails.
"""

from __future__ import annotations

import shutil
import time

import pytest
import requests

from tests.conftest import free_port, write_config

START, END = "2026-11-01", "2026-11-07"


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory, airflow_home):
    from mercury.config import load_settings
    from mercury.stack.airflow_standalone import AirflowStandalone

    folder = tmp_path_factory.mktemp("airflow_ui")
    path = write_config(folder, airflow={"api_port": free_port(),
                                         "home": str(airflow_home(folder / "airflow"))})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(path))
        # Its log servers too on ports of their own: a `make up` Airflow may hold the defaults.
        patch.setenv("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", str(free_port()))
        patch.setenv("AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT", str(free_port()))
        airflow = AirflowStandalone(load_settings())
        airflow.launch()
        try:
            deadline = time.monotonic() + airflow.start_timeout_s
            while not (health := airflow.health()).ok:
                if time.monotonic() > deadline:
                    pytest.fail(f"airflow standalone did not start: {health.detail}")
                time.sleep(1)
            url = f"http://127.0.0.1:{airflow.settings.airflow.api_port}"
            _wait_for_dags(url, ("feature_backfill", "streaming_features"))
            print(f"airflow UI screenshots: {folder}")
            yield url, folder
        finally:
            airflow.stop()


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make setup "
                    "installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1300"):
        options.add_argument(argument)
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.implicitly_wait(15)  # the UI is a React app: elements appear after its API calls
    yield session
    session.quit()


def _api(url: str, path: str, method: str = "GET", **body) -> dict:
    response = requests.request(method, f"{url}/api/v2{path}", json=body or None, timeout=10)
    response.raise_for_status()
    return response.json() if response.content else {}


def _wait_for_dags(url: str, dag_ids: tuple[str, ...], timeout_s: float = 180) -> None:
    """Until the DAG processor has parsed them (the UI shows a DAG only then)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        known = {d["dag_id"] for d in _api(url, "/dags?limit=100")["dags"]}
        if set(dag_ids) <= known:
            return
        time.sleep(1)
    pytest.fail(f"DAGs {dag_ids} not parsed within {timeout_s:.0f} s")


def _until(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout_s:.0f} s")


def _started_tasks(url: str, dag_id: str, run_id: str) -> list[str]:
    instances = _api(url, f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return [t["task_id"] for t in instances if t["start_date"] is not None]


def test_a_backfill_is_triggered_from_the_form_with_its_params(airflow_ui, browser):
    from selenium.webdriver.common.by import By

    url, folder = airflow_ui
    browser.get(f"{url}/dags/feature_backfill")
    browser.find_element(By.CSS_SELECTOR, "button[aria-label='Trigger Dag']").click()
    form = browser.find_element(  # the dialog holding the params (selects have dialogs too)
        By.XPATH, "//*[@role='dialog'][.//input[@name='element_feature_set']]")
    assert "`mercury features list` shows them" in form.text  # the params explain themselves
    submit = [b for b in form.find_elements(By.TAG_NAME, "button") if b.text == "Trigger"][-1]
    assert not submit.is_enabled(), "the dates are required: no trigger without them"

    field = {name: form.find_element(By.NAME, f"element_{name}")
             for name in ("feature_set", "start", "end")}
    field["start"].send_keys("11012026")  # the date input's own order: mm dd yyyy
    field["end"].send_keys("11072026")
    field["feature_set"].clear()
    field["feature_set"].send_keys("Spending 2!")
    _until(submit.is_enabled, 5, "the trigger enabled once the dates are there")
    submit.click()
    _until(lambda: "Invalid input for param feature_set" in form.text, 15,
           "the form naming the param it refuses")
    assert browser.save_screenshot(str(folder / "feature_backfill_refused.png"))
    assert _api(url, "/dags/feature_backfill/dagRuns")["dag_runs"] == []

    field["feature_set"].clear()
    field["feature_set"].send_keys("spending")
    assert browser.save_screenshot(str(folder / "feature_backfill_trigger_form.png"))
    # by script: the refusal's toast may lie over the button for a few seconds
    browser.execute_script("arguments[0].click()", submit)

    run = _until(lambda: _api(url, "/dags/feature_backfill/dagRuns")["dag_runs"], 30,
                 "a feature_backfill run created by the form")[0]
    assert run["run_type"] == "manual"
    assert run["conf"] == {"feature_set": "spending", "version": 1, "start": START,
                           "end": END, "promote": True, "cut_ms": None}
    started = _until(lambda: _started_tasks(url, "feature_backfill", run["dag_run_id"]), 90,
                     "the scheduler starting the run's first task")
    assert started == ["plan"]


def test_on_call_pauses_a_dag_from_the_ui_and_the_scheduler_holds_its_runs(airflow_ui,
                                                                            browser):
    from selenium.webdriver.common.by import By

    url, folder = airflow_ui
    _api(url, "/dags/streaming_features", "PATCH", is_paused=False)
    browser.get(f"{url}/dags/streaming_features")
    # the switch beside the DAG's name: off pauses it
    browser.find_element(By.CSS_SELECTOR, "[data-testid='toggle-pause']").click()
    _until(lambda: _api(url, "/dags/streaming_features")["is_paused"], 10,
           "the DAG paused by the UI's switch")
    assert browser.save_screenshot(str(folder / "streaming_features_paused.png"))

    run = _api(url, "/dags/streaming_features/dagRuns", "POST", logical_date=None,
               conf={"action": "redeploy"})
    # The backfill's first task started within seconds on this scheduler; this one must not.
    time.sleep(8)
    assert _api(url, f"/dags/streaming_features/dagRuns/{run['dag_run_id']}")["state"] == \
        "queued"
    assert _started_tasks(url, "streaming_features", run["dag_run_id"]) == []
    _api(url, f"/dags/streaming_features/dagRuns/{run['dag_run_id']}", "DELETE")

