"""Group 8: defparam/smuggler's desync scan, all three payload configurations, against the
live `serve` (tests/adversarial/smuggler/: its payload files unchanged, its detection ported).

Required: zero findings (smuggler's own verdict), and every probe answered: no 5xx, no hang,
no connection dropped without an answer, every refusal a JSON 400. The backend behind the
scanned tenant must only ever have received requests the gateway framed itself.
"""

from __future__ import annotations

import pytest

from tests.adversarial.smuggler.runner import CONFIGS, NORMAL, scan

HOST = "smuggle.test"


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
@pytest.mark.parametrize("config", CONFIGS)
def test_smuggler_finds_nothing(live, same_worker, config, encoding):
    backend = live.farm.smuggle
    seen_before = len(backend.seen)
    report = scan(config, host="127.0.0.1", port=live.data_port, vhost=HOST,
                  encoding=encoding, timeout=5.0, workers=8)
    print(report.summary())
    assert not report.findings, [(v.name, v.note) for v in report.findings]
    unanswered = [(name, probe.code) for name, probe in report.probes()
                  if probe.code != NORMAL or probe.status is None]
    assert not unanswered, f"probes without an answer: {unanswered[:20]}"
    server_errors = [(name, probe.status, probe.response[:300]) for name, probe
                     in report.probes() if probe.status >= 500]
    assert not server_errors, server_errors[:10]
    # Refusals are the gateway's JSON errors, also those Twisted and daphne answer before the
    # gateway runs (chistone_site/servers/daphne.py); proxied answers are the echo's JSON.
    not_json = [(name, probe.response[:200]) for name, probe in report.probes()
                if not probe.json]
    assert not not_json, not_json[:10]
    assert all(probe.status in (200, 400) for _, probe in report.probes())
    # The backend saw only gateway-framed requests: no Transfer-Encoding, a body of the
    # length the gateway announced.
    for seen in backend.seen[seen_before:]:
        names = [name for name, _ in seen.headers]
        assert "transfer-encoding" not in names, seen
        assert names.count("content-length") <= 1, seen
