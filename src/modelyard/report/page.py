"""What every report page shares: one stylesheet, figures as PNG bytes, and embedded images.

A page must fit a 1,280 px browser window without a horizontal scroll bar: the body is at most
`PAGE_MAX_PX` wide, every image scales down with it (`max-width:100%`), wide tables scroll inside their
own box, and no figure is drawn wider than `MAX_FIGURE_PX` in the first place.
"""

from __future__ import annotations

import base64
import html
import io
import struct

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WINDOW_PX = 1280  # the browser window a page must fit
PAGE_MAX_PX = 1100
DPI = 100  # figures are saved without bbox cropping, so a PNG is exactly figsize x DPI pixels
MAX_FIGURE_PX = 1060  # the body's width less its padding
HALF_FIGURE_PX = 540  # two figures this wide fit side by side

STYLE = f"""
body{{font-family:system-ui,sans-serif;max-width:{PAGE_MAX_PX}px;margin:2em auto;padding:0 1em;color:#222;
line-height:1.4}}
h1{{margin-bottom:.2em}} h2{{margin-top:1.6em}} .sub{{color:#666;margin-top:0}}
.headline{{font-size:1.5em;margin:.4em 0}} .note{{color:#555;font-size:.9em}}
.table{{max-width:100%;overflow-x:auto}} table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ddd;padding:.3em .6em;text-align:right;vertical-align:top}} th{{background:#f4f4f4}}
td:first-child,th:first-child,th.text{{text-align:left}}
td.text{{text-align:left;overflow-wrap:anywhere;max-width:40em}}
.grid{{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}} .grid>figure{{flex:1 1 420px}}
figure{{margin:0 0 1em;max-width:100%;min-width:0}} figcaption{{color:#555;font-size:.9em;max-width:60em}}
img{{max-width:100%;height:auto;display:block}}
pre{{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}}
"""


def png_bytes(fig) -> bytes:
    """Save a matplotlib figure as PNG bytes at `DPI` and close it.

    Raises:
        ValueError: the figure is wider than `MAX_FIGURE_PX` (a report figure must fit the page unscaled).
    """
    width_px = fig.get_figwidth() * DPI
    if width_px > MAX_FIGURE_PX + 0.5:
        plt.close(fig)
        raise ValueError(f"a report figure is {width_px:.0f} px wide; at most {MAX_FIGURE_PX} px fit the page")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, read from a PNG's header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", png[16:24])


def img_tag(png: bytes, alt: str) -> str:
    """An <img> with the PNG embedded (the page stays one self-contained file) and its size, so the page
    lays out before the image decodes."""
    width, height = png_size(png)
    return (f'<img alt="{html.escape(alt)}" width="{width}" height="{height}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def figure(png: bytes | None, alt: str, caption: str = "") -> str:
    """An image with an optional caption (HTML); empty when there is no image."""
    if not png:
        return ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure>{img_tag(png, alt)}{cap}</figure>"


def figures_row(*items: tuple[bytes | None, str, str]) -> str:
    """Figures, each given as (png, alt, caption), side by side when each fits half the page, else one under
    another at full size."""
    shown = [item for item in items if item[0]]
    body = "".join(figure(*item) for item in shown)
    if all(png_size(png)[0] <= HALF_FIGURE_PX for png, _, _ in shown):
        return f'<div class="grid">{body}</div>'
    return body


def table(header: list[str], rows: list[list[str]]) -> str:
    """A table in a box that scrolls sideways rather than widen the page. Cells are HTML, not escaped; a cell
    that starts with its own <td> or <th> tag is used as it is."""
    head = "".join(h if h.startswith("<th") else f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<div class="table"><table><tr>{head}</tr>{body}</table></div>'


def document(title: str, body: str) -> str:
    """A whole self-contained page."""
    return (f'<!doctype html><html><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>")
