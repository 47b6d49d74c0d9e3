"""The docs: README.md short and to the point, every relative link and anchor resolving, and
the tables bench/report.py writes where it writes them, as it writes them.

Fast and offline: no server, no Docker. bench/report.py says which file holds each
generated table (READMES), so this test cannot drift from it."""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import report  # noqa: E402

README = ROOT / "README.md"
DOCS = [README, ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 12 * 1024
FIRST_SCREEN_LINES = 25

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"`+[^`\n]*`+")
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)


def prose(text):
    """The text outside fenced code blocks, code spans replaced by a word (a link's text
    may be code; what a code span holds is never a link)."""
    return CODE_SPAN.sub("code", FENCE.sub("", text))


def links(path):
    return LINK.findall(prose(path.read_text()))


def slug(heading):
    """GitHub's anchor for a heading: its text as rendered, lowercased, punctuation but
    '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    """Every heading's anchor in a Markdown file, repeated headings numbered as GitHub
    numbers them (-1, -2, ...)."""
    seen, out = {}, set()
    for _, heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_every_page_exists():
    for path in DOCS:
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    assert len(DOCS) > 3, f"no pages under docs/: {DOCS}"


def test_every_relative_link_points_at_a_file_that_exists():
    broken = []
    for page in DOCS:
        for target in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            path = target.split("#", 1)[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_every_anchor_into_markdown_names_a_heading():
    broken = []
    for page in DOCS:
        for target in links(page):
            if "#" not in target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue
            path, anchor = target.split("#", 1)
            into = (page.parent / path) if path else page
            if into.suffix == ".md" and into.is_file() and anchor not in anchors(into):
                broken.append(
                    f"{page.relative_to(ROOT)}: {target} (headings of "
                    f"{into.relative_to(ROOT)}: {sorted(anchors(into))})"
                )
    assert not broken, "anchors that name no heading:\n" + "\n".join(broken)


def test_every_generated_table_has_its_markers_once_in_the_file_report_writes():
    assert report.READMES, "bench/report.py writes no tables?"
    for name, relative in report.READMES.items():
        text = (ROOT / relative).read_text()
        start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
        assert text.count(start) == 1, f"{relative}: {start} {text.count(start)} times, not once"
        assert text.count(end) == 1, f"{relative}: {end} {text.count(end)} times, not once"
        assert text.index(start) < text.index(end), f"{relative}: {end} before {start}"


def test_no_page_holds_markers_report_py_does_not_write():
    for page in DOCS:
        relative = str(page.relative_to(ROOT))
        for name in re.findall(r"<!-- bench:([\w-]+):start -->", page.read_text()):
            if name in report.PROFILE_TABLES:
                assert report.PROFILE_TABLES[name][0] == relative, (relative, name)
                continue
            assert report.READMES.get(name) == relative, (
                f"{relative} holds the markers of {name!r}, which bench/report.py writes "
                f"into {report.READMES.get(name, 'no file')}"
            )


def test_the_generated_tables_are_what_report_py_makes_of_the_committed_results():
    results = committed_results()
    assert not results["meta"]["quick"], "bench/results/results.json is a quick run's"
    tables = report.readme_tables(results)
    assert set(tables) == set(report.READMES), (sorted(tables), sorted(report.READMES))
    for name, relative in report.READMES.items():
        text = (ROOT / relative).read_text()
        start, end = f"<!-- bench:{name}:start -->\n", f"\n<!-- bench:{name}:end -->"
        written = text[text.index(start) + len(start) : text.index(end)]
        assert written == tables[name], (
            f"{relative}: the {name!r} table is not what bench/report.py makes of "
            "bench/results/results.json; run `.venv/bin/python bench/report.py` (never edit "
            "a generated table by hand)"
        )


def test_the_profile_tables_are_what_their_tools_make_of_their_results():
    """make profile's tables (docs/how-it-works.md) come from bench/results/profile.json
    and candidates.json, through the tools' own table()."""
    import importlib

    for name, (relative, results_file, tool) in report.PROFILE_TABLES.items():
        found = json.loads((ROOT / "bench" / "results" / results_file).read_text())
        text = (ROOT / relative).read_text()
        start, end = f"<!-- bench:{name}:start -->\n", f"\n<!-- bench:{name}:end -->"
        assert text.count(start) == 1 and text.count(end) == 1, (relative, name)
        written = text[text.index(start) + len(start) : text.index(end)]
        assert written == importlib.import_module(tool).table(found), (
            f"{relative}: the {name!r} table is not what bench/{tool}.py makes of "
            f"bench/results/{results_file}; run `make profile`"
        )


def committed_results():
    results = json.loads((ROOT / "bench" / "results" / "results.json").read_text())
    results["goals"] = report.goals(results)  # as report.py's own entry point does
    return results


def test_the_headline_marks_every_goal_the_committed_run_missed():
    results = committed_results()
    headline = "\n".join(report.headline_table(results))
    missed = [g["goal"] for g in results["goals"] if g["met"] is False]
    for goal in missed:
        assert goal in headline, f"README.md's headline does not name the missed goal {goal!r}"
    assert ("**missed**" in headline) == bool(missed)
    # A row whose goal was missed says so in its own row.
    rows = [line for line in headline.splitlines() if line.startswith("| memory over ")]
    soak_missed = any(g["goal"].startswith("soak:") for g in results["goals"] if g["met"] is False)
    assert len(rows) == 1 and ("**missed**" in rows[0]) == soak_missed, rows


def test_the_headline_of_a_run_that_met_every_goal_says_so_and_marks_nothing_missed():
    results = committed_results()
    for g in results["goals"]:
        g["met"] = True if g["met"] is not None else None
    headline = "\n".join(report.headline_table(results))
    assert "**missed**" not in headline and "goals measured was met" in headline


def test_the_headline_marks_a_missed_goal_no_row_speaks_for():
    results = committed_results()
    goal = next(g for g in results["goals"] if g["goal"].startswith("cold start"))
    goal["met"] = False
    headline = "\n".join(report.headline_table(results))
    assert goal["goal"] in headline.splitlines()[-1], headline.splitlines()[-1]


def test_every_table_in_bench_readme_is_one_report_py_writes():
    text = FENCE.sub("", (ROOT / "bench" / "README.md").read_text())
    for name, relative in report.READMES.items():
        if relative == "bench/README.md":
            text = re.sub(
                rf"<!-- bench:{name}:start -->.*?<!-- bench:{name}:end -->", "", text, flags=re.S
            )
    typed = [line for line in text.splitlines() if line.lstrip().startswith("|")]
    assert not typed, (
        "bench/README.md has a table outside the markers bench/report.py "
        "writes (figures come from a committed run):\n" + "\n".join(typed)
    )


def test_the_readme_is_short():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes, over {README_MAX_BYTES}: move reference to docs/"
    )


def test_the_readme_names_both_commands_on_its_first_screen():
    first = "\n".join(README.read_text().splitlines()[:FIRST_SCREEN_LINES])
    for command in ("make serve", "make test"):
        assert command in first, f"README.md's first {FIRST_SCREEN_LINES} lines lack {command!r}"
