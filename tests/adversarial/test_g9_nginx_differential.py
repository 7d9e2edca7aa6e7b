"""Group 9: the differential suite against nginx (tests/adversarial/differential/).

The same raw bytes go to nginx `proxy_pass` and to the live chistone, each in front of a
recording backend. For every case the two outcomes are compared: what the backend received
(request line, headers other than each proxy's own, body bytes) and what the client got.

- chistone may never hang, answer 5xx, or send its backend bytes it cannot parse;
- every difference from nginx must be listed, with its reason, in the table under
  "Differences from nginx" in docs/security.md; a difference that is not listed fails, and so
  does a listed one that no longer happens (the table must stay true).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from tests.adversarial.differential import nginx as nginx_harness
from tests.adversarial.differential.cases import CASES
from tests.adversarial.differential.exchange import classify, run_case
from tests.e2e.backends import free_port

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
HEADING = "### Differences from nginx"
_ROW = re.compile(r"^\| (`[^|]+`) \| (\w+) \| (.+?) \|\s*$")


def documented() -> list[tuple[str, str, str]]:
    """[(case name or glob, kind, reason)] from the table under HEADING in docs/security.md
    (a row may name several cases, and `*` matches any part of a name)."""
    text = DOCS.read_text()
    assert HEADING in text, f"{DOCS} has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = _ROW.match(line)
        if match:
            for name in re.findall(r"`([^`]+)`", match.group(1)):
                rows.append((name, match.group(2), match.group(3).strip()))
    return rows


@pytest.fixture(scope="module")
def nginx(live, tmp_path_factory):
    path = nginx_harness.require()
    running = nginx_harness.start(path, tmp_path_factory.mktemp("nginx"), free_port(),
                                  live.farm.recorders["nginx"].port)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def outcomes(live, nginx):
    """{case name: (nginx outcome, chistone outcome)}, both proxies probed side by side."""
    recorders = live.farm.recorders

    def through(port, recorder):
        return {case.name: run_case(port, recorder, case.payload, expect=case.expect)
                for case in CASES}

    with ThreadPoolExecutor(2) as pool:
        on_nginx = pool.submit(through, nginx.port, recorders["nginx"])
        on_chistone = pool.submit(through, live.data_port, recorders["chistone"])
        a, b = on_nginx.result(), on_chistone.result()
    return {name: (a[name], b[name]) for name in a}


def test_case_names_are_unique():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))


def test_chistone_never_hangs_fails_or_sends_its_backend_garbage(outcomes, same_worker):
    problems = []
    for name, (_, ours) in outcomes.items():
        if ours.ended == "hang":
            problems.append(f"{name}: no answer within the time limit")
        if any(status >= 500 for status in ours.statuses):
            problems.append(f"{name}: answered {ours.statuses}")
        if ours.unparseable:
            problems.append(f"{name}: the backend could not parse {ours.unparseable}")
        if not ours.statuses:
            problems.append(f"{name}: the connection ended without an answer")
    assert not problems, "\n".join(problems)


def test_every_difference_from_nginx_is_documented(outcomes):
    observed = {}
    for name, (theirs, ours) in outcomes.items():
        kind = classify(theirs, ours)
        if kind is not None:
            observed[name] = kind
    print("\n".join(f"{name}: {kind}: nginx {outcomes[name][0].describe()}, chistone "
                     f"{outcomes[name][1].describe()}" for name, kind in sorted(observed.items())))
    listed = documented()
    new = {n: k for n, k in observed.items()
           if not any(fnmatchcase(n, pattern) and kind == k for pattern, kind, _ in listed)}
    gone = sorted(pattern for pattern, kind, _ in listed
                  if not any(fnmatchcase(n, pattern) and k == kind for n, k in observed.items()))
    assert not new, ("differences from nginx not listed (or listed as another kind) in "
                     "docs/security.md:\n" + "\n".join(
                         f"{n}: {k}: nginx {outcomes[n][0].describe()} / {outcomes[n][0].view()}"
                         f"\n    chistone {outcomes[n][1].describe()} / {outcomes[n][1].view()}"
                         for n, k in sorted(new.items())))
    assert not gone, f"listed in docs/security.md but no longer different: {gone}"
    assert all(len(reason) > 20 for _, _, reason in listed), "every row needs its reason"


def test_baselines_agree(outcomes):
    """The suite itself works: plain requests pass both proxies the same way."""
    for name in ("baseline-get", "baseline-post", "baseline-chunked"):
        theirs, ours = outcomes[name]
        assert theirs.statuses == ours.statuses == (200,), name
        assert theirs.view() == ours.view() and len(ours.forwarded) == 1, name
