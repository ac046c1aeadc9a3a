#!/usr/bin/env python3
"""Checks a `jwtguard report --html` page with Python's own HTML parser (tests/report.rs).

Usage: report_html.py PAGE EXPECTED_JSON. EXPECTED_JSON maps a table caption to rows
that table must hold (each a list of cell texts, a prefix of the row) and "forbidden"
to strings no text may lack and no tag may carry. Exits 1 with a message on the first
problem: a script, style sheet or anything fetched, an event handler attribute, a tag
that came from the log, or a figure missing.
"""
import json
import sys
from html.parser import HTMLParser

ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p",
                "table", "caption", "tr", "th", "td", "svg", "g", "rect", "text"}


class Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.problems, self.tables = [], [], {}
        self.caption = self.row = self.cell = None
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"unexpected tag <{tag}> {attrs}")
        for name, value in attrs:
            if name.startswith("on") or name in ("src", "href", "xlink:href"):
                self.problems.append(f"<{tag}> has {name}={value!r}")
        if tag == "caption":
            self.caption = ""
            self.cell = "caption"
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "caption":
            self.tables[self.caption] = []
            self.current = self.caption
            self.cell = None
        elif tag in ("td", "th") and self.row is not None:
            self.row.append(self.cell)
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.tables[self.current].append(self.row)
            self.row = None

    def handle_data(self, data):
        self.text.append(data)
        if self.cell == "caption":
            self.caption += data
        elif self.cell is not None:
            self.cell += data


def main():
    page_path, expected_path = sys.argv[1:3]
    page = Page()
    with open(page_path, encoding="utf-8") as f:
        page.feed(f.read())
    page.close()
    expected = json.load(open(expected_path, encoding="utf-8"))
    problems = list(page.problems)
    if "script" in page.tags or "svg" not in page.tags:
        problems.append(f"tags: {sorted(set(page.tags))}")
    text = "".join(page.text)
    for forbidden in expected.pop("forbidden", []):
        if forbidden not in text:
            problems.append(f"{forbidden!r} is not shown as text")
    for caption, rows in expected.items():
        table = page.tables.get(caption)
        if table is None:
            problems.append(f"no table {caption!r}: {sorted(page.tables)}")
            continue
        for row in rows:
            if not any(r[:len(row)] == row for r in table):
                problems.append(f"{caption!r} lacks {row}: {table}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"ok: {len(page.tags)} tags, tables {sorted(page.tables)}")


main()
