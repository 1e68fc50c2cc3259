#!/usr/bin/env python3
"""Charts of one scripts/bench.sh run, as SVG files, from the run's raw values.

    scripts/bench/charts.py RAW PREFIX

RAW is the run's raw values, one per line, tab-separated: metric, server, repeat, value,
other processes' cores and, optionally, "disturbed"; or a results page
(benches/results/*.md) that holds them in its "raw values" block. It writes, each only
when RAW has its metrics:

  PREFIX-small.svg  4 KiB uploads/s and p99 latency per connection count, per server
                    (and the same on the disk, for the `disk` scenario's rows)
  PREFIX-big.svg    the 1 GiB PATCH: MB/s and server CPU seconds per GB, per server
  PREFIX-hold.svg   peak RSS of the server with 1,000 slow uploads, per server

and prints the names of the files written, one a line. Every bar is the median of the
repeats (the same median as the results table), its whisker the min-max range; a value
marked * includes a run flagged as disturbed. Standard library only.
"""

import re
import statistics
import sys
from xml.sax.saxutils import escape

# The colour of each server bench.sh knows (tusring blue, its variants in their own
# hues, the others apart); any other takes the next of OTHERS.
COLOURS = {"tusring-w1": "#7ea6d8", "tusring-w2": "#1f4e8c", "redis-w1": "#c3a4cf",
           "redis-w2": "#7b4f96", "base-w1": "#b8b8b8", "base-w2": "#6e6e6e",
           "rustus": "#e0703a", "tusd": "#59a14f", "node": "#c9a227",
           "iperf3": "#a0a0a0", "sink": "#4d4d4d"}
OTHERS = ["#e15759", "#76b7b2", "#9c755f", "#edc948", "#ff9da7"]

SMALL = re.compile(r"^small (\d+) conn(, disk)?: (uploads/s|p99 ms)$")
HOLD = re.compile(r"^hold (\d+): server peak RSS, MiB$")

FONT = "font-family:sans-serif"
LABEL_W = 96     # server names
BAR_W = 230      # the longest bar
VALUE_W = 150    # the value and its range, right of the bar
BAR_H = 13
BAR_GAP = 3
GROUP_GAP = 8
PANEL_W = LABEL_W + BAR_W + VALUE_W
PANEL_GAP = 24


