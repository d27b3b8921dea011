"""`emperor check` over 126 real uWSGI files (tests/corpus: 59 `dev`, 67 `heldout`, from 118
projects), run as the real command with the environment each file expects (ENV.tsv).

The bars: no real file fails to load for a reading reason (a line emperor cannot read the way
uWSGI does) but the two templates of TEMPLATES, which emperor refuses on purpose; every other
failure is one of the kinds a standalone copy of a real file may have (a fragment's
placeholder defined by its includer, a file it includes that is not in the corpus, no socket
or no application in the file itself). The counts are pinned so that a change that makes
fewer files load clean is noticed; `summary()` prints them (pytest -s).
"""
from __future__ import annotations

import collections
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT

CORPUS = Path(__file__).parent / "corpus"
pytestmark = pytest.mark.timeout(300)


def environments() -> dict[str, dict[str, str]]:
    """file -> the variables ENV.tsv gives it (`(unset)` and shell-template ones left out)."""
    out: dict[str, dict[str, str]] = collections.defaultdict(dict)
    with open(CORPUS / "ENV.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["plausible_value"] != "(unset)" and not row["used_as"].startswith("${"):
                out[row["file"]][row["variable"]] = row["plausible_value"]
    return out


def check_half(half: str) -> dict[str, dict]:
    """file name -> its `emperor check --json` document; one run per distinct environment."""
    envs = environments()
    groups: dict[tuple, list[str]] = collections.defaultdict(list)
    for path in sorted((CORPUS / half).glob("*.ini")):
        groups[tuple(sorted(envs.get(path.name, {}).items()))].append(path.name)
    results = {}
    base = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
    for env, names in groups.items():
        r = subprocess.run([sys.executable, "-m", "emperor", "check", "--json", *names], cwd=CORPUS / half,
                           env=dict(base, PYTHONPATH=str(ROOT), **dict(env)), capture_output=True, text=True,
                           timeout=120)
        assert r.returncode in (0, 1), r.stderr
        for doc in json.loads(r.stdout)["files"]:
            results[doc["file"]] = doc
    return results


@pytest.fixture(scope="module")
def corpus() -> dict[str, dict[str, dict]]:
    return {half: check_half(half) for half in ("dev", "heldout")}


def summary(results: dict[str, dict]) -> dict:
    why = collections.Counter()
    keeping = collections.Counter()
    for doc in results.values():
        why.update({f["category"] for f in doc["findings"] if f["verdict"] == "error"})
        keeping.update({f["option"] for f in doc["findings"] if f["verdict"] in ("unsupported", "unknown")})
    return {"files": len(results),
            "clean": sum(d["clean"] for d in results.values()),
            "warnings": sum(d["starts"] and not d["clean"] for d in results.values()),
            "fail": sum(not d["starts"] for d in results.values()),
            "failures by kind": dict(why), "options keeping files from loading clean": keeping.most_common(15)}


def test_the_corpus_is_all_there():
    with open(CORPUS / "SOURCES.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 126 and len({r["repo"] for r in rows}) == 118
    for r in rows:
        assert (CORPUS / r["set"] / r["file"]).is_file(), r["file"]
        assert r["license"] and len(r["commit"]) == 40


# Files that are templates another tool fills in: their numbers are that tool's placeholders.
# uWSGI's atoi reads them as 0 (no workers); emperor refuses a number that is no number, on
# purpose (docs/configuration.md, "Where emperor differs"). Found on the heldout half.
TEMPLATES = {
    "077-ReutersMedia-pyword2vec-uwsgi.ini": ["__NUM_PYTHON_PROCESSES__", "__NUM_UWSGI_THREADS__"],
    "122-searxng-searxng-searxng.ini": ["${UWSGI_WORKERS:-2}", "${UWSGI_THREADS:-4}"],
}


@pytest.mark.parametrize("half", ["dev", "heldout"])
def test_no_real_file_fails_for_a_reading_reason(corpus, half):
    reading = {name: [f["detail"] for f in doc["findings"] if f["verdict"] == "error" and f["category"] == "reading"]
               for name, doc in corpus[half].items()}
    assert {n: d for n, d in reading.items() if d} == {
        n: [f'expected an integer, got "{v}"' for v in values] for n, values in TEMPLATES.items() if n in corpus[half]}
    print(f"\n{half}: {json.dumps(summary(corpus[half]))}")


@pytest.mark.parametrize("half,clean,warnings,fail", [("dev", 35, 14, 10), ("heldout", 45, 15, 7)])
def test_counts(corpus, half, clean, warnings, fail):
    s = summary(corpus[half])
    assert (s["clean"], s["warnings"], s["fail"]) == (clean, warnings, fail)


def test_every_finding_is_well_formed(corpus):
    verdicts = {"honoured", "no-op", "unsupported", "unknown", "error", "warning", "placeholder", "logic",
                "include", "skipped"}
    for half in corpus.values():
        for doc in half.values():
            for f in doc["findings"]:
                assert f["verdict"] in verdicts and f["file"], f
            assert doc["starts"] == (not doc["errors"])
