"""Render a report document (headings, text, tables, figures) as Markdown, self-contained HTML, LaTeX and CSV.

The document is a flat list of blocks built once by :mod:`overspec.report.build`; every output format is a pure
function of it, so the formats cannot disagree. LaTeX tables use booktabs rules (``\\toprule``, ``\\midrule``,
``\\bottomrule``); HTML embeds figures as base64 PNG data URIs, so the page is one file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Bullets", "Figure", "Heading", "Paragraph", "Table", "latex_escape", "to_csv", "to_html", "to_latex",
           "to_markdown"]


@dataclass(frozen=True)
class Heading:
    """A section title (level 1 = document title)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """Plain text."""

    text: str


@dataclass(frozen=True)
class Bullets:
    """A bulleted list."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A table: display strings in ``rows``; ``data`` (unrounded values, columns ``data_header`` or ``header``) feeds the CSV."""

    name: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    data: list[list] | None = None
    notes: list[str] = field(default_factory=list)
    data_header: list[str] | None = None


@dataclass(frozen=True)
class Figure:
    """A PNG figure; ``file`` is its path relative to the report folder."""

    name: str
    caption: str
    png: bytes
    file: str


Block = Heading | Paragraph | Bullets | Table | Figure


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    """Markdown document; figures are linked by their relative file path."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            out += [block.text, ""]
        elif isinstance(block, Bullets):
            out += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            out += [f"**{block.caption}**", "", "| " + " | ".join(_md_cell(h) for h in block.header) + " |",
                    "|" + "---|" * len(block.header)]
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out += [""] + [f"*{note}*" for note in block.notes] + ([""] if block.notes else [])
        elif isinstance(block, Figure):
            out += [f"![{block.caption}]({block.file})", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;background:#fff}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}th{background:#eef}
td:first-child,th:first-child{text-align:left}caption{font-weight:bold;text-align:left;padding:4px 0}
.note{font-size:12px;color:#555}img{max-width:100%;border:1px solid #ddd}"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    """A self-contained HTML page (inline CSS, figures as base64 PNG data URIs)."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            body.append(f"<h{level}>{html.escape(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                           for row in block.rows)
            notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in block.notes)
            body.append(f"<table><caption>{html.escape(block.caption)}</caption><thead><tr>{head}</tr></thead>"
                        f"<tbody>{rows}</tbody></table>{notes}")
        elif isinstance(block, Figure):
            data = base64.b64encode(block.png).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "↑": r"$\uparrow$", "↓": r"$\downarrow$", "–": "--", "−": "$-$", "×": r"$\times$",
                  "÷": r"$\div$", "Δ": r"$\Delta$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (and map the report's arrows/dashes to LaTeX)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment: first column left-aligned, the rest right-aligned."""
    spec = "l" + "r" * (len(table.header) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(table.caption)}}}",
             rf"\label{{tab:{table.name}}}", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par\smallskip{{\footnotesize {latex_escape(note)}}}" for note in table.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """CSV with a header row; unrounded ``data`` (under ``data_header`` if set) when given, else the display strings."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.data_header if table.data is not None and table.data_header else table.header)
    for row in table.data if table.data is not None else table.rows:
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()
