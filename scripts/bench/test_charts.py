#!/usr/bin/env python3
"""Checks of scripts/bench/charts.py (run by scripts/test.sh; standard library only):
the charts of every results page in benches/results parse as SVG and show, for every
charted row of the page's table, the table's median and range; disk rows and the
disturbed mark reach the charts; a page without raw values is refused.

    python3 scripts/bench/test_charts.py
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CHARTS = os.path.join(HERE, "charts.py")
RESULTS = os.path.join(ROOT, "benches", "results")
NS = "{http://www.w3.org/2000/svg}"
CHARTED = re.compile(r"^(small \d+ conn(, disk)?: (uploads/s|p99 ms)|big: MB/s"
                     r"|big: server CPU s per GB|hold \d+: server peak RSS, MiB)$")


def run_charts(raw, prefix):
    out = subprocess.run([sys.executable, CHARTS, raw, prefix], capture_output=True,
                         text=True, check=False)
    return out.returncode, out.stdout.split(), out.stderr


def titles(paths):
    """The bars' tooltips of the SVG files, after checking that each is an SVG document."""
    found = []
    for p in paths:
        root = ET.parse(p).getroot()
        assert root.tag == NS + "svg", f"{p}: root is {root.tag}"
        assert float(root.get("width")) > 0 and float(root.get("height")) > 0, p
        found += [t.text for t in root.iter(NS + "title")]
    return found


def table_rows(page):
    """(metric, server, median, min, max) of the page's first results table (a page that
    holds two runs has a table and a raw values block for each; charts.py reads the
    first block)."""
    rows = []
    with open(page, encoding="utf-8") as f:
        for line in f:
            if "<summary>raw values" in line:
                break
            m = re.match(r"^\| ([^|]+) \| ([^|]+) \| ([^|]+) \| \[([^–]+)–([^\]]+)\] \|", line)
            if m and m.group(1) != "metric":
                rows.append(tuple(g.strip() for g in m.groups()))
    return rows


class ChartsTest(unittest.TestCase):
    def test_every_results_page_charts_its_table(self):
        pages = [os.path.join(RESULTS, p) for p in sorted(os.listdir(RESULTS))
                 if p.endswith(".md")]
        checked = 0
        for page in pages:
            with open(page, encoding="utf-8") as f:
                if "<summary>raw values" not in f.read():
                    continue
            rows = [r for r in table_rows(page) if CHARTED.match(r[0])]
            self.assertTrue(rows, f"{page}: no charted rows in its table")
            with tempfile.TemporaryDirectory() as tmp, self.subTest(page=page):
                rc, written, err = run_charts(page, os.path.join(tmp, "page"))
                self.assertEqual(rc, 0, err)
                self.assertTrue(written)
                shown = titles(written)
                for metric, server, med, lo, hi in rows:
                    want = f"{server}, {metric}: median {med.rstrip('*')}"
                    hit = [t for t in shown if t.startswith(want)]
                    self.assertTrue(hit, f"{page}: no bar '{want}'")
                    self.assertIn(f"[{lo}–{hi}]", hit[0])
                    checked += 1
        self.assertGreater(checked, 50)

    def test_disk_rows_and_disturbed_runs(self):
        raw = "".join(
            f"small {c} conn{w}: uploads/s\t{s}\t{r}\t{v * (1 + r / 10)}\t0.010\t{d}\n"
            for c in (1, 16) for w in ("", ", disk") for s, v in (("tusring-w2", 900),
                                                                  ("rustus", 400))
            for r, d in ((1, ""), (2, "disturbed" if s == "rustus" else ""), (3, "")))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "raw.tsv")
            with open(path, "w", encoding="utf-8") as f:
                f.write(raw)
            rc, written, err = run_charts(path, os.path.join(tmp, "run"))
            self.assertEqual(rc, 0, err)
            self.assertEqual([os.path.basename(p) for p in written], ["run-small.svg"])
            shown = titles(written)
            self.assertEqual(len(shown), 8)
            self.assertIn("tusring-w2, small 16 conn, disk: uploads/s: median 1080 "
                          "[990–1170], 3 runs", shown)
            self.assertIn("rustus, small 1 conn: uploads/s: median 480* [440–520], 3 runs",
                          shown)
            text = open(written[0], encoding="utf-8").read()
            self.assertIn("uploads/s (disk)", text)

    def test_a_page_without_raw_values_is_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            page = os.path.join(tmp, "page.md")
            with open(page, "w", encoding="utf-8") as f:
                f.write("# a page\n\n| metric | server |\n")
            rc, written, err = run_charts(page, os.path.join(tmp, "page"))
            self.assertNotEqual(rc, 0)
            self.assertEqual(written, [])
            self.assertIn("no raw values", err)


if __name__ == "__main__":
    unittest.main()
