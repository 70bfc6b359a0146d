"""dsc report: a self-contained HTML page, loaded in a real browser (headless Chromium).

The browser tests need Debian's `chromium`; they are skipped where it is absent, except under
CI (`CI=true`), where its absence is a failure (`.ci/run` installs it)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from artifact_helpers import REPO, input_lines, make_project, tokenize_block, write_input_lines
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.artifact.inspection import IGNORE_INDEX
from dsc.artifact.reader import open_artifact
from dsc.chat.render import merge_spans
from dsc.ops.report import sample_quotas

runner = CliRunner()

# Row text is untrusted: this must reach the page as text, never as markup.
XSS = "</script><img src=x onerror=\"document.body.setAttribute('data-pwned','1')\"><!-- 🦜 &amp;"
XSS_QUESTION = f"Is {XSS} an attack?"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail("chromium is not installed (CI must have it: .ci/run installs Debian's chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium); the report's browser tests need it")


def run_chromium(*args: str) -> str:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-extensions", "--virtual-time-budget=3000", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dump_dom(page: Path, fragment: str = "") -> str:
    return run_chromium("--dump-dom", page.resolve().as_uri() + fragment)


class RowsParser(HTMLParser):
    """The row browser's rows out of a dumped DOM: id, text, supervised text, token titles."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.stack: list[str] = []  # class of each open element inside a row's text
        self.in_text = False
        self.count: int | None = None
        self.images = 0
        self.body_attrs: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images += 1
        if tag == "body":
            self.body_attrs = {k: v or "" for k, v in attrs}
        if a.get("id") == "count":
            self.count = int(a["data-matches"])
        cls = a.get("class") or ""
        if tag == "div" and cls == "row":
            self.rows.append({"id": a["data-id"], "text": "", "sup": [], "titles": [], "cond": ""})
        elif tag == "div" and cls == "text":
            self.in_text = True
        elif self.in_text and tag == "span":
            self.stack.append(cls)
            if a.get("title"):
                self.rows[-1]["titles"].append(a["title"])

    def handle_endtag(self, tag):
        if self.in_text and tag == "span":
            self.stack.pop()
        elif self.in_text and tag == "div":
            self.in_text = False

    def handle_data(self, data):
        if self.in_text and self.stack:
            row = self.rows[-1]
            row["text"] += data
            classes = self.stack[-1].split()
            if "sup" in classes:
                row["sup"].append((len(row["text"]) - len(data), len(row["text"])))
            if "cond" in classes:
                row["cond"] += data


def parse(dom: str) -> RowsParser:
    p = RowsParser()
    p.feed(dom)
    return p


@pytest.fixture(scope="module")
def tokenised_report(tmp_path_factory, tiny_tokenizer_dir):
    """A tokenised artifact with one row carrying markup and an emoji, and its report."""
    root = tmp_path_factory.mktemp("report")
    tok = root / "tok"
    shutil.copytree(tiny_tokenizer_dir, tok)
    spec = make_project(root, rows=24, extra=tokenize_block(tok))
    lines = input_lines(root)
    row = json.loads(lines[0])
    row["messages"][0]["content"] = XSS_QUESTION
    lines.append(json.dumps(row))
    lines.append("{not json")  # one quarantined row
    write_input_lines(root, lines)
    artifact = root / "build" / "t"
    build(spec, artifact)
    page = root / "report.html"
    result = runner.invoke(app, ["report", str(artifact), "--out", str(page)])
    assert result.exit_code == 0, result.output
    return artifact, page


@pytest.fixture(scope="module")
def nat_report(tmp_path_factory):
    """The NAT recipe (conditioning strings, two sources, a quarantine), sampled down to 10 rows."""
    root = tmp_path_factory.mktemp("nat-report")
    artifact = root / "nat"
    build(REPO / "specs" / "nat.yaml", artifact)
    page = root / "nat.html"
    result = runner.invoke(app, ["report", str(artifact), "--out", str(page), "--sample", "10"])
    assert result.exit_code == 0, result.output
    return artifact, page


def all_rows(artifact: Path) -> list[tuple[str, dict]]:
    art = open_artifact(artifact)
    return [(s, r) for s in art.splits for r in art.rows(s)]


def test_page_is_self_contained_and_row_text_is_escaped(tokenised_report):
    artifact, page = tokenised_report
    html = page.read_text(encoding="utf-8")
    # Nothing fetched: no external src/href, a CSP that forbids the network and foreign scripts.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "default-src 'none'" in html and "script-src 'sha256-" in html
    # The hostile text is in the page only as escaped JSON (no raw markup anywhere).
    assert "<img" not in html and "</script><img" not in html and "<!-- \U0001F99C" not in html
    data = json.loads(re.search(r'<script type="application/json" id="dsc-data">(.*?)</script>', html, re.S)[1])
    hostile = [r for r in data["rows"] if XSS in r["text"]]
    assert len(hostile) == 1
    # The quarantine section groups rows under the manifest's reasons, with their counts.
    reasons = open_artifact(artifact).manifest.counts.quarantine_reasons
    assert reasons and dict(re.findall(r"<summary><b>(.*?)</b> — (\d+) rows", html)) == \
        {k: str(v) for k, v in reasons.items()}


