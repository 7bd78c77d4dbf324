"""Whole-file checks and numbered lines: counts that agree with Spark's reader, and every broken-file kind."""

from __future__ import annotations

import gzip
from pathlib import Path

from flowops.ingest.lines import check_file, check_files, read_lines


def write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_each_file_kind_is_recognised(tmp_path):
    body = b"".join(b"line %d\n" % i for i in range(1000))
    whole = gzip.compress(body)
    cases = {
        "ok.txt.gz": (whole, "ok", 1000),
        "two_members.txt.gz": (gzip.compress(body) + gzip.compress(b"x\ny"), "ok", 1002),
        "no_final_newline.txt.gz": (gzip.compress(b"a\nb"), "ok", 2),
        "zero.txt.gz": (b"", "empty_file", 0),
        "empty_gzip.txt.gz": (gzip.compress(b""), "empty_file", 0),
        "cut.txt.gz": (whole[: len(whole) // 2], "truncated_gzip", None),
        "header_only.txt.gz": (whole[:5], "truncated_gzip", 0),
        "garbage.txt.gz": (b"this is not gzip at all", "corrupt_gzip", 0),
        "plain.csv": (b"h\r\n1\r\n2", "ok", 3),
    }
    for name, (data, status, lines) in cases.items():
        found = check_file(write(tmp_path / name, data), name)
        assert found.status == status, name
        if lines is not None:
            assert found.lines == lines, name
    cut = check_file(str(tmp_path / "cut.txt.gz"), "cut")
    assert 0 < cut.lines < 1000 and "complete lines readable" in cut.detail


def test_line_numbers_follow_each_file_in_order(spark, tmp_path):
    raw = tmp_path / "raw"
    sizes = {"a": 5, "b": 3000, "c": 1}
    paths = []
    for name, n in sizes.items():
        paths.append(Path(write(raw / "usage" / "dt=2026-01-01" / "hour=00" / f"{name}.txt.gz",
                                gzip.compress(b"".join(b"%s-%d\n" % (name.encode(), i + 1) for i in range(n))))))
    plain = raw / "usage" / "dt=2026-01-01" / "hour=01" / "d.txt"
    write(plain, b"".join(b"d-%d\n" % (i + 1) for i in range(50_000)))
    paths.append(plain)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "65536")  # split the plain file across partitions
    try:
        checks = check_files(spark, paths, raw)
        rows = read_lines(spark, checks).collect()
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")

    assert {c.source_file: c.lines for c in checks} == {
        "usage/dt=2026-01-01/hour=00/a.txt.gz": 5, "usage/dt=2026-01-01/hour=00/b.txt.gz": 3000,
        "usage/dt=2026-01-01/hour=00/c.txt.gz": 1, "usage/dt=2026-01-01/hour=01/d.txt": 50_000}
    assert len(rows) == 53_006
    assert all(r.value == f"{r.source_file.rsplit('/', 1)[1][0]}-{r.line_no}" for r in rows)
