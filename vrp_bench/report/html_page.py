"""Static HTML pages that load nothing from the network: the skeleton the run report (``report.html_report``) and
the leaderboard's site (``leaderboard.site``) share.

Every text from a report goes through ``escape``. A page's Content-Security-Policy allows only images from the
page's own folder, inline CSS, and at most one inline script, by its sha256, so even an
injected inline script or event handler would not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Sequence
from typing import Any


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def prose(text: str) -> str:
    """Escaped text whose `code` spans become <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def content_security_policy(script: str | None) -> str:
    """The policy of a page with ``script`` as its only script (module docstring)."""
    allowed = "'none'"
    if script is not None:
        allowed = f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
    return f"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src {allowed}"


def page(title: str, body: Sequence[str], style: str, script: str | None = None) -> str:
    """A complete HTML document: ``body`` (HTML, already escaped) under an escaped ``title``, inline ``style``."""
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(content_security_policy(script))}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>", f"<style>{style}</style>", "</head>", "<body>", *body,
        *([f"<script>{script}</script>"] if script is not None else []), "</body>", "</html>", ""])


def table(rows: Sequence[Sequence[str]], headings: Sequence[str]) -> list[str]:
    """A plain table; cells are already escaped, headings are escaped here."""
    return ["<table>", "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in headings) + "</tr></thead>",
            "<tbody>", *("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows),
            "</tbody>", "</table>"]
