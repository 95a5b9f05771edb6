"""The pieces a report is made of, rendered both as Markdown and as HTML.

Sections are built once as blocks, so the two formats always show the same figures.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

MB = 1_000_000
MISSING = "—"


@dataclass(frozen=True)
class Paragraph:
    text: str

    def markdown(self) -> str:
        return self.text

    def html(self, out_dir: Path) -> str:
        return f"<p>{html.escape(self.text)}</p>"


@dataclass(frozen=True)
class Code:
    text: str

    def markdown(self) -> str:
        fence = "````" if "```" in self.text else "```"
        return f"{fence}\n{self.text}\n{fence}"

    def html(self, out_dir: Path) -> str:
        return f"<pre><code>{html.escape(self.text)}</code></pre>"


@dataclass(frozen=True)
class Table:
    """Column 0 is a label; the other columns are figures and align right (unless not)."""

    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    figures: bool = True

    def markdown(self) -> str:
        def line(cells: list[str]) -> str:
            return "| " + " | ".join(_md_cell(cell) for cell in cells) + " |"

        align = "---:" if self.figures else "---"
        rule = "|" + "|".join(["---", *[align] * (len(self.headers) - 1)]) + "|"
        lines = [line(self.headers), rule, *(line(row) for row in self.rows)]
        return (f"*{_md_cell(self.caption)}*\n\n" if self.caption else "") + "\n".join(lines)

    def html(self, out_dir: Path) -> str:
        numeric = " class=num" if self.figures else ""

        def cells(tag: str, values: list[str]) -> str:
            return "".join(
                f"<{tag}{numeric if i else ''}>{html.escape(v)}</{tag}>"
                for i, v in enumerate(values)
            )

        caption = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        body = "".join(f"<tr>{cells('td', row)}</tr>" for row in self.rows)
        return (
            f"<table>{caption}<thead><tr>{cells('th', self.headers)}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )


@dataclass(frozen=True)
class Image:
    """A PNG written beside the report: linked from Markdown, embedded in the HTML."""

    filename: str
    caption: str

    def markdown(self) -> str:
        return f"![{_md_cell(self.caption)}]({self.filename})"

    def html(self, out_dir: Path) -> str:
        data = base64.b64encode((out_dir / self.filename).read_bytes()).decode("ascii")
        alt = html.escape(self.caption)
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{alt}</figcaption></figure>"
        )


Block = Paragraph | Code | Table | Image


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def megabytes(size: float | None) -> str:
    """MB = 10^6 bytes; sub-megabyte sizes keep three significant digits, not two decimals."""
    if size is None:
        return MISSING
    return f"{size / MB:,.2f}" if size >= MB else f"{size / MB:.3g}"


def percent(value: float | None) -> str:
    # Two decimals: targets such as "at least 93 % smaller" must not be met by rounding.
    return MISSING if value is None else f"{value:.2f} %"


def rate(value: float | None) -> str:
    """MB/s and similar: whole numbers when large, three significant digits when small."""
    if value is None:
        return MISSING
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def seconds(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.3g} ms"


def scientific(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2e}"


def plain(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}g}"
