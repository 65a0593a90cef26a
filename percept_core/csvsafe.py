"""CSV that a spreadsheet opens as data: no cell can start a formula (OWASP "CSV injection").

Blob names, metadata, tags and reasons come from outside: a blob named `=HYPERLINK("http://...")` or
`@SUM(...)` would run as a formula in Excel or LibreOffice when a reviewer opens the app's CSV download. Every
text cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, as OWASP's
guidance says; numbers stay numbers (a negative number is data, not a formula). The app's downloads, the CLI
and notebooks use this one function.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """A cell's value, with a leading `'` when it is text a spreadsheet would read as a formula (other values,
    numbers and times, are written as they are)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(rows: Iterable[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str]) -> str:
    """CSV of `rows` (dicts by column name, or sequences in column order) under a header of `columns`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([neutralise(c) for c in columns])
    for row in rows:
        values = [row.get(c) for c in columns] if isinstance(row, Mapping) else list(row)
        writer.writerow(["" if v is None else neutralise(v) for v in values])
    return out.getvalue()


def safe_csv_bytes(frame: Any) -> bytes:
    """A pandas DataFrame as UTF-8 CSV (no index), every text cell neutralised."""
    cleaned = frame.map(neutralise)
    cleaned.columns = [neutralise(c) for c in frame.columns]
    return cleaned.to_csv(index=False).encode()


__all__ = ["FORMULA_STARTS", "csv_text", "neutralise", "safe_csv_bytes"]
