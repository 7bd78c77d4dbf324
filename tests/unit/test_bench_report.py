"""`make bench` writes its report between BENCHMARKS.md's markers and keeps the rest of the file."""

from __future__ import annotations

from tests.benchmarks.run import BEGIN, END, REPORT, embed


def test_the_report_replaces_only_what_is_between_the_markers_and_each_heading_goes_one_level_down():
    document = f"# Benchmarks\n\nkept analysis\n\n## Latest run\n\n{BEGIN}\nold report\n{END}\n\nkept footer\n"
    report = "# Benchmarks\n\nnew figures\n\n## The ladder\n\n| a |\n"

    out = embed(report, document)

    assert out == (f"# Benchmarks\n\nkept analysis\n\n## Latest run\n\n{BEGIN}\n## Benchmarks\n\nnew figures\n\n"
                   f"### The ladder\n\n| a |\n{END}\n\nkept footer\n")
    assert embed(report, out) == out   # a second run replaces the first


def test_benchmarks_md_has_the_markers():
    text = REPORT.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and text.index(BEGIN) < text.index(END)
