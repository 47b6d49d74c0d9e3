"""`bench/bench.py --quick` runs end to end against the real server and writes every
section of its results; the served entities equal nlp.pipe's. No timing is asserted:
the figures depend on the machine, only their presence and sanity do not."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, in_ci

sys.path.insert(0, str(ROOT / "bench"))

import corpus  # noqa: E402

BENCH = ROOT / "bench" / "bench.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # The target is auto, as `make bench-quick` runs it: the image when Docker answers.
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, f"bench.py --quick failed:\n{proc.stderr[-4000:]}"
    return out, json.loads((out / "results.json").read_text()), proc.stderr


def positive(value):
    return isinstance(value, (int, float)) and value > 0


def test_quick_run_writes_json_markdown_and_chart(quick_run):
    out, results, _ = quick_run
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    for heading in ("## Goals (issue 5)", "## In-process baseline", "## Served",
                    "## Other figures"):
        assert heading in md
    # One line per goal of issue 5, each saying met, missed or n/a.
    assert len(results["goals"]) == 7
    assert md.count(" met |") + md.count("**missed**") + md.count("n/a") >= 7


def test_in_ci_the_benchmark_runs_against_the_image(quick_run):
    _, results, _ = quick_run
    if in_ci():
        assert results["meta"]["target"] == "image"
    assert results["meta"]["target"] in ("image", "host")


def test_baseline_section_holds_positive_figures(quick_run):
    _, results, _ = quick_run
    base = results["baseline"]
    for key in ("pipe_1", "pipe_n", "calls_n", "pipe_n_batches_of_64"):
        assert positive(base[key]["docs_per_s"]), key
        assert base[key]["docs"] == results["meta"]["corpus"]["sentences"]
    assert base["pipe_n"]["processes"] == results["meta"]["workers"]
    for key in ("nlp_call_latency_ms", "pipe_batch_latency_ms"):
        assert all(positive(base[key][p]) for p in ("p50", "p95", "p99")), key


@pytest.mark.parametrize("section", ["served_batch", "served_single", "blog_baseline"])
def test_served_sections_hold_positive_figures_and_ratios(quick_run, section):
    _, results, _ = quick_run
    rows = results[section]
    assert rows
    for row in rows:
        assert positive(row["docs_per_s"]) and positive(row["ratio_pipe"])
        assert row["docs"] == results["meta"]["corpus"]["sentences"]
        assert all(positive(row["latency_ms"][p]) for p in ("p50", "p95", "p99"))
        assert positive(row["server_cpu_ms_per_doc"])
    if section != "served_batch":  # one-text requests are also held to nlp(text)
        assert all(positive(r["ratio_calls"]) for r in rows)
    if section == "served_single":  # the latency overhead goal needs one request at a time
        assert any(r["concurrency"] == 1 for r in rows)


def test_ping_cold_start_memory_and_image_sections(quick_run):
    _, results, _ = quick_run
    ping = results["ping_under_load_ms"]
    assert ping["n"] > 0 and positive(ping["p99"]) and ping["non_200"] == 0
    assert all(positive(v) for v in results["cold_start_s"].values())
    assert set(results["cold_start_s"]) == {"workers_n", "workers_1", "full_pipeline"}
    mem = results["memory"]
    n = results["meta"]["workers"]
    assert positive(mem[f"workers_{n}"]["pss_mb"]) and positive(mem["workers_1"]["pss_mb"])
    # N workers are more processes than one: the sum must see all of them.
    assert mem[f"workers_{n}"]["processes"] == mem["workers_1"]["processes"] + (n - 1)
    if results["meta"]["target"] == "image":
        assert positive(results["image"]["size_mb"])
    else:
        assert results["image"] is None


def test_served_entities_equal_nlp_pipe_on_the_corpus(quick_run):
    """An independent check: this test runs nlp.pipe itself on the texts the benchmark sent
    and compares the entities the served endpoint answered for each."""
    import model
    from settings import Settings

    out, results, _ = quick_run
    records = [json.loads(line) for line in
               (out / "served-entities.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in records]
    assert texts == corpus.sentences(results["meta"]["corpus"]["sentences"])
    nlp = model.load(Settings.from_env({**os.environ, "SPACY_FULL_PIPELINE": "false"}))
    expected = [[[e.text, e.label_, e.start_char, e.end_char] for e in doc.ents]
                for doc in nlp.pipe(texts)]
    served = [r["entities"] for r in records]
    assert sum(1 for doc in expected if doc) > len(texts) * 0.8  # the corpus has entities
    assert served == expected
    assert all(c["mismatches"] == 0 for c in results["correctness"].values())
