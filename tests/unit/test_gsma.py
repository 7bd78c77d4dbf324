"""`flowops terminals import --gsma FILE`: a GSMA TAC export into the terminal reference, row by row."""

from __future__ import annotations

import shutil
from pathlib import Path

from flowops.cli import main
from flowops.ingest.gsma import generation
from flowops.ingest.terminals import HandsetClasses, load_reference, lookup

ROOT = Path(__file__).resolve().parents[2]
HEADER = ("TAC|Marketing Name|Manufacturer (or) Applicant|Bands|5G Bands|LPWAN|Radio Interface|Brand Name|"
          "Model Name|Operating System|NFC|Bluetooth|WLAN|Device Type")
ROWS = [
    "86753009|HUAWEI P30|Huawei Technologies Co Ltd|GSM 900,WCDMA FDD Band I,LTE FDD BAND 1||Not Known|NONE|"
    "HUAWEI|ELE-L29|Android|Y|Y|Y|Smartphone",
    "86123410|Redmi Note 12 Turbo|Xiaomi Communications Co Ltd|GSM 900,LTE FDD BAND 3|NR NSA BAND n78|Not Known|"
    "NONE|Redmi|23049RAD8C|Android|Y|Y|Y|Smartphone",
    "35099435|Nokia 6300 4G|HMD Global Oy|GSM 900,LTE FDD BAND 3||Not Known|NONE|Nokia|TA-1294|KaiOS|N|Y|Y|"
    "Mobile Phone/Feature phone",
    "35050700|Nokia 105|HMD Global Oy|GSM 900,GSM 1800||Not Known|NONE|Nokia|TA-1203|Series 30+|N|N|N|"
    "Mobile Phone/Feature phone",
    "8675300|Bad TAC|X|GSM 900||Not Known|NONE|X|X|Android|N|N|N|Smartphone",
    "86753009|HUAWEI P30 again|Huawei|GSM 900||Not Known|NONE|HUAWEI|ELE-L29|Android|Y|Y|Y|Smartphone",
    "86999990||Someone|LTE FDD BAND 1||Not Known|NONE|Someone||Android|N|N|N|Smartphone",
    "86999991|Modem X|Someone|||Not Known|NONE|Someone|MX|Proprietary|N|N|N|Modem",
    "86999992|too few fields",
]


def test_bands_give_the_highest_generation():
    assert generation("GSM 900,WCDMA FDD Band I,LTE FDD BAND 1") == "4G"
    assert generation("GSM 900", "NR NSA BAND n78") == "5G"
    assert generation("GSM 900,GSM 1800") == "2G" and generation("WCDMA FDD Band I") == "3G"
    assert generation("") is None


def test_import_writes_usable_rows_and_says_why_each_other_row_was_rejected(tmp_path, capsys):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    export = tmp_path / "tac.txt"
    export.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")

    assert main(["terminals", "import", "--conf", str(conf), "--gsma", str(export)]) == 0

    out = capsys.readouterr().out
    # 35099435 and 35050700 are already in the operator's own table (tacs.csv): left to it.
    assert "2 TACs written" in out and "2 left to the operator's other reference files" in out
    for line, reason in ((6, "bad_tac"), (7, "duplicate_tac"), (8, "no_model"), (9, "no_known_band"),
                         (10, "wrong_field_count")):
        assert f"line {line}: {reason}" in out
    reference = load_reference(conf)
    p30, redmi = reference["86753009"], reference["86123410"]
    assert (p30.brand, p30.model, p30.os, p30.network_gen, p30.is_smart) == ("Huawei", "HUAWEI P30", "Android", "4G",
                                                                            True)
    assert (redmi.brand, redmi.network_gen, redmi.price_tier) == ("Xiaomi", "5G", "mid")
    # The TAC answers first, before any user agent.
    assert lookup(reference, "86753009", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X)",
                  HandsetClasses.load(conf)).source == "tac"