def fmt(v):
    """The results table's number format (bench.sh's awk fmt)."""
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def read_raw(path):
    """[(metric, server, value, disturbed)] from a raw file or a results page."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".md"):
        block = re.search(r"<summary>raw values[^\n]*\n\s*```\n(.*?)```", text, re.S)
        if not block:
            raise SystemExit(f"charts.py: no raw values block in {path}")
        text = block.group(1)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        f = line.split("\t")
        if len(f) < 4:
            raise SystemExit(f"charts.py: {path}:{n}: expected metric, server, repeat, value")
        rows.append((f[0], f[1], float(f[3]), len(f) > 5 and f[5] == "disturbed"))
    return rows


class Stats:
    """Median and range of each (metric, server), and the order things first appeared."""

    def __init__(self, rows):
        self.vals, self.flag, self.servers = {}, {}, []
        for metric, server, value, disturbed in rows:
            self.vals.setdefault((metric, server), []).append(value)
            self.flag[(metric, server)] = self.flag.get((metric, server), False) or disturbed
            if server not in self.servers:
                self.servers.append(server)
        self.metrics = list(dict.fromkeys(m for m, _ in self.vals))

    def get(self, metric, server):
        v = self.vals.get((metric, server))
        if not v:
            return None
        return statistics.median(v), min(v), max(v), self.flag[(metric, server)]

    def colour(self, server):
        if server in COLOURS:
            return COLOURS[server]
        unknown = [s for s in self.servers if s not in COLOURS]
        return OTHERS[unknown.index(server) % len(OTHERS)]


def top_of(stats, groups):
    """The largest value (a range's max) of the metrics of groups."""
    return max((s[2] for _, m in groups for srv in stats.servers
                if (s := stats.get(m, srv))), default=0) or 1


def panel(stats, title, groups, top, x, y):
    """A panel of horizontal bars at (x, y), top drawn BAR_W long: groups is
    [(label or None, metric)], one bar per server that has the metric. Returns (svg
    elements, height)."""
    out = [f'<text x="{x}" y="{y + 13}" style="{FONT};font-size:13px;font-weight:bold">'
           f"{escape(title)}</text>"]
    scale = BAR_W / top
    cy = y + 22
    for label, metric in groups:
        if label:
            out.append(f'<text x="{x}" y="{cy + 11}" style="{FONT};font-size:11px;'
                       f'font-style:italic">{escape(label)}</text>')
            cy += 15
        for srv in stats.servers:
            s = stats.get(metric, srv)
            if not s:
                continue
            med, lo, hi, dist = s
            x0 = x + LABEL_W
            mid = cy + BAR_H / 2
            star = "*" if dist else ""
            n = len(stats.vals[(metric, srv)])
            out.append(
                f'<g><title>{escape(srv)}, {escape(metric)}: median {fmt(med)}{star} '
                f'[{fmt(lo)}–{fmt(hi)}], {n} runs</title>'
                f'<text x="{x0 - 5}" y="{cy + 10}" text-anchor="end" '
                f'style="{FONT};font-size:11px">{escape(srv)}</text>'
                f'<rect x="{x0}" y="{cy}" width="{med * scale:.1f}" height="{BAR_H}" '
                f'fill="{stats.colour(srv)}"/>'
                f'<path d="M{x0 + lo * scale:.1f} {mid}H{x0 + hi * scale:.1f}'
                f'M{x0 + lo * scale:.1f} {cy + 2}V{cy + BAR_H - 2}'
                f'M{x0 + hi * scale:.1f} {cy + 2}V{cy + BAR_H - 2}" stroke="#222" '
                f'stroke-width="1.2" fill="none"/>'
                f'<text x="{x0 + max(med, hi) * scale + 5:.1f}" y="{cy + 10}" '
                f'style="{FONT};font-size:11px">{fmt(med)}{star} '
                f'<tspan style="fill:#666">[{fmt(lo)}–{fmt(hi)}]</tspan></text></g>')
            cy += BAR_H + BAR_GAP
        cy += GROUP_GAP
    out.append(f'<line x1="{x + LABEL_W}" y1="{y + 20}" x2="{x + LABEL_W}" y2="{cy - GROUP_GAP}" '
               f'stroke="#222"/>')
    return out, cy - y


def svg(stats, heading, grid):
    """An SVG document: the heading, then the panels row by row. grid is a list of rows,
    each a list of (title, groups); the panels of one column share their scale (on the
    small uploads' chart: tmpfs above, the disk below)."""
    body, y = [], 30
    tops = {}
    for row in grid:
        for col, (_, groups) in enumerate(row):
            tops[col] = max(tops.get(col, 0), top_of(stats, groups))
    for row in grid:
        height = 0
        for col, (title, groups) in enumerate(row):
            els, h = panel(stats, title, groups, tops[col], 10 + col * (PANEL_W + PANEL_GAP), y)
            body += els
            height = max(height, h)
        y += height + 12
    for line in ("Bars: the median of the repeats; whiskers: min–max.",
                 "*: a run flagged disturbed (other processes busy) among them."):
        body.append(f'<text x="10" y="{y + 8}" style="{FONT};font-size:10px;fill:#555">'
                    f"{escape(line)}</text>")
        y += 13
    width = 20 + max(len(r) for r in grid) * (PANEL_W + PANEL_GAP) - PANEL_GAP
    return "\n".join(
        [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 5}" '
         f'viewBox="0 0 {width} {y + 5}">',
         f'<rect width="100%" height="100%" fill="white"/>',
         f'<text x="10" y="20" style="{FONT};font-size:15px;font-weight:bold">'
         f"{escape(heading)}</text>"] + body + ["</svg>", ""])


def small_chart(stats):
    """Rows: the data dir, then the disk; columns: uploads/s, p99."""
    found = {}
    for m in stats.metrics:
        if (g := SMALL.match(m)):
            found.setdefault(g.group(2) or "", {}).setdefault(g.group(3), []).append(
                (f"{g.group(1)} connection" + ("s" if g.group(1) != "1" else ""), m))
    grid = []
    for where, kinds in found.items():
        on = " (disk)" if where else ""
        row = []
        if "uploads/s" in kinds:
            row.append((f"uploads/s{on}, higher is better", kinds["uploads/s"]))
        if "p99 ms" in kinds:
            row.append((f"p99 latency, ms{on}, lower is better", kinds["p99 ms"]))
        grid.append(row)
    return grid and svg(stats, "4 KiB creation-with-upload", grid)


def big_chart(stats):
    row = [(t, [(None, m)]) for m, t in (
        ("big: MB/s", "MB/s (10^6 bytes/s), higher is better"),
        ("big: server CPU s per GB", "server CPU seconds per GB, lower is better"))
        if m in stats.metrics]
    return row and svg(stats, "One big upload in one PATCH", [row])


def hold_chart(stats):
    for m in stats.metrics:
        if (g := HOLD.match(m)):
            return svg(stats, f"{int(g.group(1)):,} slow uploads at once",
                       [[("server peak RSS, MiB, lower is better", [(None, m)])]])
    return None


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    stats = Stats(read_raw(argv[1]))
    for name, make in (("small", small_chart), ("big", big_chart), ("hold", hold_chart)):
        doc = make(stats)
        if doc:
            path = f"{argv[2]}-{name}.svg"
            with open(path, "w", encoding="utf-8") as f:
                f.write(doc)
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
