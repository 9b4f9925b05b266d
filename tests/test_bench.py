"""The benchmark's plumbing (bench/run.py): a short run of every scenario on a small database.

Asserts that each scenario ran and produced numbers, never how fast: timings depend on the
machine. Needs wrk (Debian package); skips without it unless REQUIRE_BROWSER=1 (as in CI).
"""
import copy
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, skip_or_fail

SCENARIOS = {"ceiling", "table_page1", "table_deep", "search", "storm_table_deep", "save"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    if shutil.which("wrk") is None:
        skip_or_fail("wrk is not installed (apt-get install -y wrk)", "REQUIRE_BROWSER")
    out = tmp_path_factory.mktemp("bench") / "results.json"
    result = subprocess.run(
        [sys.executable, "bench/run.py", "--users", "2000", "--duration", "1", "--connections", "4",
         "--storm-clients", "4", "--save-rows", "200", "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text()), result.stdout


def test_every_scenario_ran_without_errors(smoke_run):
    results, _ = smoke_run
    assert set(results["scenarios"]) == SCENARIOS
    for name, scenario in results["scenarios"].items():
        assert scenario["requests"] > 0, name
        assert scenario["rps"] > 0 and scenario["p99_ms"] >= scenario["p50_ms"] > 0, name
        assert sum(scenario["errors"].values()) == 0, (name, scenario["errors"])


def test_saves_keep_versions_valid(smoke_run):
    save = smoke_run[0]["scenarios"]["save"]
    assert save["saved"] > 0
    assert save["conflicts"] == 0 and save["other"] == 0


def test_login_storm_logged_people_in(smoke_run):
    logins = smoke_run[0]["scenarios"]["storm_table_deep"]["logins"]
    assert logins["logins"] > 0 and logins["failures"] == 0


def test_memory_and_first_load_are_measured(smoke_run):
    results, _ = smoke_run
    assert all(kb > 0 for kb in results["peak_rss_kb"].values())
    load = results["first_load"]
    paths = [f["path"] for f in load["files"]]
    assert paths[0] == "/users" and any(p.endswith(".js") for p in paths) and any(p.endswith(".css") for p in paths)
    assert all(f["status"] == 200 for f in load["files"])
    assert load["wire_bytes"] > 0


def test_prints_a_table_and_leaves_no_server_running(smoke_run):
    results, stdout = smoke_run
    assert "ceiling" in stdout and "first load of /users" in stdout
    for pid in results["peak_rss_kb"]:
        assert not Path(f"/proc/{pid}").exists()


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_median_of_runs_takes_each_figures_median_and_sums_failures(smoke_run):
    bench = load_bench()
    runs = []
    for factor, rss in ((1, 100_000), (3, 300_000), (2, 200_000)):
        run = copy.deepcopy(smoke_run[0])
        for scenario in run["scenarios"].values():
            scenario["rps"] *= factor
            scenario["errors"]["status"] = factor
        run["scenarios"]["save"]["conflicts"] = factor
        run["peak_rss_kb"] = {str(factor): rss}
        runs.append(run)
    median = bench.median_of(runs)
    for name, scenario in median["scenarios"].items():
        assert scenario["rps"] == 2 * smoke_run[0]["scenarios"][name]["rps"], name
        assert scenario["errors"]["status"] == 6, name
    assert median["scenarios"]["save"]["conflicts"] == 6
    assert median["peak_rss_kb"] == {"median": 200_000}
    assert median["checks"]["rss_mb"]["value"] == 200_000 / 1024
    assert median["runs"] == [run["when"] for run in runs]
    assert "ceiling" in bench.table(median)


def test_several_runs_need_fresh_sqlite_databases():
    result = subprocess.run([sys.executable, "bench/run.py", "--runs", "2", "--database-url", "postgresql+asyncpg://x/y"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--runs" in result.stderr
