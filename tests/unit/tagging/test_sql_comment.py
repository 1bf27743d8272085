"""sqlcommenter comments: format, placement, and that no identity can escape the comment."""

from __future__ import annotations

import random
import re
import sqlite3
from urllib.parse import unquote

import pytest

from airflow_cost_provider.tagging import add_sql_comment, format_comment

TAGS = {"airflow_task_id": "load", "airflow_dag_id": "daily sales"}
COMMENT = "/*airflow_dag_id='daily%20sales',airflow_task_id='load'*/"
HOSTILE = [
    "*/ DROP TABLE x; --",
    "it's",
    '"quoted"',
    "line\nbreak",
    "naïve ünïcode ✓",
    "/* nested",
    "\\'",
    "%2A%2F",
]


def parse_comment(sql: str) -> dict[str, str]:
    """Read the tags back the way a sqlcommenter consumer does."""
    body = re.findall(r"/\*(.*?)\*/", sql, re.DOTALL)[-1]  # ours is the last comment
    pairs = re.findall(r"([^=,]+)='((?:[^'\\]|\\.)*)'", body)
    return {unquote(k): unquote(v.replace("\\'", "'")) for k, v in pairs}


def test_keys_sorted_and_values_url_encoded():
    assert format_comment(TAGS) == COMMENT
    assert add_sql_comment("SELECT 1", TAGS) == f"SELECT 1 {COMMENT}"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1;", f"SELECT 1 {COMMENT};"),
        ("SELECT 1 ;  \n", f"SELECT 1 {COMMENT};"),
        ("SELECT 1 -- note", f"SELECT 1 -- note\n{COMMENT}"),
        ("SELECT 1 -- note;", f"SELECT 1 -- note;\n{COMMENT}"),
        ("SELECT '--' AS dashes;", f"SELECT '--' AS dashes {COMMENT};"),
        ("SELECT $$ -- $$;", f"SELECT $$ -- $$ {COMMENT};"),
        ("SELECT 1 /* done */", f"SELECT 1 /* done */ {COMMENT}"),
        ("SELECT 1 # mysql comment", f"SELECT 1 # mysql comment\n{COMMENT}"),
        ("SELECT 1 -- a\nFROM t", f"SELECT 1 -- a\nFROM t {COMMENT}"),
    ],
)
def test_comment_placement(sql, expected):
    assert add_sql_comment(sql, TAGS) == expected


def test_empty_tags_or_sql_leave_the_statement_unchanged():
    assert add_sql_comment("SELECT 1;", {}) == "SELECT 1;"
    assert add_sql_comment("   ", TAGS) == "   "


@pytest.mark.parametrize("value", HOSTILE)
def test_no_value_can_close_the_comment(value):
    tags = {"airflow_dag_id": value, f"key {value}": value}
    tagged = add_sql_comment("SELECT 1 AS one;", tags)
    comment = tagged[len("SELECT 1 AS one ") : -1]
    assert comment.startswith("/*") and comment.endswith("*/")
    assert comment.count("*/") == 1 and comment.count("/*") == 1
    assert "\n" not in comment and "'" not in comment.replace("='", "").replace("',", "").replace("'*/", "")
    assert parse_comment(tagged) == tags


def test_random_identities_keep_statements_valid_sql():
    """Any identity, on any statement shape: the database still runs the statement and its result is
    unchanged (SQLite parses the comment as the server would)."""
    rng = random.Random(20261122)
    alphabet = "ab'\"*/-#;\n\\$%é✓ "
    statements = ["SELECT 1", "SELECT 1;", "SELECT 1 -- c", "SELECT '--;' ;", "SELECT 1 /* c */ ;"]
    db = sqlite3.connect(":memory:")
    for _ in range(300):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        sql = rng.choice(statements)
        tagged = add_sql_comment(sql, {"airflow_dag_id": value, "airflow_task_id": value[::-1]})
        assert db.execute(tagged).fetchall() == db.execute(sql).fetchall(), tagged
        assert parse_comment(tagged) == {"airflow_dag_id": value, "airflow_task_id": value[::-1]}
