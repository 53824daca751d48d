"""The report as one self-contained HTML page: figures inlined as base64 PNG, one stylesheet for screen and print.

Numbers read from run files carry where they came from in `data-` attributes
(`data-run`, `data-file`, `data-field`, `data-value`: the exact value), so that
anyone, tests included, can check the page against the runs.
"""

from __future__ import annotations

import base64
import html
import re

from workbench.report.content import Cell, Note, Picture, Preformatted, Section, Table

STYLESHEET = """
:root { --ink: #1d232a; --muted: #5b6570; --line: #d8dde3; --paper: #ffffff; --ground: #f4f6f8; --accent: #2f6db3; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--ground); color: var(--ink);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 20px 48px; }
header h1 { font-size: 1.55rem; margin: 0 0 4px; }
header p { margin: 0; color: var(--muted); }
nav { margin: 16px 0 0; font-size: 0.92rem; }
nav a { color: var(--accent); margin-right: 14px; }
section { background: var(--paper); border: 1px solid var(--line); border-radius: 8px; padding: 18px 24px 8px; margin: 20px 0; }
h2 { font-size: 1.25rem; margin: 0 0 2px; }
h2 + .subtitle { color: var(--muted); margin: 0 0 12px; }
h3 { font-size: 1.02rem; margin: 0 0 6px; }
figure { margin: 18px 0 22px; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption, .caption { color: var(--muted); font-size: 0.9rem; margin-top: 4px; }
.table { margin: 14px 0 20px; overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.92rem; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 12px 4px 0; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; white-space: nowrap; }
th { font-weight: 600; color: var(--muted); }
td.number { text-align: right; }
.table[data-table="overview"] td.number { text-align: left; }
.table caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 6px; }
.note { background: #fff8e6; border-left: 3px solid #e0a100; padding: 8px 12px; margin: 14px 0; }
.note code.command { display: block; margin-top: 6px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.88em; background: #eef1f4; padding: 1px 4px; border-radius: 3px; }
pre { background: #f3f5f7; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; max-height: 22rem; overflow: auto;
      font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.status-finished { color: #1e7f45; font-weight: 600; }
.status-failed, .status-killed, .status-unreadable { color: #b3261e; font-weight: 600; }
.status-interrupted, .status-running { color: #a15c00; font-weight: 600; }
@page { size: A4; margin: 14mm; }
@media print {
  body { background: none; font-size: 10pt; }
  main { max-width: none; padding: 0; }
  nav { display: none; }
  section { border: none; border-radius: 0; padding: 0; margin: 0 0 10mm; }
  section + section.run { break-before: page; }  /* each run starts a page */
  figure, .table, .note { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  pre { max-height: none; overflow: visible; white-space: pre-wrap; }
  th, td { white-space: normal; }
  a { color: inherit; text-decoration: none; }
}
"""


def _inline(words: str) -> str:
    """Escape `words`; spans in backticks become code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(words))


def _cell(cell: Cell, tag: str = "td") -> str:
    if not cell.numeric:
        status = f' class="status-{html.escape(cell.text)}"' if cell.text in _STATUSES else ""
        return f"<{tag}{status}>{_inline(cell.text)}</{tag}>"
    run, file, field = cell.source
    attributes = f'class="number" data-run="{html.escape(run)}" data-file="{html.escape(file)}" data-field="{html.escape(field)}" data-value="{cell.value!r}"'
    return f"<{tag} {attributes}>{html.escape(cell.text)}</{tag}>"


_STATUSES = ("finished", "failed", "interrupted", "running", "killed", "unreadable")


def _table(table: Table) -> str:
    head = "".join(f"<th>{_inline(label)}</th>" for label in table.header)
    body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in table.rows)
    return f'<div class="table" data-table="{table.key}"><table><caption>{_inline(table.caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _picture(picture: Picture, section: Section) -> str:
    data = base64.b64encode(picture.png).decode("ascii")
    return (
        f'<figure id="{section.key}-{picture.key}" data-figure="{picture.key}"><h3>{html.escape(picture.title)}</h3>'
        f'<img src="data:image/png;base64,{data}" alt="{html.escape(picture.alt)}" width="{picture.width}">'
        f"<figcaption>{_inline(picture.caption)}</figcaption></figure>"
    )


def _note(note: Note) -> str:
    command = f'<code class="command">{html.escape(note.command)}</code>' if note.command else ""
    return f'<div class="note">{_inline(note.text)}{command}</div>'


def _preformatted(block: Preformatted) -> str:
    return f"<h3>{html.escape(block.title)}</h3><pre>{html.escape(block.text)}</pre>"


def _section(section: Section) -> str:
    parts = []
    for item in section.items:
        if isinstance(item, Picture):
            parts.append(_picture(item, section))
        elif isinstance(item, Table):
            parts.append(_table(item))
        elif isinstance(item, Note):
            parts.append(_note(item))
        else:
            parts.append(_preformatted(item))
    subtitle = f'<p class="subtitle">{_inline(section.subtitle)}</p>' if section.subtitle else ""
    kind = "run" if section.key.startswith("run-") else "overview"
    return f'<section id="{section.key}" class="{kind}"><h2>{html.escape(section.title)}</h2>{subtitle}{"".join(parts)}</section>'


def render_page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page; a table of contents when there is more than one section."""
    contents = ""
    if len(sections) > 1:
        links = "".join(f'<a href="#{section.key}">{html.escape(section.title)}</a>' for section in sections)
        contents = f"<nav>{links}</nav>"
    body = "".join(_section(section) for section in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLESHEET}</style></head>"
        f"<body><main><header><h1>{html.escape(title)}</h1><p>{_inline(subtitle)}</p>{contents}</header>{body}</main></body></html>\n"
    )
