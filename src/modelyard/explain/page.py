"""The page `modelyard explain` writes: the method, its settings and warnings, then every input's view."""

from __future__ import annotations

import html
from pathlib import Path


def settings_html(explanation) -> str:
    """The method, its settings and its warnings, as the paragraphs above the inputs."""
    rows = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in explanation.settings.items())
    notes = "".join(f'<p class="note"><b>Warning:</b> {html.escape(n)}</p>' for n in explanation.notes)
    return (f"<p>Method: <b>{html.escape(explanation.method)}</b>. Positive attributions push the model toward the "
            f"target label, negative ones away from it.</p><ul>{rows}</ul>{notes}")


def write_page(explanation, path: Path) -> Path:
    from modelyard.report.page import document

    title = f"{explanation.method} explanations of {len(explanation)} input{'s' if len(explanation) != 1 else ''}"
    body = f"<h1>{html.escape(title)}</h1>{settings_html(explanation)}{explanation.fragment()}"
    path.write_text(document(title, body), encoding="utf-8")
    return path
