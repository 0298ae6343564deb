"""Check that report pages fit a browser window, and render them to PNG with headless Chromium to look at.

Two checks, one with a browser and one without:

- `layout_problems(html)` reads a page's markup: the stylesheet keeps images within the page, every embedded figure
  is at most `page.MAX_FIGURE_PX` wide, every table scrolls in its own box. It needs nothing installed.
- `render_page(html_path, png_path)` opens the page in headless Chromium at 1,280 px, measures how wide the laid-out
  page is (`scrollWidth`), and screenshots all of it. Chromium comes from Debian's `chromium` package.

From the command line (what `make report-png` runs)::

    python -m modelyard.report.render runs/x/report.html value/value.html --out build/report-png
    python -m modelyard.report.render --demo --out build/report-png   # trains tiny runs first

It exits 1 when a page is wider than the window or fails the markup check.
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from modelyard.report.page import MAX_FIGURE_PX, WINDOW_PX, png_size

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_MAX_HEIGHT_PX = 16_000
_MEASURE = ("<script>window.addEventListener('load', () => {const e = document.documentElement;"
            "document.body.setAttribute('data-modelyard-extent', e.scrollWidth + 'x' + e.scrollHeight);});</script>")
_IMG = re.compile(r"<img\b[^>]*>")
_DATA_PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def layout_problems(page: str) -> list[str]:
    """Why `page` (HTML text) could be wider than a 1,280 px window; empty when nothing is found."""
    problems = []
    style = "".join(re.findall(r"<style>(.*?)</style>", page, flags=re.S))
    if not re.search(r"(^|[}\s])img\s*\{[^}]*max-width:\s*100%", style):
        problems.append("the stylesheet does not give img a max-width of 100%")
    if not re.search(r"body\s*\{[^}]*max-width:\s*(\d+)px", style):
        problems.append("the stylesheet does not bound the body's width")
    for i, tag in enumerate(_IMG.findall(page)):
        data = _DATA_PNG.search(tag)
        if data is None:
            problems.append(f"image {i} is not an embedded PNG")
            continue
        width, _ = png_size(base64.b64decode(data.group(1)))
        if width > MAX_FIGURE_PX:
            problems.append(f"image {i} is {width} px wide; at most {MAX_FIGURE_PX} px fit the page")
    outside = len(re.findall(r"<table\b", page)) - len(re.findall(r'<div class="table"><table\b', page))
    if outside:
        problems.append(f"{outside} table(s) outside a scrolling <div class=\"table\"> box")
    return problems


def find_browser() -> str | None:
    """The path of a Chromium (or Chrome) binary, or None."""
    return next((p for p in map(shutil.which, _BROWSERS) if p), None)


def _chromium(browser: str, url: str, *args: str, timeout: float = 120) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
           "--no-first-run", "--disable-extensions", *args, url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{browser} failed (exit {proc.returncode}) on {url}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def page_extent(html_path: str | Path, *, width: int = WINDOW_PX, browser: str | None = None) -> tuple[int, int]:
    """(width, height) in CSS pixels of the page laid out in a `width`-pixel window: a width above the window's
    means a horizontal scroll bar."""
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError("no Chromium found: apt-get install chromium")
    html_path = Path(html_path).resolve()
    text = html_path.read_text(encoding="utf-8")
    text = text.replace("</body>", _MEASURE + "</body>") if "</body>" in text else text + _MEASURE
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / html_path.name
        probe.write_text(text, encoding="utf-8")
        dom = _chromium(browser, probe.as_uri(), f"--window-size={width},1000", "--dump-dom")
    found = re.search(r'data-modelyard-extent="(\d+)x(\d+)"', dom)
    if found is None:
        raise RuntimeError(f"could not measure {html_path}: the page did not finish loading in {browser}")
    return int(found.group(1)), int(found.group(2))


def render_page(html_path: str | Path, png_path: str | Path, *, width: int = WINDOW_PX,
                browser: str | None = None) -> dict:
    """Screenshot the whole page at `width` px into `png_path`.

    Returns:
        {"png": path, "window_width": width, "page_width": laid-out width, "page_height": ..., "fits": bool}
    """
    browser = browser or find_browser()
    page_width, page_height = page_extent(html_path, width=width, browser=browser)
    height = min(page_height, _MAX_HEIGHT_PX)
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    _chromium(browser, Path(html_path).resolve().as_uri(), f"--window-size={width},{height}",
              f"--screenshot={png_path}")
    if not png_path.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot for {html_path}")
    return {"png": str(png_path), "window_width": width, "page_width": page_width, "page_height": page_height,
            "fits": page_width <= width}


def _demo_pages(workdir: Path) -> list[Path]:
    """A short digits run (LeNet-5, 3 epochs), a logistic regression, and the value page comparing them."""
    import modelyard
    from modelyard.value import value

    runs = workdir / "runs"
    lenet = modelyard.train("examples/digits-lenet.yaml", output=runs, overrides=["train.epochs=3"], quiet=True)
    logreg = modelyard.train("examples/digits-logreg.yaml", output=runs, quiet=True)
    value([lenet.path, logreg.path], "examples/value-digits.yaml", output=workdir / "value", budget_s=2.0,
          isolated=False)
    return [lenet.path / "report.html", logreg.path / "report.html", workdir / "value" / "value.html"]


def _png_name(html_path: Path) -> str:
    """digits-lenet-report.png for runs/digits-lenet-20260101T000000Z/report.html: one name per experiment, so a
    second rendering replaces the first."""
    folder = re.sub(r"-\d{8}T\d{6}Z$", "", html_path.parent.name)
    return f"{folder}-{html_path.stem}.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelyard.report.render", description=__doc__.split("\n")[0])
    parser.add_argument("pages", nargs="*", type=Path, help="report.html / value.html files, or run folders")
    parser.add_argument("--out", type=Path, default=Path("build/report-png"), help="folder for the PNGs")
    parser.add_argument("--demo", action="store_true", help="train tiny runs and render their pages too")
    parser.add_argument("--width", type=int, default=WINDOW_PX, help="browser window width in px (default 1280)")
    args = parser.parse_args(argv)
    pages = [p / "report.html" if p.is_dir() else p for p in args.pages]
    browser = find_browser()
    if browser is None:
        print("no Chromium found: install it with `apt-get install chromium` (Debian)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        if args.demo:
            pages += _demo_pages(Path(tmp))
        if not pages:
            parser.error("give pages to render, or --demo")
        failed = 0
        for html_path in pages:
            problems = layout_problems(html_path.read_text(encoding="utf-8"))
            shot = render_page(html_path, args.out / _png_name(html_path), width=args.width, browser=browser)
            if not shot["fits"]:
                problems.append(f"laid out {shot['page_width']} px wide in a {args.width} px window")
            failed += bool(problems)
            print(f"{'FAIL' if problems else 'ok  '} {shot['png']}  {shot['page_width']}x{shot['page_height']} px"
                  + "".join(f"\n     {p}" for p in problems))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