def test_sample_is_stratified_by_source_and_said_on_the_page(nat_report):
    artifact, page = nat_report
    assert sample_quotas({"a": 100, "b": 3, "c": 50}, 20) == {"a": 9, "b": 3, "c": 8}
    assert sample_quotas({"a": 5, "b": 3}, 20) == {"a": 5, "b": 3}
    html = page.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="dsc-data">(.*?)</script>', html, re.S)[1])
    sources = [r["source"] for r in data["rows"]]
    assert len(sources) == 10 and sources.count("positive") == 5 and sources.count("negative") == 5
    total = len(all_rows(artifact))
    assert f"a seeded sample of 10 of {total} rows" in html
    # The same seed gives the same sample; another seed another one.
    again = runner.invoke(app, ["report", str(artifact), "--out", str(page.with_name("again.html")), "--sample", "10"])
    assert again.exit_code == 0 and page.with_name("again.html").read_text(encoding="utf-8") == html
    other = runner.invoke(app, ["report", str(artifact), "--out", str(page.with_name("other.html")), "--sample", "10",
                                "--seed", "99"])
    assert other.exit_code == 0
    other_ids = {r["id"] for r in json.loads(re.search(r'id="dsc-data">(.*?)</script>',
                                                      page.with_name("other.html").read_text(), re.S)[1])["rows"]}
    assert other_ids != {r["id"] for r in data["rows"]}


def test_browser_shows_rows_as_the_model_sees_them(tokenised_report):
    artifact, page = tokenised_report
    rows = all_rows(artifact)
    dom = parse(dump_dom(page))
    assert dom.body_attrs.get("data-ready") == "1", "the page's script did not run"
    assert dom.count == len(rows) and len(dom.rows) == min(50, len(rows))
    by_id = {r["id"]: (s, r) for s, r in rows}
    shown = dom.rows[0]
    split, row = by_id[shown["id"]]
    assert shown["text"] == row["text"]
    # Supervised characters are exactly the row's loss spans (tokens inside them are all supervised).
    sup_tokens = sum(1 for t in row["labels"] if t != IGNORE_INDEX)
    assert len([t for t in shown["titles"] if t.endswith("supervised")]) == sup_tokens
    assert merge_spans(shown["sup"]) == merge_spans(row["loss_spans"])
    # Token ids on hover, in order.
    ids = [int(re.search(r"id (\d+)", t)[1]) for t in shown["titles"]]
    assert ids == list(row["input_ids"])


def test_browser_filters_narrow_the_list_and_markup_stays_text(tokenised_report, tmp_path):
    artifact, page = tokenised_report
    rows = all_rows(artifact)
    [hostile] = [(s, r) for s, r in rows if XSS in r["text"]]
    # Without a tokenizer at hand the text is drawn in whole spans (a tag is never cut by tokens).
    spans_page = tmp_path / "spans.html"
    result = runner.invoke(app, ["report", str(artifact), "--out", str(spans_page), "--tokenizer", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    dom = parse(dump_dom(spans_page, "#q=" + "onerror%3D"))
    assert dom.count == 1 and [r["id"] for r in dom.rows] == [hostile[1]["id"]]
    assert XSS in dom.rows[0]["text"]  # shown literally, emoji included
    assert dom.images == 0 and "data-pwned" not in dom.body_attrs
    validation = [r for s, r in rows if s == "validation"]
    assert 0 < len(validation) < len(rows)
    dom = parse(dump_dom(page, "#split=validation"))
    assert dom.count == len(validation) and {r["id"] for r in dom.rows} == {r["id"] for r in validation}


def test_browser_highlights_conditioning_and_renders_a_non_blank_page(nat_report, tmp_path):
    from matplotlib import image

    _, page = nat_report
    dom = parse(dump_dom(page, "#source=positive"))
    assert dom.count == 5 and dom.rows
    assert all("**correctly**" in r["cond"] for r in dom.rows), [r["cond"] for r in dom.rows]
    shot = tmp_path / "report.png"
    run_chromium("--window-size=1200,1400", f"--screenshot={shot}", page.resolve().as_uri())
    pixels = image.imread(shot)
    assert pixels.shape[0] == 1400 and pixels.shape[1] == 1200
    # Not blank: many distinct colours, and real variation in brightness.
    flat = (pixels[..., :3] * 255).astype(int).reshape(-1, 3)
    assert len({tuple(p) for p in flat[::37]}) > 20
    assert flat.std() > 20
