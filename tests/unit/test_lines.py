"""Whole-file checks and numbered lines: counts that agree with Spark's reader, and every broken-file kind."""

from __future__ import annotations

import gzip
from pathlib import Path

from flowops.ingest.lines import LandedFile, check_file, group_files, read_landed


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
        "empty_lines.txt": (b"\n\n", "ok", 2),
    }
    for name, (data, status, lines) in cases.items():
        found = check_file(write(tmp_path / name, data), name)
        assert found.status == status, name
        if lines is not None:
            assert found.lines == lines, name
    cut = check_file(str(tmp_path / "cut.txt.gz"), "cut")
    assert 0 < cut.lines < 1000 and "complete lines readable" in cut.detail


def test_line_numbers_follow_each_file_in_order_and_every_file_reports_its_status(spark, tmp_path):
    raw = tmp_path / "raw"
    sizes = {"a": 5, "b": 3000, "c": 1}
    paths = []
    for name, n in sizes.items():
        paths.append(Path(write(raw / "usage" / "dt=2026-01-01" / "hour=00" / f"{name}.txt.gz",
                                gzip.compress(b"".join(b"%s-%d\n" % (name.encode(), i + 1) for i in range(n))))))
    plain = raw / "usage" / "dt=2026-01-01" / "hour=01" / "d.txt"
    write(plain, b"".join(b"d-%d\r\n" % (i + 1) for i in range(50_000)))  # CRLF: no CR in the values
    paths.append(plain)
    cut = gzip.compress(b"".join(b"e-%d\n" % (i + 1) for i in range(20_000)))
    paths.append(Path(write(raw / "usage" / "dt=2026-01-01" / "hour=02" / "e.txt.gz", cut[: len(cut) // 2])))
    files = [LandedFile.under(raw, path) for path in paths]

    rows = read_landed(spark, files).collect()

    lines = [r for r in rows if r.line_no is not None]
    statuses = {r.source_file: (r.file_status, r.file_lines) for r in rows if r.line_no is None}
    cut_lines = statuses["usage/dt=2026-01-01/hour=02/e.txt.gz"][1]
    assert statuses == {
        "usage/dt=2026-01-01/hour=00/a.txt.gz": ("ok", 5), "usage/dt=2026-01-01/hour=00/b.txt.gz": ("ok", 3000),
        "usage/dt=2026-01-01/hour=00/c.txt.gz": ("ok", 1), "usage/dt=2026-01-01/hour=01/d.txt": ("ok", 50_000),
        "usage/dt=2026-01-01/hour=02/e.txt.gz": ("truncated_gzip", cut_lines)}
    assert 0 < cut_lines < 20_000
    assert len(lines) == 53_006 + cut_lines
    assert all(bytes(r.value).decode() == f"{r.source_file.rsplit('/', 1)[1][0]}-{r.line_no}" for r in lines)


def test_odd_file_names_are_read_as_they_are(spark, tmp_path):
    raw = tmp_path / "raw"
    names = ["with space.txt.gz", "100%.txt.gz", "[abc].txt.gz", "{a,b}*?.txt.gz", "流量.txt.gz"]
    paths = [Path(write(raw / "usage" / "dt=2026-01-01" / "hour=00" / name, gzip.compress(b"x\ny\n")))
             for name in names]

    rows = read_landed(spark, [LandedFile.under(raw, path) for path in paths]).collect()

    statuses = {r.source_file.rsplit("/", 1)[1]: (r.file_status, r.file_lines) for r in rows if r.line_no is None}
    assert statuses == {name: ("ok", 2) for name in names}
    assert len([r for r in rows if r.line_no is not None]) == 2 * len(names)


def test_files_are_grouped_in_name_order_by_size():
    mb = 1 << 20
    files = [LandedFile(f"/x/{i}", f"usage/dt=2026-01-0{1 + i // 4}/f{i}", 20 * mb) for i in range(8)]

    groups = group_files(list(reversed(files)), tasks=4)
    small = group_files([LandedFile(f"/x/{i}", f"f{i}", mb) for i in range(8)], tasks=4)
    huge = group_files([LandedFile(f"/x/{i}", f"f{i}", 40 * mb) for i in range(8)], tasks=2)

    assert [[f.source_file for f in g] for g in groups] == [[f.source_file for f in files[i:i + 2]]
                                                            for i in range(0, 8, 2)]
    assert len(small) == 1                 # a task is worth its set-up only with some data
    assert [len(g) for g in huge] == [1] * 8  # and holds at most 64 MB, however few tasks were asked for


def test_lines_of_several_files_are_parsed_together_and_each_status_follows_its_last_line(tmp_path):
    import pyarrow as pa

    from flowops.ingest.lines import read_files

    sizes = {"a": 3, "b": 10, "c": 0, "d": 4, "e": 7}
    paths = [(write(tmp_path / f"{name}.txt.gz", gzip.compress(b"".join(b"%s-%d\n" % (name.encode(), i + 1)
                                                                          for i in range(n)))), name)
             for name, n in sizes.items()]
    calls = []

    class Parse:
        def __call__(self, values, segments):
            calls.append(segments)
            return {"value": values}

        def finish(self, source_file):   # a status row may come only once its file's lines were all parsed
            parsed = sum(n for segments in calls for name, n in segments if name == source_file)
            return {"parsed": parsed}

    schema = pa.schema([("source_file", pa.string()), ("line_no", pa.int64()), ("value", pa.binary()),
                        ("file_status", pa.string()), ("file_lines", pa.int64()), ("file_detail", pa.string()),
                        ("parsed", pa.int64())])

    rows = pa.Table.from_batches(list(read_files(paths, Parse(), schema, batch_lines=8)), schema).to_pylist()

    assert all(sum(n for _, n in segments) >= 8 for segments in calls[:-1])   # batches span files
    assert any(len(segments) > 1 for segments in calls)
    assert [r["value"].decode() for r in rows if r["line_no"]] == [f"{name}-{i + 1}" for name, n in sizes.items()
                                                                    for i in range(n)]
    assert all(r["value"].decode() == f"{r['source_file']}-{r['line_no']}" for r in rows if r["line_no"])
    statuses = {r["source_file"]: (r["file_status"], r["file_lines"], r["parsed"]) for r in rows if not r["line_no"]}
    assert statuses == {name: ("ok" if n else "empty_file", n, n) for name, n in sizes.items()}


def test_a_batch_is_bounded_in_bytes_and_files_cut_or_split_into_pieces_keep_their_lines(tmp_path, monkeypatch):
    import pyarrow as pa

    from flowops.ingest import lines

    monkeypatch.setattr(lines, "READ_BYTES", 64)      # every file is read and inflated in many small pieces
    monkeypatch.setattr(lines, "INFLATE_BYTES", 64)
    whole = gzip.compress(b"".join(b"b-%d\n" % (i + 1) for i in range(40)))
    files = {"a": gzip.compress(b"".join(b"a-%d-%s\n" % (i + 1, b"x" * 200) for i in range(30))),   # long lines
             "b": whole[: len(whole) // 2], "c": gzip.compress(b"c-1\nc-2\n")}
    paths = [(write(tmp_path / f"{name}.txt.gz", data), name) for name, data in files.items()]
    calls = []

    def parse(values, segments):
        calls.append((values.nbytes, segments))
        return {"value": values}

    schema = pa.schema([("source_file", pa.string()), ("line_no", pa.int64()), ("value", pa.binary()),
                        ("file_status", pa.string()), ("file_lines", pa.int64()), ("file_detail", pa.string())])

    rows = pa.Table.from_batches(list(lines.read_files(paths, parse, schema, batch_lines=1000, batch_bytes=1000)),
                                 schema).to_pylist()

    assert len(calls) > 3 and all(nbytes < 1000 + 64 + 300 for nbytes, _ in calls)   # by bytes, not by lines
    statuses = {r["source_file"]: (r["file_status"], r["file_lines"]) for r in rows if not r["line_no"]}
    cut = statuses["b"][1]
    assert statuses == {"a": ("ok", 30), "b": ("truncated_gzip", cut), "c": ("ok", 2)} and 0 < cut < 40
    read = [(r["source_file"], r["line_no"], r["value"].decode().split("-")[1]) for r in rows if r["line_no"]]
    assert read == [("a", i + 1, str(i + 1)) for i in range(30)] + [("b", i + 1, str(i + 1)) for i in range(cut)] \
        + [("c", 1, "1"), ("c", 2, "2")]
