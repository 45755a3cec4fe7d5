"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against a real cluster: etcd, ``etcron master`` and ``etcron
worker`` as processes, 1,000+ jobs.

One browser and one cluster for the module (each test opens its own browser
context, so cookies do not leak between tests). Screenshots go to docs/img/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from tests.support.cluster import WorkerProcess, make_config

CHROMIUM = os.environ.get("ETCRON_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "ui-browser-" + secrets.token_hex(8)
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
MANY = 1000
YEARLY = "0 0 1 1 *"  # no job fires by itself during the tests

if shutil.which(CHROMIUM) is None:
    why = f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(why, pytrace=False)  # CI must run these tests, never skip them
    pytest.skip(why, allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

pytestmark = pytest.mark.slow

TALKER = (
    'echo "line-1 $(date +%s.%N)"; sleep 1.5; echo "line-2 $(date +%s.%N)"; sleep 1; '
    'echo "line-3 $(date +%s.%N)" >&2; sleep 0.5; echo done'
)
SEEN_SCRIPT = """
window.__seen = {};
new MutationObserver(function (records) {
  records.forEach(function (r) {
    r.addedNodes.forEach(function (n) {
      var m = /line-(\\d) (\\d+\\.\\d+)/.exec(n.textContent || "");
      if (m && !(m[1] in window.__seen)) {
        window.__seen[m[1]] = {written: parseFloat(m[2]), seen: Date.now() / 1000};
      }
    });
  });
}).observe(document, {childList: true, subtree: true});
"""


@dataclass
class Cluster:
    url: str
    endpoints: list[str]
    ks: Keyspace

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )

    def etcd_json(self, key: str) -> Any:
        """The JSON value at ``key``, read from etcd itself (None when absent)."""
        out: list[Any] = []

        async def read() -> None:
            client = await EtcdClient.connect(EtcdConfig(endpoints=self.endpoints))
            try:
                kv, _ = await client.get(key)
                out.append(None if kv is None else json.loads(kv.value))
            finally:
                await client.close()

        t = threading.Thread(target=lambda: asyncio.run(read()))  # no loop in this thread
        t.start()
        t.join(15)
        assert out, f"could not read {key} from etcd"
        return out[0]


def until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``predicate`` until truthy (a condition wait with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _jobs() -> list[dict[str, Any]]:
    jobs = [
        JobSpec(
            name=f"job-{i:04d}",
            schedule=YEARLY,
            shell="true",
            labels={"team": "blue" if i % 2 else "red", "tier": str(i % 10)},
        )
        for i in range(MANY)
    ]
    jobs += [
        JobSpec(name="talker", schedule="30 2 * * 1-5", timezone="Europe/Berlin", shell=TALKER),
        JobSpec(name="sleeper", schedule=YEARLY, shell="echo started; sleep 60"),
        JobSpec(name="pausable", schedule="*/15 * * * *", shell="true"),
        JobSpec(name="edited", schedule=YEARLY, shell="echo before", labels={"team": "ops"}),
    ]
    return [j.model_dump(mode="json", exclude_defaults=True) | {"name": j.name} for j in jobs]


@pytest.fixture(scope="module")
def cluster(
    etcd_endpoints: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("ui")
    prefix = f"/t/ui-browser-{secrets.token_hex(4)}/cron"
    port = _free_port()
    config = tmp / "master.yaml"
    config.write_text(
        json.dumps(
            {
                "etcd": {"endpoints": etcd_endpoints, "prefix": prefix},
                "master": {"listen": f"127.0.0.1:{port}", "token": TOKEN},
            }
        )
    )
    log = open(tmp / "master.log", "ab")  # noqa: SIM115 - closed below
    master = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli.main", "master", "--config", str(config)],
        stdout=log,
        stderr=log,
    )
    worker = WorkerProcess(make_config(etcd_endpoints, prefix, "ui-w1"), tmp / "worker.log")
    worker.start()
    c = Cluster(f"http://127.0.0.1:{port}", etcd_endpoints, Keyspace(prefix))
    try:
        with c.api() as api:

            def up() -> bool:
                try:
                    return api.get("/v1/health").status_code == 200
                except httpx.TransportError:
                    return False

            until(up, 30, "the master to answer")
            r = api.post("/v1/apply", json={"jobs": _jobs()}, timeout=60)
            assert r.status_code == 200, r.text
            until(lambda: api.get("/v1/workers").json()["workers"], 30, "the worker to register")
        yield c
    finally:
        worker.close()
        master.terminate()
        try:
            master.wait(15)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait(5)
        log.close()


@contextlib.contextmanager
def _threaded_child_watcher() -> Iterator[None]:
    """Playwright starts its driver with asyncio on a loop of its own. An in-process
    worker of an earlier test may have installed a pidfd child watcher bound to the
    test session's loop (workers/worker.py), which is not running while a sync test
    runs: Python 3.11 then refuses to start subprocesses. Install a threaded watcher
    (any loop) first. It stays: setting a watcher closes the one before it, so the
    old one cannot be put back; the next in-process worker installs a new pidfd
    watcher on its own loop."""
    if sys.version_info < (3, 12):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(asyncio.ThreadedChildWatcher())
    yield


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with _threaded_child_watcher(), playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, cluster: Cluster) -> Iterator[Any]:
    """A fresh context (no cookies), signed in."""
    context = browser.new_context(viewport=DESKTOP, base_url=cluster.url)
    context.set_default_timeout(10_000)
    context.add_init_script(SEEN_SCRIPT)
    p = context.new_page()
    p.goto("/ui/login")
    p.get_by_label("API token").fill(TOKEN)
    p.get_by_role("button", name="Sign in").click()
    p.wait_for_url("**/ui/jobs")
    yield p
    context.close()


def shoot(p: Any, name: str) -> None:
    """docs/img/ui-<name>-desktop.png and -phone.png."""
    IMG.mkdir(parents=True, exist_ok=True)
    p.set_viewport_size(DESKTOP)
    p.screenshot(path=str(IMG / f"ui-{name}-desktop.png"), full_page=False)
    p.set_viewport_size(PHONE)
    p.screenshot(path=str(IMG / f"ui-{name}-phone.png"), full_page=False)
    p.set_viewport_size(DESKTOP)


def test_missing_or_wrong_sign_in_gets_the_login_page(browser: Any, cluster: Cluster) -> None:
    context = browser.new_context(viewport=DESKTOP, base_url=cluster.url)
    p = context.new_page()
    for path in ("/ui/jobs", "/ui/jobs/talker", "/ui/edit", "/ui/workers"):
        p.goto(path)
        assert p.url.endswith("/ui/login")
        assert "job-0001" not in p.content() and "talker" not in p.content()
    p.get_by_label("API token").fill("not-the-token")
    p.get_by_role("button", name="Sign in").click()
    assert p.locator("#login-error").is_visible()
    assert p.url.endswith("/ui/login") and "job-0001" not in p.content()
    assert context.cookies() == []
    shoot(p, "login")
    context.close()


def test_page_through_1000_jobs_and_search(page: Any) -> None:
    p = page
    assert p.locator("h1 .count").inner_text() == str(MANY + 4)
    names: list[str] = []
    pages = 0
    while True:
        pages += 1
        names += p.locator("table.jobs tbody td[data-label=Name] > a").all_inner_texts()
        nxt = p.get_by_role("link", name="Next →")
        if nxt.count() == 0:
            break
        nxt.click()
        p.wait_for_url(re.compile(rf"page={pages + 1}$"))
    assert pages == -(-(MANY + 4) // 50)
    assert names == sorted(names) and len(names) == len(set(names)) == MANY + 4

    p.goto("/ui/jobs")
    p.get_by_label("Search").fill("job-012")
    p.get_by_label("Search").press("Enter")
    p.wait_for_url("**q=job-012**")
    found = p.locator("table.jobs tbody td[data-label=Name] > a").all_inner_texts()
    assert found == [f"job-{i:04d}" for i in range(120, 130)]

    p.get_by_label("Search").fill("team=ops")
    p.get_by_label("Search").press("Enter")
    p.wait_for_url("**q=team%3Dops**")
    assert p.locator("table.jobs tbody td[data-label=Name] > a").all_inner_texts() == ["edited"]

    p.goto("/ui/jobs?q=tier%3D3+team%3Dblue")
    assert p.locator("h1 .count").inner_text() == str(MANY // 10)

    p.goto("/ui/jobs")
    p.get_by_label("Show").select_option("suspended")
    p.get_by_role("button", name="Apply").click()
    p.wait_for_url("**filter=suspended**")
    assert p.locator("h1 .count").inner_text() == "0"


def test_open_a_job_run_it_and_watch_its_output_live(page: Any, cluster: Cluster) -> None:
    p = page
    p.get_by_label("Search").fill("talker")
    p.get_by_label("Search").press("Enter")
    p.get_by_role("link", name="talker", exact=True).click()
    p.wait_for_url("**/ui/jobs/talker")
    assert "at 02:30, Monday to Friday" in p.locator(".schedule").inner_text()
    assert p.locator("ol.times li").count() == 10
    assert "Europe/Berlin" in p.locator("pre.yaml").inner_text()

    p.get_by_role("button", name="Run now").click()
    p.wait_for_url(re.compile(r"/ui/jobs/talker/runs/[^/]+Z-m"), timeout=15_000)
    assert p.locator("#live").is_visible()
    output = p.locator("#output")
    output.get_by_text("line-2").wait_for(timeout=10_000)
    p.locator("#stderr").get_by_text("line-3").wait_for(timeout=10_000)
    p.locator("#run-status").get_by_text("succeeded").wait_for(timeout=10_000)
    seen = p.evaluate("window.__seen")
    lags = {n: seen[n]["seen"] - seen[n]["written"] for n in ("2", "3")}
    print(f"\nlive output lag (line written -> visible in the page): {lags}")
    assert all(0 <= lag < 1.0 for lag in lags.values()), lags
    # stderr is set apart: marked in the output, and in its own pane
    assert p.locator("#output span.stderr").inner_text().startswith("line-3")
    shoot(p, "run")

    p.get_by_role("link", name="talker").first.click()
    p.wait_for_url("**/ui/jobs/talker")
    row = p.locator("table.runs tbody tr").first
    assert "succeeded" in row.inner_text() and "ui-w1" in row.inner_text()
    assert p.locator("svg.chart rect").count() >= 1
    shoot(p, "job")
    raw = p.request.get(p.url + "/runs/" + _newest_run(cluster, "talker") + "/raw")
    assert raw.status == 200 and "line-1" in raw.text() and "line-3" in raw.text()


def _newest_run(cluster: Cluster, job: str) -> str:
    with cluster.api() as api:
        return str(api.get(f"/v1/jobs/{job}/runs", params={"limit": 1}).json()["runs"][0]["run_id"])


def test_kill_a_running_run(page: Any, cluster: Cluster) -> None:
    p = page
    p.goto("/ui/jobs/sleeper")
    p.get_by_role("button", name="Run now").click()
    p.wait_for_url(re.compile(r"/ui/jobs/sleeper/runs/"), timeout=15_000)
    p.locator("#output").get_by_text("started").wait_for(timeout=10_000)
    run_id = p.url.rsplit("/", 1)[-1]
    p.get_by_role("button", name="Kill this job's runs").click()
    p.wait_for_url("**/ui/jobs/sleeper?note=*")
    assert "Kill requested" in p.locator(".note").inner_text()
    key = cluster.ks.run("sleeper", run_id)
    record = until(
        lambda: (r := cluster.etcd_json(key)) and r["status"] != "running" and r,
        20,
        "the run to end",
    )
    assert record["status"] == "killed"
    p.goto(f"/ui/jobs/sleeper/runs/{run_id}")
    assert p.locator("#run-status").inner_text() == "killed"


def test_suspend_and_resume(page: Any, cluster: Cluster) -> None:
    p = page
    p.goto("/ui/jobs/pausable")
    p.get_by_role("button", name="Suspend").click()
    p.wait_for_url("**/ui/jobs/pausable?note=Suspended.")
    assert p.get_by_role("button", name="Resume").is_visible()
    assert cluster.etcd_json(cluster.ks.job("pausable"))["suspend"] is True
    p.goto("/ui/jobs?filter=suspended")
    assert p.locator("table.jobs tbody td[data-label=Name] > a").all_inner_texts() == ["pausable"]
    p.goto("/ui/jobs/pausable")
    p.get_by_role("button", name="Resume").click()
    p.wait_for_url("**/ui/jobs/pausable?note=Resumed.")
    assert p.get_by_role("button", name="Suspend").is_visible()
    assert "suspend" not in cluster.etcd_json(cluster.ks.job("pausable"))


def test_edit_a_job_in_the_yaml_editor(page: Any, cluster: Cluster) -> None:
    p = page
    p.goto("/ui/jobs/edited")
    p.get_by_role("link", name="Edit").last.click()
    p.wait_for_url("**/ui/edit?job=edited")
    editor = p.get_by_label("Jobs file")
    text = editor.input_value()
    assert "name: edited" in text and "echo before" in text
    editor.fill(
        text.replace("schedule: 0 0 1 1 *", "schedule: 15 4 * * *").replace("before", "after")
    )
    p.get_by_role("button", name="Validate and preview").click()
    assert "update" in p.locator("ul.plan").inner_text()
    diff = p.locator("pre.diff").inner_text()
    assert "-shell: echo before" in diff and "+shell: echo after" in diff
    p.locator("#yaml").focus()
    shoot(p, "edit")
    assert cluster.etcd_json(cluster.ks.job("edited"))["shell"] == "echo before"  # not yet

    p.get_by_role("button", name="Apply").click()
    p.locator("#h-plan").get_by_text("Applied").wait_for()
    stored = cluster.etcd_json(cluster.ks.job("edited"))
    assert stored["shell"] == "echo after" and stored["schedule"] == "15 4 * * *"

    editor = p.get_by_label("Jobs file")
    editor.fill("jobs:\n  - name: Bad Name\n    schedule: every day\n    shell: x\n")
    p.get_by_role("button", name="Validate and preview").click()
    problems = p.locator(".problems").inner_text()
    assert "editor:2" in problems and "name" in problems and "schedule" in problems
    assert p.get_by_role("button", name="Apply").count() == 0


def test_workers_and_cluster_pages(page: Any) -> None:
    p = page
    p.goto("/ui/jobs?q=e")  # the jobs with runs by now (no job-NNNN has an 'e')
    assert p.locator("table.jobs .strip i").count() >= 2
    shoot(p, "jobs")
    p.get_by_role("link", name="Workers").click()
    p.wait_for_url("**/ui/workers")
    row = p.locator("table.workers tbody tr").first
    assert "ui-w1" in row.inner_text() and "healthy" in row.inner_text()
    shoot(p, "workers")
    p.get_by_role("link", name="Cluster").click()
    p.wait_for_url("**/ui/cluster")
    assert p.locator("table.members tbody").get_by_text("leader").count() == 1
    assert "of 2.0 GiB" in p.locator(".facts").first.inner_text()
    shoot(p, "cluster")
    # keyboard: the skip link is the first stop and moves focus to the content
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.textContent") == "Skip to content"


def test_live_events_resume_after_last_event_id(cluster: Cluster) -> None:
    """A reconnecting EventSource sends Last-Event-ID: the segments it has are not sent again."""
    run_id = _newest_run(cluster, "talker")  # finished: the stream ends by itself
    with httpx.Client(base_url=cluster.url, timeout=10) as c:
        r = c.post("/ui/login", data={"token": TOKEN})
        assert r.status_code == 303
        url = f"/ui/jobs/talker/runs/{run_id}/events"

        def events(headers: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
            with c.stream("GET", url, headers=headers) as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                text = "".join(resp.iter_text())
            out = []
            for block in text.strip().split("\n\n"):
                fields = dict(line.split(": ", 1) for line in block.splitlines())
                out.append((fields.get("id", ""), fields["event"], json.loads(fields["data"])))
            return out

        whole = events({})
        assert whole[-1][1] == "end" and whole[-1][2]["status"] == "succeeded"
        texts = [e[2]["text"] for e in whole if e[1] == "output"]
        assert "".join(texts).startswith("line-1") and [e[0] for e in whole[:2]] == ["0", "1"]
        rest = events({"Last-Event-ID": "1"})
        assert [e[2]["text"] for e in rest if e[1] == "output"] == texts[2:]
        assert rest[-1][1] == "end"
