"""Pieces of a self-contained HTML page: escaped tables, embedded images, inline CSS.

Every image becomes a base64 ``data:`` URI and the only style is the inline
CSS below, so a page made of these pieces needs no network, script or font.
All text goes through :func:`esc`; functions that take HTML say so.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from hamdata import __version__

if TYPE_CHECKING:  # matplotlib where a figure is drawn only (build-shards' summary reads hamdata.pages.collections)
    from matplotlib.figure import Figure

THUMB_WIDTH = 160  # px, every sample thumbnail
JPEG_QUALITY = 85  # thumbnails and re-encoded file images
PNG_AS_IS_BYTES = 300_000  # larger PNG files are re-encoded as JPEG
GALLERY_WIDTH = 1000  # px, widest embedded file image
MAX_ROWS = 50  # rows shown of long tables
MAX_TEXT_CHARS = 200_000  # characters shown of a file's text

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"DejaVu Sans",sans-serif;
margin:0;color:#1f2328;background:#f6f8fa;font-size:14px}
header{background:#24292f;color:#fff;padding:16px 32px}header h1{margin:0 0 4px;font-size:21px}
header p{margin:0;color:#d0d7de;font-size:13px}
nav{padding:8px 32px;background:#fff;border-bottom:1px solid #d0d7de}
nav a{margin-right:18px;color:#0969da;text-decoration:none}
main{padding:4px 32px 40px;max-width:1500px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:14px 20px;margin:16px 0}
h2{margin:0 0 10px;font-size:18px;border-bottom:1px solid #d8dee4;padding-bottom:6px}
h3{font-size:15px;margin:18px 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;border-radius:6px;margin:8px 0}
.plots{display:flex;flex-wrap:wrap;gap:10px}.plots img{width:560px;max-width:100%;height:auto;border:1px solid #eaeef2}
.wide img{width:auto;max-width:100%;height:auto}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #d0d7de;border-radius:6px;padding:6px;background:#fafbfc;font-size:12px;max-width:520px}
.row{display:flex;gap:4px;align-items:flex-start}
figure{margin:0;text-align:center}figcaption{font-size:11px;color:#57606a}.card figcaption{max-width:160px}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px;max-height:420px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12px}
.ok{color:#1a7f37}.bad{color:#cf222e}.muted{color:#57606a}
"""


@dataclass
class Section:
    """One titled block of the page; ``parts`` are HTML strings."""

    anchor: str
    title: str
    parts: list[str] = field(default_factory=list)

    def add(self, *parts: str) -> Section:
        self.parts.extend(parts)
        return self


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole document: header, a navigation bar to every section, the sections."""
    nav = "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{"".join(s.parts)}</section>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)} &middot; written by hamdata {esc(__version__)}</p></header>"
            f"<nav>{nav}</nav><main>{body}</main></body></html>\n")


def note(text: str) -> str:
    """A highlighted paragraph: something the reader must not miss."""
    return f'<p class="note">{esc(text)}</p>'


def muted(text: str) -> str:
    return f'<p class="muted">{esc(text)}</p>'


def cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return f"<td>{esc(value)}</td>"
    if isinstance(value, (int, np.integer)):
        return f'<td class="n">{int(value)}</td>'
    if isinstance(value, (float, np.floating)):
        return '<td class="n"></td>' if np.isnan(value) else f'<td class="n">{float(value):.4g}</td>'
    return f"<td>{esc(value)}</td>"


def table(header: list, rows: list[list], limit: int | None = None) -> str:
    """Rows of plain values (numbers right-aligned); past ``limit`` rows, a count of the rest."""
    shown = rows if limit is None else rows[:limit]
    head = "".join(f"<th>{esc(name)}</th>" for name in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in shown)
    more = muted(f"{len(rows) - len(shown)} more rows not shown") if len(shown) < len(rows) else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def frame(df: pd.DataFrame) -> str:
    """A DataFrame, its index as the first column."""
    header = [df.index.name or ""] + [str(c) for c in df.columns]
    return table(header, [[index, *row] for index, row in zip(df.index, df.itertuples(index=False))])


def facts(pairs: list[tuple[str, object]]) -> str:
    """A two-column table of names and values; empty values are left out."""
    def text(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(text(v))}</td></tr>" for k, v in pairs if v is not None and v != "")
    return f"<table>{rows}</table>"


def details(summary: str, text: str) -> str:
    """Text folded away under a one-line summary (long text cut at MAX_TEXT_CHARS)."""
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS] + f"\n... ({len(text) - MAX_TEXT_CHARS} more characters in the file)"
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>"


def img(uri: str, alt: str, size: tuple[int, int] | None = None) -> str:
    """An <img> of a data URI; never lazy, so that every image is there once the page has loaded."""
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    return f'<img src="{uri}" alt="{esc(alt)}"{dims}>'


def figure(image_html: str, caption: str) -> str:
    return f"<figure>{image_html}<figcaption>{esc(caption)}</figcaption></figure>"


def placeholder(text: str, caption: str, width: int = THUMB_WIDTH) -> str:
    """A captioned box of ``width`` px in place of an image that cannot be shown, saying why."""
    box = f'<div class="note" style="width:{int(width)}px;min-height:{int(width) * 3 // 4}px;font-size:11px">{esc(text)}</div>'
    return figure(box, caption)


# ------------------------------------------------------------------ images


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail(rgb: np.ndarray, width: int = THUMB_WIDTH) -> tuple[str, tuple[int, int]]:
    """JPEG data URI of an RGB uint8 array scaled to ``width`` (aspect kept), and its (w, h)."""
    height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
    buffer = io.BytesIO()
    Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return data_uri("image/jpeg", buffer.getvalue()), (width, height)


def figure_uri(fig: Figure) -> str:
    """PNG data URI of a matplotlib Figure (hamdata.plots)."""
    from hamdata.plots import png_bytes

    return data_uri("image/png", png_bytes(fig))


def file_image(path: Path) -> tuple[str, tuple[int, int]] | None:
    """An image file as a data URI and its size (large or non-PNG files as JPEG); None when unreadable."""
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            if opened.format == "PNG" and len(data) <= PNG_AS_IS_BYTES:
                return data_uri("image/png", data), opened.size
            rgb = opened.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    if rgb.width > GALLERY_WIDTH:
        rgb = rgb.resize((GALLERY_WIDTH, round(rgb.height * GALLERY_WIDTH / rgb.width)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return data_uri("image/jpeg", buffer.getvalue()), rgb.size


def embed_file(path: Path, caption: str) -> str:
    """A captioned image file, or a note that it cannot be read."""
    image = file_image(path)
    if image is None:
        return note(f"{path}: not a readable image")
    return figure(img(image[0], caption), caption)
