import json
import time

from routing import metrics
from routing.stats import Stats


def report(pid, stats, healthy=True, generation=7):
    return {"pid": pid, "generation": generation, "build_seconds": 0.01, "reloads": 2,
            "stats": stats.report(),
            "health": {"acme": {"api": {"healthy": healthy, "requests": 3, "errors": 1}}}}


def test_reports_of_several_workers_are_summed(tmp_path):
    a, b = Stats(), Stats()
    a.record("acme", "/users/{id}", 200, total=0.004, upstream=0.003, lua=0.00001, sent=10)
    a.record("acme", "/users/{id}", 200, total=0.2, upstream=0.1, lua=0.00001, sent=10)
    b.record("acme", "/users/{id}", 200, total=0.004, upstream=0.002, lua=0.00001, sent=5)
    b.record("acme", "", 404, total=0.001, upstream=None, lua=0.0, sent=50)
    b.lua_error("acme", "timeout")
    (tmp_path / "worker-1.json").write_text(json.dumps(report(1, a)))
    (tmp_path / "worker-2.json").write_text(json.dumps(report(2, b, healthy=False)))
    text = metrics.render(tmp_path).decode()
    assert 'chistone_requests_total{route="/users/{id}",status="200",tenant="acme"} 3.0' in text
    assert 'chistone_requests_total{route="",status="404",tenant="acme"} 1.0' in text
    assert 'chistone_response_bytes_total{route="/users/{id}",status="200",tenant="acme"} 25.0' \
        in text
    assert ('chistone_request_duration_seconds_bucket{le="0.005",route="/users/{id}",'
            'status="200",tenant="acme"} 2.0') in text
    assert ('chistone_request_duration_seconds_count{route="/users/{id}",status="200",'
            'tenant="acme"} 3.0') in text
    assert 'chistone_lua_errors_total{kind="timeout",tenant="acme"} 1.0' in text
    assert 'chistone_upstream_requests_total{backend="api",tenant="acme"} 6.0' in text
    assert 'chistone_upstream_failures_total{backend="api",tenant="acme"} 2.0' in text
    # One worker sees the backend down: it is reported down.
    assert 'chistone_backend_healthy{backend="api",tenant="acme"} 0.0' in text
    assert 'chistone_config_generation{worker="2"} 7.0' in text
    assert "chistone_workers_reporting 2.0" in text


def test_write_report_replaces_atomically_and_unreadable_files_are_skipped(tmp_path):
    stats = Stats()
    stats.record("t", "/", 200, total=0.001, upstream=None, lua=0, sent=1)
    path = metrics.write_report(report(99, stats), tmp_path)
    assert path.name.startswith("worker-") and json.loads(path.read_text())["pid"] == 99
    (tmp_path / "worker-bad.json").write_text("{half")
    assert len(metrics.read_reports(tmp_path)) == 1


def test_a_dead_workers_counters_stay_but_its_gauges_go(tmp_path):
    alive, dead = Stats(), Stats()
    alive.record("acme", "/", 200, total=0.001, upstream=0.001, lua=0.0, sent=1)
    dead.record("acme", "/", 200, total=0.001, upstream=0.001, lua=0.0, sent=1)
    metrics.write_report(report(1, alive, generation=9), tmp_path)
    # A worker that died a minute ago, while it saw the backend down.
    stale = {**report(2, dead, healthy=False, generation=8),
             "written": time.time() - metrics.STALE_AFTER_S - 55}
    (tmp_path / "worker-2.json").write_text(json.dumps(stale))
    text = metrics.render(tmp_path).decode()
    assert 'chistone_requests_total{route="/",status="200",tenant="acme"} 2.0' in text
    assert 'chistone_upstream_failures_total{backend="api",tenant="acme"} 2.0' in text
    assert 'chistone_backend_healthy{backend="api",tenant="acme"} 1.0' in text
    assert 'chistone_config_generation{worker="1"} 9.0' in text
    assert 'chistone_config_generation{worker="2"}' not in text
    assert "chistone_workers_reporting 1.0" in text
