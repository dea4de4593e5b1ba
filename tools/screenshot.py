"""Headless Chromium on a report: a PNG screenshot, and a count of the images that loaded.

``python -m tools.screenshot OUTPUT_ROOT PNG`` (re)builds nothing unless ``--build``
is given or ``OUTPUT_ROOT/report.html`` is missing, then writes the screenshot. Used by the browser
test and to regenerate ``docs/report_screenshot.png``. Needs the ``chromium`` binary (Debian:
``apt-get install -y chromium``); nothing in Python beyond the standard library.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

WINDOW = (1400, 2400)
#: no sandbox (CI containers run as root), no GPU, no network chatter, a fresh profile each run
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--disable-dev-shm-usage",
]
#: appended by ``loaded_images`` to a *copy* of the report only: the shipped report has no JavaScript
_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var div = document.createElement('div');
  div.id = 'jr-probe';
  div.textContent = 'loaded=' + ok + ' total=' + imgs.length;
  document.body.appendChild(div);
});
</script>"""


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("chromium not found on PATH (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="jr-chromium-") as profile:
        return subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )


def screenshot(html: Path, png: Path, window: tuple[int, int] = WINDOW, timeout: float = 120) -> Path:
    """Render ``html`` in headless Chromium at ``window`` (width, height) and save ``png``."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    result = _run(
        [f"--screenshot={png}", f"--window-size={window[0]},{window[1]}", "--virtual-time-budget=5000",
         Path(html).resolve().as_uri()],
        timeout,
    )
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return png


def dump_dom(html: Path, timeout: float = 120) -> str:
    """The DOM Chromium builds from ``html`` after its load event (virtual time, no real wait)."""
    result = _run(
        ["--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000", "--dump-dom",
         Path(html).resolve().as_uri()],
        timeout,
    )
    if result.returncode != 0 or "<html" not in result.stdout:
        raise RuntimeError(f"chromium --dump-dom failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return result.stdout


def loaded_images(html: Path, timeout: float = 120) -> tuple[int, int]:
    """(images with naturalWidth > 0, all images) of ``html``, measured on a probed copy."""
    text = Path(html).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="jr-probe-") as tmp:
        probed = Path(tmp) / "probe.html"
        probed.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
        dom = dump_dom(probed, timeout)
    match = re.search(r'id="jr-probe">loaded=(\d+) total=(\d+)<', dom)
    if match is None:
        raise RuntimeError("the image probe did not run (no load event within the time budget)")
    return int(match.group(1)), int(match.group(2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshot", description=__doc__)
    parser.add_argument("output_root", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--build", action="store_true", help="(re)build the report first")
    args = parser.parse_args(argv)
    html = args.output_root / "report.html"
    if args.build or not html.is_file():
        from janus_ray.report import build_report

        build_report(args.output_root)
    print(screenshot(html, args.png))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
