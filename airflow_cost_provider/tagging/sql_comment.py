"""sqlcommenter comments: the task's identity appended to a SQL statement, where query logs keep it.

Format (https://google.github.io/sqlcommenter/spec/): `/*key='value',...*/`, keys sorted, keys and
values URL-encoded, then `'` escaped. URL-encoding turns `*`, `/`, quotes and newlines into `%XX`, so no
value can close the comment or the statement.
"""

from __future__ import annotations

import collections
import functools
import re
from collections.abc import Mapping
from urllib.parse import quote

# Tokens that can hide a `--` or `;`: strings, quoted identifiers, comments, Postgres dollar quotes.
SQL_TOKENS = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'?"""  # single-quoted string (MySQL backslash escapes, SQL '' doubling)
    r"""|"(?:[^"]|"")*"?"""  # quoted identifier
    r"|`[^`]*`?"  # MySQL / Databricks identifier
    r"|/\*.*?(?:\*/|\Z)"  # block comment
    r"|\$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|\Z)"  # dollar-quoted body
    r"|(?P<line>(?:--|\#)[^\n]*)",  # line comment
    re.DOTALL,
)


def _encode(text: str) -> str:
    return quote(text, safe="").replace("'", "\\'")


def format_comment(tags: Mapping[str, str]) -> str:
    """`/*k1='v1',k2='v2'*/` for non-empty tags, else ''."""
    if not tags:
        return ""
    # a task tags every statement with the same identity: encode it once
    return _format_pairs(tuple(sorted((str(key), str(value)) for key, value in tags.items())))


@functools.lru_cache(maxsize=64)
def _format_pairs(pairs: tuple[tuple[str, str], ...]) -> str:
    return "/*" + ",".join(f"{_encode(key)}='{_encode(value)}'" for key, value in pairs) + "*/"


def _ends_in_line_comment(body: str) -> bool:
    """Whether the statement's last token is a `--` (or MySQL `#`) comment running to its end."""
    last = collections.deque(SQL_TOKENS.finditer(body), maxlen=1)
    last = last[0] if last else None
    return last is not None and last.group("line") is not None and last.end() == len(body)


def add_sql_comment(sql: str, tags: Mapping[str, str]) -> str:
    """Append the tags as a sqlcommenter comment: before a trailing `;`, or on a new line when the
    statement ends in a `--` comment. Empty tags leave the SQL unchanged."""
    return append_comment(sql, format_comment(tags))


def append_comment(sql: str, comment: str) -> str:
    """add_sql_comment with the comment already formatted (a task formats its identity once)."""
    if not comment or not sql.strip():
        return sql
    body = sql.rstrip()
    last_line = body[body.rfind("\n") + 1 :]
    if ("--" in last_line or "#" in last_line) and _ends_in_line_comment(body):
        return f"{body}\n{comment}"
    if body.endswith(";"):
        statement = body.rstrip("; \t\r\n")
        return f"{statement} {comment}{body[len(statement) :].lstrip()}"
    return f"{body} {comment}"
