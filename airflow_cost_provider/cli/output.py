"""The one output layer of every `airflow-cost` command: table, plain, csv, json and yaml.

A report is handed over as columns, rows and a total; this module formats money (fixed point, one
precision down a column, never an exponent), escapes control characters so an identity cannot
drive the terminal, and fits tables in 100 columns unless --wide."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

FORMATS = ("table", "plain", "csv", "json", "yaml")
TABLE_WIDTH = 100
MIN_SHORTENED = 12  # a shortened cell keeps at least this many characters
MAX_DECIMALS = 9  # the ledger is exact to the nano-unit
ELLIPSIS = "…"


@dataclass
class Document:
    """What a command prints: labelled metadata, a table with a total, and notes after it."""

    meta: dict[str, Any]  # "label: value" lines above a table
    head: dict[str, Any]  # the same, as the first keys of a JSON/YAML document
    columns: list[str]
    rows: list[list[Any]]
    total: list[list[Any]] = field(default_factory=list)  # one row per currency
    money: set[str] = field(default_factory=set)  # Decimal columns
    numeric: set[str] = field(default_factory=set)  # right-aligned columns
    whole: set[str] = field(default_factory=set)  # text columns a table never cuts (short by design)
    notes: list[str] = field(default_factory=list)  # shown under a table (why unpriced, what is hidden)
    extra: dict[str, Any] = field(default_factory=dict)  # more JSON/YAML keys (e.g. unpriced causes)
    empty: str = "(nothing in this period)"


def decimals_for(values: Sequence[Decimal | None]) -> int:
    """The precision a money column needs to show every value exactly: 2 to 9 decimals."""
    needed = 2
    for value in values:
        if value is None:
            continue
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and exponent < 0:
            needed = max(needed, -exponent)
    return min(needed, MAX_DECIMALS)


def money_text(value: Decimal | None, decimals: int, grouping: bool = False) -> str | None:
    if value is None:
        return None
    return f"{value:,.{decimals}f}" if grouping else f"{value:.{decimals}f}"


def escape(text: str) -> str:
    """Control and format characters (newlines, escapes, bidi overrides) shown as escapes."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or char == " ":
            out.append(char)
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}")
    return "".join(out)


def shorten(text: str, width: int) -> str:
    """Cut out the middle: both ends of an id are what tells ids apart."""
    if len(text) <= width:
        return text
    head = width // 2
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def _money_columns(doc: Document) -> dict[int, int]:
    """Column index -> decimals, over the rows and the total together."""
    result = {}
    for index, name in enumerate(doc.columns):
        if name in doc.money:
            result[index] = decimals_for([row[index] for row in [*doc.rows, *doc.total]])
    return result


def _cells(doc: Document, rows: list[list[Any]], grouping: bool) -> list[list[str]]:
    decimals = _money_columns(doc)
    out = []
    for row in rows:
        cells = []
        for index, value in enumerate(row):
            if index in decimals:
                cells.append(money_text(value, decimals[index], grouping) or "-")
            else:
                cells.append("" if value is None else escape(str(value)))
        out.append(cells)
    return out


def _fit(table: list[list[str]], cuttable: list[bool], limit: int) -> list[int]:
    """Column widths that fit `limit`: the widest cuttable (text) columns are cut to one common width,
    the lowest that is needed (never below MIN_SHORTENED), so short ids stay whole."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    gaps = 2 * (len(widths) - 1)
    text = [i for i in range(len(widths)) if cuttable[i]]
    for level in range(max([widths[i] for i in text], default=0), MIN_SHORTENED - 1, -1):
        cut = [min(w, level) if i in text else w for i, w in enumerate(widths)]
        if sum(cut) + gaps <= limit:
            return cut
    return [min(w, MIN_SHORTENED) if i in text else w for i, w in enumerate(widths)]


def _aligned(table: list[list[str]], numeric: list[bool], widths: list[int]) -> list[str]:
    lines = []
    for row in table:
        parts = []
        for i, cell in enumerate(row):
            cell = shorten(cell, widths[i])
            parts.append(cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
    return lines


def render_table(doc: Document, wide: bool = False, plain: bool = False) -> str:
    header = [doc.columns]
    body = _cells(doc, doc.rows, grouping=not plain)
    total = _cells(doc, doc.total, grouping=not plain)
    table = header + body + total
    numeric = [name in doc.numeric or name in doc.money for name in doc.columns]
    cuttable = [not right and name not in doc.whole for name, right in zip(doc.columns, numeric, strict=True)]
    widths = _fit(table, cuttable, 10**9 if wide or plain else TABLE_WIDTH)
    out: list[str] = []
    if not plain:
        out += [f"{key}: {escape(str(value))}" for key, value in doc.meta.items()]
        out.append("")
    aligned = _aligned(table, numeric, widths)
    out.append(aligned[0])
    if not plain:
        out.append("  ".join("-" * w for w in widths))
    if not doc.rows:
        out.append(doc.empty)
    else:
        out += aligned[1 : 1 + len(body)]
        if total:
            if not plain:
                out.append("  ".join("-" * w for w in widths))
            out += aligned[1 + len(body) :]
    if doc.notes and not plain:
        out.append("")
        out += doc.notes if wide else [part for note in doc.notes for part in _wrapped(note)]
    return "\n".join(out)


def _wrapped(note: str) -> list[str]:
    """A note line folded at words to the table's width, its continuation indented under it; a word
    longer than that (a path, a command) stays whole so it can be copied."""
    if len(note) <= TABLE_WIDTH:
        return [note]
    indent = " " * (len(note) - len(note.lstrip(" ")))
    return textwrap.wrap(
        note,
        TABLE_WIDTH,
        initial_indent="",
        subsequent_indent=indent + "  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def render_csv(doc: Document) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(doc.columns)
    decimals = _money_columns(doc)
    for row in [*doc.rows, *doc.total]:
        writer.writerow(
            [
                (money_text(value, decimals[i]) or "") if i in decimals else ("" if value is None else value)
                for i, value in enumerate(row)
            ]
        )
    return buffer.getvalue().rstrip("\n")


def as_records(doc: Document, rows: list[list[Any]]) -> list[dict[str, Any]]:
    """Rows as JSON-ready objects: money as exact decimal strings at the column's precision."""
    decimals = _money_columns(doc)
    records = []
    for row in rows:
        record = {}
        for index, (name, value) in enumerate(zip(doc.columns, row, strict=True)):
            if index in decimals:
                record[name] = money_text(value, decimals[index])
            elif hasattr(value, "isoformat"):
                record[name] = value.isoformat()
            else:
                record[name] = value
        records.append(record)
    return records


def as_document(doc: Document) -> dict[str, Any]:
    return {
        **doc.head,
        "rows": as_records(doc, doc.rows),
        "total": as_records(doc, doc.total),
        **doc.extra,
    }


def render(doc: Document, fmt: str, wide: bool = False) -> str:
    if fmt == "json":
        return json.dumps(as_document(doc), indent=2)  # ASCII: escapes reach no terminal raw
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(as_document(doc), sort_keys=False, allow_unicode=False).rstrip("\n")
    if fmt == "csv":
        return render_csv(doc)
    return render_table(doc, wide=wide, plain=fmt == "plain")
