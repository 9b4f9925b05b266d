"""The benchmark's plumbing (bench/run.py): a short run of every scenario on a small database.

Asserts that each scenario ran and produced numbers, never how fast: timings depend on the
machine. Needs wrk (Debian package); skips without it unless REQUIRE_BROWSER=1 (as in CI).
"""
import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, postgres_reachable, skip_or_fail

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


# ---- --peers: Gatehouse's whole users page against peer apps --------------------------------
# The peer apps need their own venvs (bench/peers/venvs.py installs them from PyPI), which a
# test run must not install: the smoke run serves Gatehouse alone (--peer-apps ""), which
# covers the database, the username check on Gatehouse's real page, wrk and the table; the
# peers' side is tested below on pages as SQLAdmin's and Flask-Security-Too's look.

@pytest.fixture(scope="module")
def peers_smoke_run(tmp_path_factory):
    if shutil.which("wrk") is None:
        skip_or_fail("wrk is not installed (apt-get install -y wrk)", "REQUIRE_BROWSER")
    out = tmp_path_factory.mktemp("bench") / "peers.json"
    result = subprocess.run(
        [sys.executable, "bench/run.py", "--peers", "--peer-apps", "", "--users", "300", "--duration", "1",
         "--connections", "2", "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text()), result.stdout


def test_peers_run_measures_gatehouses_whole_page_after_checking_its_first_50_usernames(peers_smoke_run):
    results, stdout = peers_smoke_run
    assert set(results["scenarios"]) == {"ceiling", "gatehouse"}
    for name, scenario in results["scenarios"].items():
        assert scenario["requests"] > 0 and scenario["rps"] > 0, name
        assert sum(scenario["errors"].values()) == 0, (name, scenario["errors"])
    names = results["usernames"]
    assert len(names) == 50 and names == sorted(names, key=str.lower)
    assert results["ratios"] == {} and "Gatehouse (Hypercorn)" in stdout and "Gatehouse ×" in stdout


SQLADMIN_ROW = '<tr><td><input type="checkbox"></td><td>{name}</td><td>{name}@example.com</td><td>Customer</td></tr>'
FST_ROW = "<tr>\n<td>{name}</td>\n<td>{name}@mail.example.com</td>\n<td>Customer</td>\n</tr>"


@pytest.mark.parametrize("row", [SQLADMIN_ROW, FST_ROW])
def test_listed_usernames_are_the_usernames_a_page_shows_in_order_not_emails_nor_the_viewer(row):
    bench = load_bench()
    page = '<header><span>benchadmin</span> Customer</header><table>' + \
        "".join(row.format(name=name) for name in ("ann.b", "ann.c-2", "bo")) + "</table>"
    known = {"ann.b", "ann.c-2", "bo", "ann", "benchadmin", "zed"}
    assert bench.listed_usernames(page, known, viewer="benchadmin") == ["ann.b", "ann.c-2", "bo"]


def test_a_page_listing_other_rows_or_another_order_stops_the_run():
    bench = load_bench()
    expected = ["ann", "bo", "cy"]
    bench.check_same_usernames({"Gatehouse": expected, "SQLAdmin": list(expected)}, expected)
    for listed in (["ann", "cy", "bo"], ["ann", "bo"], ["ann", "bo", "cy", "dee"]):
        with pytest.raises(SystemExit, match="SQLAdmin lists"):
            bench.check_same_usernames({"Gatehouse": expected, "SQLAdmin": listed}, expected)


def test_peer_ratios_are_gatehouses_requests_over_each_peers_and_their_median_is_per_run():
    bench = load_bench()

    def run(gatehouse, sqladmin, fst):
        scenarios = {name: {"rps": rps, "requests": rps, "duration_us": 1e6, "bytes": 1024 * rps, "p50_ms": 1.0,
                            "p99_ms": 2.0, "errors": {"status": 0}, "title": name}
                     for name, rps in (("ceiling", 1000), ("gatehouse", gatehouse), ("sqladmin", sqladmin),
                                       ("flask-security", fst))}
        return {"when": str(gatehouse), "smoke": True, "scenarios": scenarios, "ratios": bench.peer_ratios(scenarios),
                "settings": {"users": 10_001, "connections": 8, "threads": 2, "duration_s": 10, "page_size": 50},
                "machine": {"cores": 2, "cpu_model": "cpu", "python": "3.11"}}
    runs = [run(300, 30, 50), run(100, 20, 10), run(200, 10, 100)]
    assert runs[0]["ratios"] == {"sqladmin": 10.0, "flask-security": 6.0}
    median = bench.peers_median_of(runs)
    # each run's ratio, then their median: 10, 5, 20 and 6, 10, 2
    assert median["ratios"] == {"sqladmin": 10.0, "flask-security": 6.0}
    assert median["scenarios"]["gatehouse"]["rps"] == 200 and median["scenarios"]["sqladmin"]["rps"] == 20
    assert all(check["value"] >= check["target"] for check in median["checks"].values())
    assert "sqladmin 10.0x >= 10.0x ok" in bench.peers_table(median)


@pytest.mark.parametrize("database, leave_out", [("SQLite", "--no-postgres"), ("PostgreSQL", "--no-sqlite")])
def test_the_scale_run_reads_every_kind_of_view(database, leave_out):
    """bench/run.py --scale (bench/scale.py) at a tiny size: each view answered 200 (else it
    exits 1) and was timed."""
    if database == "PostgreSQL" and not postgres_reachable():
        skip_or_fail("PostgreSQL is not reachable on 127.0.0.1:5432", "REQUIRE_POSTGRES")
    result = subprocess.run(
        [sys.executable, "bench/run.py", "--scale", "--users", "300", "--events", "600", "--repeats", "1",
         leave_out], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    written = re.search(r"written (\S+\.json)", result.stdout).group(1)
    measured = json.loads((ROOT / written).read_text())["results"][database]
    assert {view.split(":")[0] for view in measured["views"]} == {"users", "search", "audit", "dashboard"}
    searches = " ".join(view for view in measured["views"] if view.startswith("search"))
    for match in ("~1 row", "1%", "every row", "none"):
        assert match in searches, match
    assert all(m["p99"] >= m["p50"] > 0 for m in measured["views"].values())


def test_the_stages_run_times_each_stage_of_every_request():
    """bench/stages.py at a tiny size: every stage's function was found and timed in each
    request (a stage left unwrapped would read 0.00)."""
    result = subprocess.run(
        [sys.executable, "bench/stages.py", "--users", "300", "--requests", "3", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in result.stdout.splitlines()
             if line.startswith("| ") and not line.startswith("| stage")}
    header = next(line for line in result.stdout.splitlines() if line.startswith("| stage"))
    assert len(header.split("|")[2:-1]) == 4, "the deep page, page 1, a search, the whole page"
    for stage in ("session check", "live position", "count and page (queries)", "template", "gzip", "whole request"):
        assert len(lines[stage]) == 4 and all(float(cell.split()[0]) > 0 for cell in lines[stage]), stage
