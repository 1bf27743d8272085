"""Billed rows x ledger lines -> pools, each line's share, and what stays idle: in DuckDB, set-wise.

1. Billed rows of the window are given a pool, first rule first:
   - `try`: the row carries a try's OpenLineage run id in the tags this project sets; its lines are
     that try's lines of sources billed by the row's provider (any day);
   - `rule`: a `billing_resources` rule claims the row (two rules claiming one row is an error);
   - `run`: the row names a platform run some line measured (a Databricks pipeline update or job
     run, see `matching.billed_run_sql`); its lines are that run's (any day);
   - `resource`: the row's resource (kind and name, see `matching`) is one some ledger line of the
     window ran on;
   - `untouched`: none of these: a resource no Airflow task used, kept apart.
   Snowflake's daily cloud services credit (on the account) is first split over the day's
   warehouses by their cloud services credits.
2. Lines join the pools of their day (tries ended within the window, a few days either side):
   tagged lines their try's pool, lines of a billed run that run's pool, then the first rule naming
   their source and resource, then the resource they ran on. Usage another provider bills (the VMs
   under Databricks clusters) joins only rules' pools.
3. Each pool and day: what its lines used of it (`used_share`), by the first basis that applies:
   `tags` (all of it: the bill names the try), `run` (all of it: the bill names the run),
   `attribution` (as quantity, with the credits Snowflake attributed to each query where imported),
   `quantity` (the lines' usage over the billed quantity, in one dimension), `list_cost` (the
   lines' list-price estimates over the bill's list cost),
   `estimate` (the estimates over the billed cost), `even` (nothing to compare: all of it).
   Mode `keep` attributes billed x used_share and names the rest idle; `spread` attributes it all.
4. The attributed amount is split over the lines by weight (usage in the basis, else estimate) with
   cumulative rounding, so the lines' nano-units add up to it exactly, and attributed + unattributed
   = billed for every pool.

BigQuery jobs on an edition join the pool of their reservation (the bill has slot-hours per
reservation, not per job), once per day they used it, with their slot-ms of that day: from
INFORMATION_SCHEMA (`job_slots`, see `billing.bigquery_reservations`) when given, else from the
job's statistics (`reservation_id`, and slot-ms as the line's usage or its `total_slot_ms`).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from airflow_cost_provider.reconcile import matching
from airflow_cost_provider.reconcile.matching import RESERVATION
from airflow_cost_provider.reconcile.rules import BillingRule, mode_for

# Tries that ended this long before the window or after it can still have used its billed days
# (a job that ran over midnight, a try that ended late).
LINE_MARGIN = dt.timedelta(days=2)
MEMORY_LIMIT = "512MB"


class ReconcileError(ValueError):
    """Data that cannot be reconciled as it is (currencies, rules): the message names what and where."""


@dataclass(frozen=True)
class Window:
    since: dt.date
    until: dt.date  # exclusive

    def __post_init__(self) -> None:
        if self.until <= self.since:
            raise ValueError(f"empty window {self.since} .. {self.until}")


@dataclass
class Reconciliation:
    """The result, still in DuckDB (`con`), with the figures the summary prints."""

    con: object
    window: Window
    spill: str  # DuckDB's temporary directory
    billed_rows: int = 0
    pools: int = 0
    lines: int = 0

    def close(self) -> None:
        self.con.close()
        shutil.rmtree(self.spill, ignore_errors=True)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _glob_sql(column: str, pattern: str) -> str:
    return f"({column} GLOB {_sql_text(pattern)})"


def _json_path(key: str) -> str:
    return '$."' + key.replace('"', '\\"') + '"'


def _rule_claims_sql(rule: BillingRule) -> str:
    conditions = []
    if rule.resource_id is not None:
        conditions.append(_glob_sql("resource_id", rule.resource_id))
    for key, pattern in rule.tags:
        # AWS CUR keys user tags `user_<key>` (CUR 2.0) or `user:<key>` (legacy): the same tag
        values = [
            f"json_extract_string(tags, {_sql_text(_json_path(name))})"
            for name in (key, f"user_{key}", f"user:{key}")
        ]
        conditions.append(_glob_sql(f"COALESCE({', '.join(values)})", pattern))
    return " AND ".join(conditions)


def _rule_uses_sql(rule: BillingRule) -> str:
    condition = f"source = {_sql_text(rule.source)}"
    if rule.resource is not None:
        condition += f" AND {_glob_sql('COALESCE(resource, ' + chr(39) * 2 + ')', rule.resource)}"
    return condition


# rows per fetch: the Python side holds one chunk at a time, and a chunk's rows as Python objects
# take several times their size in DuckDB
_CHUNK = 20_000


def stream_into(con, conn, query, table: str, types: dict[str, object], select: str = "*") -> int:
    """Copy a query's rows into a DuckDB table in chunks (Arrow in between); returns the count. A
    type of None is left to Arrow: dates and times come as each driver gives them, and `select`
    (over the chunk's columns) casts them on the way in, so the table is never copied."""
    import pyarrow as pa

    names = list(types)
    count = 0
    result = conn.execute(query, execution_options={"stream_results": True, "yield_per": _CHUNK})
    first = True
    for rows in result.partitions(_CHUNK):
        columns = list(zip(*rows, strict=True))
        chunk = pa.Table.from_arrays(
            [pa.array(column, type=types[name]) for name, column in zip(names, columns, strict=True)],
            names=names,
        )
        del rows, columns
        con.register("chunk", chunk)
        con.execute(
            f"{'CREATE TEMP TABLE ' + table + ' AS' if first else 'INSERT INTO ' + table} SELECT {select} FROM chunk"
        )
        con.unregister("chunk")
        count += chunk.num_rows
        del chunk
        first = False
    if first:  # no rows: the empty table, typed
        con.register("chunk", pa.schema([(name, types[name] or pa.string()) for name in names]).empty_table())
        con.execute(f"CREATE TEMP TABLE {table} AS SELECT {select} FROM chunk")
        con.unregister("chunk")
    return count


def _load(con, engine: sa.Engine, window: Window) -> int:
    """The window's billed rows and the lines of the tries around it, into DuckDB."""
    import pyarrow as pa

    from airflow_cost_provider.ledger.schema import ATTRIBUTED_CREDITS, billing_costs, lines, task_runs, usage

    text, big = pa.string(), pa.int64()
    billed_query = sa.select(
        billing_costs.c.id,
        # raw: as the driver gives a date (text in SQLite), without a Python conversion per row
        sa.type_coerce(billing_costs.c.day, sa.String).label("day"),
        billing_costs.c.usage_hour,
        billing_costs.c.provider,
        billing_costs.c.billing_account,
        billing_costs.c.service,
        billing_costs.c.resource_id,
        billing_costs.c.sku,
        billing_costs.c.currency,
        billing_costs.c.amount_nanos,
        billing_costs.c.list_nanos,
        billing_costs.c.quantity,
        billing_costs.c.unit,
        sa.cast(billing_costs.c.tags, sa.Text).label("tags"),  # JSON text, for DuckDB's json functions
        billing_costs.c.tagged_run_id,
    ).where(billing_costs.c.day >= window.since, billing_costs.c.day < window.until)
    billed_types = dict.fromkeys((c.name for c in billed_query.selected_columns), text) | {
        "id": big,
        "day": None,
        "usage_hour": big,
        "amount_nanos": big,
        "list_nanos": big,
    }
    start = dt.datetime.combine(window.since, dt.time(), dt.timezone.utc) - LINE_MARGIN
    end = dt.datetime.combine(window.until, dt.time(), dt.timezone.utc) + LINE_MARGIN
    # what the platform measured itself, where an import put it (see `matching`): read only for the
    # sources that have it, so other lines cost no JSON parsing
    attributed = sa.case(
        (lines.c.source == "snowflake", usage.c.attributes[ATTRIBUTED_CREDITS].as_string()), else_=None
    )
    databricks = lines.c.source == "databricks"
    update_id = sa.case((databricks, usage.c.attributes["update_id"].as_string()), else_=None)
    # the end of the usage, else of the try whose times it took (a usage with a start and no end is
    # an instant): what an hourly bill's hours are matched on, read only when the bill has hours
    usage_end = sa.case((usage.c.start_time.is_(None), task_runs.c.end_time), else_=usage.c.end_time)

    def lines_query(hourly: bool) -> sa.Select:
        ended = sa.type_coerce(usage_end if hourly else sa.null(), sa.String)
        return (
            sa.select(
                lines.c.id,
                task_runs.c.ol_run_id,
                lines.c.source,
                # only where matching reads them: a million other lines' ids would cost memory
                sa.case((lines.c.source.in_(list(matching.BILLED_ELSEWHERE)), lines.c.metric), else_=None),
                usage.c.resource,
                # Databricks run ids and BigQuery job ids are matched; other ids would only cost memory
                sa.case((lines.c.source.in_(["databricks", "bigquery"]), usage.c.external_id), else_=None),
                usage.c.quantity,
                usage.c.unit,
                attributed,
                update_id,
                lines.c.amount_nanos,
                lines.c.currency,
                sa.type_coerce(sa.func.coalesce(usage.c.start_time, task_runs.c.start_time), sa.String),
                ended.label("ended"),
                # a BigQuery job's reservation and slot-ms (JSON text, read in DuckDB)
                sa.case((lines.c.source == "bigquery", sa.cast(usage.c.attributes, sa.Text))),
            )
            .select_from(
                task_runs.join(lines, lines.c.task_run_id == task_runs.c.id).join(
                    usage, usage.c.id == lines.c.usage_id
                )
            )
            .where(task_runs.c.end_time >= start, task_runs.c.end_time < end)
        )

    line_types = {
        "line_id": big,
        "ol_run_id": text,
        "source": text,
        "metric": text,
        "resource": text,
        "external_id": text,
        "quantity": text,
        "unit": text,
        "attributed": text,
        "update_id": text,
        "est": big,
        "currency": text,
        "started": None,
        "ended": None,
        "attributes": text,
    }
    # stored as naive UTC by every dialect: DuckDB's TIMESTAMP is the same
    with engine.connect() as conn:
        billed = stream_into(
            con, conn, billed_query, "billed_input", billed_types, "* REPLACE (CAST(day AS DATE) AS day)"
        )
        _spread_cloud_services_adjustment(con)
        stream_into(
            con,
            conn,
            lines_query(_has_hours(con, "billed_input")),
            "lines_input",
            line_types,
            "* REPLACE (CAST(started AS TIMESTAMP) AS started, CAST(ended AS TIMESTAMP) AS ended)",
        )
    return billed


def _has_hours(con, table: str) -> bool:
    return con.execute(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE usage_hour IS NOT NULL)").fetchall()[0][0]


def _spread_cloud_services_adjustment(con) -> None:
    """In billed_input: Snowflake bills cloud services only above 10 % of a day's compute
    and books the rest as one negative credit on the account (no warehouse): split it over the
    warehouses of that day (and their hours, where metered per hour) by their cloud services credits,
    with cumulative rounding, so each warehouse-hour shows what it was billed and the pieces add up to
    the credit exactly. A day whose warehouses used no cloud services keeps the credit on the account."""
    from airflow_cost_provider.billing.snowflake_metering import CLOUD_SERVICES, PROVIDER

    adjustment = f"provider = '{PROVIDER}' AND COALESCE(resource_id, '') = '' AND sku = '{CLOUD_SERVICES}'"
    con.execute(f"""
CREATE TEMP TABLE adjustment_pieces AS
WITH adjustments AS (SELECT * FROM billed_input WHERE {adjustment}),
services AS (
  SELECT day, provider, billing_account, currency, resource_id, usage_hour AS hour,
    sum(CAST(quantity AS DOUBLE)) AS credits
  FROM billed_input
  WHERE provider = '{PROVIDER}' AND COALESCE(resource_id, '') <> '' AND sku = '{CLOUD_SERVICES}'
  GROUP BY ALL HAVING sum(CAST(quantity AS DOUBLE)) > 0
),
shares AS (
  SELECT a.*, s.resource_id AS warehouse, s.hour AS piece_hour,
    sum(s.credits) OVER (PARTITION BY a.id ORDER BY s.resource_id, s.hour ROWS UNBOUNDED PRECEDING)
      / sum(s.credits) OVER (PARTITION BY a.id) AS upto,
    s.credits / sum(s.credits) OVER (PARTITION BY a.id) AS share,
    row_number() OVER (PARTITION BY a.id ORDER BY s.resource_id, s.hour) = count(*) OVER (PARTITION BY a.id)
      AS last
  FROM adjustments AS a JOIN services AS s USING (day, provider, billing_account, currency)
),
ends AS (
  SELECT *,
    CASE WHEN last THEN amount_nanos
         ELSE CAST(round(CAST(amount_nanos AS DOUBLE) * upto) AS BIGINT) END AS amount_upto,
    CASE WHEN last THEN list_nanos
         ELSE CAST(round(CAST(list_nanos AS DOUBLE) * upto) AS BIGINT) END AS list_upto
  FROM shares
)
SELECT * EXCLUDE (warehouse, piece_hour, upto, share, last, amount_upto, list_upto) REPLACE (
  warehouse AS resource_id, piece_hour AS usage_hour,
  amount_upto - COALESCE(lag(amount_upto) OVER (PARTITION BY id ORDER BY warehouse, piece_hour), 0)
    AS amount_nanos,
  list_upto - COALESCE(lag(list_upto) OVER (PARTITION BY id ORDER BY warehouse, piece_hour), 0) AS list_nanos,
  CAST(CAST(quantity AS DOUBLE) * share AS VARCHAR) AS quantity)
FROM ends
""")
    # the rows split are replaced by their pieces; the other rows stay as they are (no copy of the bill)
    con.execute("DELETE FROM billed_input WHERE id IN (SELECT id FROM adjustment_pieces)")
    con.execute("INSERT INTO billed_input BY NAME SELECT * FROM adjustment_pieces")
    con.execute("DROP TABLE adjustment_pieces")


def _unit_table(con) -> None:
    """Each unit of the bill and the ledger with its dimension and size in base units."""
    names = {"credit"} | {  # attributed credits
        row[0]
        for row in con.execute(
            "SELECT DISTINCT unit FROM billed_input WHERE unit IS NOT NULL "
            "UNION SELECT DISTINCT unit FROM lines_input WHERE unit IS NOT NULL"
        ).fetchall()
    }
    rows = [(name, *known) for name in sorted(names) if (known := matching.unit_factor(name))]
    con.execute("CREATE TEMP TABLE units (unit VARCHAR, dimension VARCHAR, factor DOUBLE)")
    if rows:
        con.executemany("INSERT INTO units VALUES (?, ?, ?)", [(n, d, float(f)) for n, d, f in rows])


def _mode_table(con, modes: dict[str, str]) -> None:
    con.execute("CREATE TEMP TABLE modes (source VARCHAR, mode VARCHAR)")
    con.executemany("INSERT INTO modes VALUES (?, ?)", list(modes.items()))


def _job_slots_table(con, job_slots: Sequence | None) -> None:
    """The slot-ms of BigQuery jobs per reservation and day (`bigquery_reservations.JobSlots`)."""
    con.execute(
        "CREATE TEMP TABLE job_slots (job_id VARCHAR, reservation_id VARCHAR, day DATE, slot_ms BIGINT)"
    )
    if job_slots:
        con.executemany(
            "INSERT INTO job_slots VALUES (?, ?, ?, ?)",
            [(j.job_id, j.reservation_id, j.day, int(j.slot_ms)) for j in job_slots],
        )


def run(
    engine: sa.Engine,
    window: Window,
    rules: Sequence[BillingRule],
    modes: dict[str, str],
    job_slots: Sequence | None = None,
) -> Reconciliation:
    """Match and split in DuckDB; raises ReconcileError on data that cannot be reconciled. Nothing is
    written: `store.write` does that, in one transaction. `job_slots`: BigQuery jobs' slot-ms per
    reservation and day, from INFORMATION_SCHEMA (`billing.bigquery_reservations.read_job_slots`)."""
    import duckdb

    # bounded memory: past the limit DuckDB spills to its temporary directory
    spill = tempfile.mkdtemp(prefix="cost-reconcile-")
    con = duckdb.connect(
        config={"memory_limit": MEMORY_LIMIT, "preserve_insertion_order": False, "temp_directory": spill}
    )
    con.execute("SET TimeZone = 'UTC'")
    result = Reconciliation(con=con, window=window, spill=spill)
    try:
        result.billed_rows = _load(con, engine, window)
        _job_slots_table(con, job_slots)
        _match_and_split(con, window, rules, modes)
    except BaseException:
        result.close()
        raise
    result.pools = con.execute("SELECT count(*) FROM pool_results").fetchone()[0]
    result.lines = con.execute("SELECT count(DISTINCT line_id) FROM line_results").fetchone()[0]
    return result


def _match_and_split(con, window: Window, rules: Sequence[BillingRule], modes: dict[str, str]) -> None:
    """The steps of the module's docstring, on the tables `_load` filled."""
    _unit_table(con)
    _mode_table(con, modes)
    default_mode = mode_for(modes, None)

    # ---- billed rows: kind, name, the rule that claims them
    # `0001:name`: sorted, the claims keep the rules' order
    claims = [
        f"CASE WHEN {_rule_claims_sql(rule)} THEN {_sql_text(f'{index:04d}:{rule.name}')} END"
        for index, rule in enumerate(rules)
    ]
    # list_distinct drops the NULLs of the rules that do not claim the row (names are unique)
    claimed = f"list_sort(list_distinct([{', '.join(claims)}]))" if claims else "[]::VARCHAR[]"
    con.execute(f"""
CREATE TEMP TABLE billed AS
WITH kinds AS (
  SELECT b.*, {matching.billed_kind_sql("b.provider", "b.resource_id")} AS kind FROM billed_input AS b
)
SELECT b.*,
  CASE WHEN b.kind = '{RESERVATION}' THEN {matching.billed_reservation_sql("b.resource_id")}
       ELSE {matching.name_sql("b.resource_id")} END AS name,
  {matching.billed_run_sql("b.provider", "b.tags")} AS run,
  list_transform(CASE WHEN b.tagged_run_id IS NULL THEN {claimed} ELSE []::VARCHAR[] END,
    lambda claim: claim[6:]) AS rules,
  -- a reservation's seconds or hours are slot-seconds or slot-hours
  CASE WHEN b.kind = '{RESERVATION}' AND u.dimension = 'time' THEN 'slot_time' ELSE u.dimension END
    AS dimension,
  CAST(b.quantity AS DOUBLE) * u.factor AS base_quantity
FROM kinds AS b LEFT JOIN units AS u ON u.unit = b.unit
""")
    twice = con.execute(
        "SELECT rules[1], rules[2], resource_id, day FROM billed WHERE len(rules) > 1 ORDER BY day, resource_id LIMIT 1"
    ).fetchone()
    if twice:
        first, second, resource_id, day = twice
        raise ReconcileError(
            f"billing_resources rules {first!r} and {second!r} both claim the billed resource "
            f"{resource_id or '(no resource id)'} on {day}: narrow one of them so each billed row has one pool"
        )
    if con.execute("SELECT count(*) FROM billed").fetchone()[0]:
        used_rules = {
            row[0]
            for row in con.execute("SELECT DISTINCT rules[1] FROM billed WHERE len(rules) = 1").fetchall()
        }
        unused = [rule.name for rule in rules if rule.name not in used_rules]
        if unused:
            names = ", ".join(repr(name) for name in unused)
            raise ReconcileError(
                f"billing_resources rule{'s' if len(unused) != 1 else ''} {names} "
                f"match{'' if len(unused) != 1 else 'es'} no billed row of {window.since} to "
                f"{window.until - dt.timedelta(days=1)}: check its resource_id and tags against the imported "
                "bill; nothing was written"
            )

    # every intermediate table is dropped as soon as the step after it has read it: the tables share
    # DuckDB's bounded memory with the joins, and one fewer copy of the lines is one spill fewer
    _drop(con, "billed_input")

    # ---- lines: day, kind, name, the pool they join
    elsewhere = matching.billed_elsewhere_sql("l.source", "l.metric")
    rule_of_line = " ".join(f"WHEN {_rule_uses_sql(rule)} THEN {_sql_text(rule.name)}" for rule in rules)
    # BigQuery jobs on a reservation: one row per line and day it used the reservation, with its
    # slot-ms that day (INFORMATION_SCHEMA first, else the job's own statistics)
    slot_ms = matching.unit_factor("slot-ms")[1]
    con.execute(f"""
CREATE TEMP TABLE reservation_use AS
WITH timeline AS (
  SELECT l.line_id, j.day, {matching.job_reservation_sql("j.reservation_id")} AS name,
    CAST(j.slot_ms AS DOUBLE) * {slot_ms} AS base_quantity
  FROM lines_input AS l JOIN job_slots AS j ON l.source = 'bigquery' AND j.job_id = l.external_id
),
statistics AS (
  SELECT line_id, CAST(started AS DATE) AS day,
    {matching.job_reservation_sql("json_extract_string(attributes, '$.reservation_id')")} AS name,
    CASE WHEN unit = 'slot-ms' THEN CAST(quantity AS DOUBLE)
         ELSE TRY_CAST(json_extract_string(attributes, '$.total_slot_ms') AS DOUBLE) END * {slot_ms}
      AS base_quantity
  FROM lines_input
  WHERE attributes IS NOT NULL AND line_id NOT IN (SELECT line_id FROM timeline)
)
SELECT *, sum(base_quantity) OVER (PARTITION BY line_id) AS line_quantity
FROM (SELECT * FROM timeline UNION ALL SELECT * FROM statistics)
WHERE name IS NOT NULL
""")
    con.execute(f"""
CREATE TEMP TABLE used AS
SELECT l.line_id, l.ol_run_id, l.source, l.resource, l.est, l.currency,
  CAST(l.started AS DATE) AS day,
  -- usage another provider bills matches no pool of its source's bill: only a rule's
  CASE WHEN NOT {elsewhere} THEN {matching.line_kind_sql("l.source")} END AS kind,
  CASE WHEN NOT {elsewhere} THEN {matching.line_provider_sql("l.source")} END AS provider,
  CASE WHEN l.resource IS NOT NULL THEN {matching.name_sql("l.resource")} END AS name,
  {f"CASE {rule_of_line} END" if rules else "NULL::VARCHAR"} AS rule,
  CASE WHEN NOT {elsewhere} THEN {matching.line_run_sql("l.source", "l.external_id", "l.update_id")} END
    AS run,
  -- the credits the platform attributed to the query, where imported, else the line's own usage
  l.attributed IS NOT NULL AS attributed,
  u.dimension, CAST(COALESCE(l.attributed, l.quantity) AS DOUBLE) * u.factor AS base_quantity,
  l.started, l.ended
FROM lines_input AS l
LEFT JOIN units AS u ON u.unit = CASE WHEN l.attributed IS NOT NULL THEN 'credit' ELSE l.unit END
WHERE l.line_id NOT IN (SELECT line_id FROM reservation_use)
UNION ALL
SELECT l.line_id, l.ol_run_id, l.source, l.resource,
  -- a job over several days: its estimate shared as its slot time
  CASE WHEN r.line_quantity > 0 THEN CAST(round(l.est * (r.base_quantity / r.line_quantity)) AS BIGINT)
       ELSE l.est END AS est,
  l.currency, r.day, '{RESERVATION}' AS kind, 'gcp' AS provider, r.name,
  {f"CASE {rule_of_line} END" if rules else "NULL::VARCHAR"} AS rule,
  NULL::VARCHAR AS run, FALSE AS attributed,
  'slot_time' AS dimension, r.base_quantity, l.started, l.ended
FROM reservation_use AS r JOIN lines_input AS l USING (line_id)
""")
    _drop(con, "lines_input", "reservation_use", "job_slots")
    # ---- pools of billed rows
    con.execute(f"""
CREATE TEMP TABLE touched AS SELECT DISTINCT kind, name FROM used
WHERE kind IS NOT NULL AND name IS NOT NULL AND CAST(day AS DATE) >= DATE '{window.since}'
  AND day < DATE '{window.until}'
""")
    # the platform runs (a Databricks job run or pipeline update) some line of the window measured
    con.execute("CREATE TEMP TABLE runs AS SELECT DISTINCT provider, run FROM used WHERE run IS NOT NULL")
    # a pool is per hour where all its rows of the day are hourly; a pool of a try or a run is per
    # day (the bill names who used it: the hour adds nothing), and so is a reservation's (its jobs'
    # slot time is known per day)
    whole_days = "" if _has_hours(con, "billed") else "WHEN true THEN NULL"
    con.execute(f"""
CREATE TEMP TABLE pooled AS
WITH kinded AS (
  SELECT b.* EXCLUDE (run),
    CASE WHEN b.tagged_run_id IS NOT NULL THEN 'try'
         WHEN len(b.rules) = 1 THEN 'rule'
         WHEN r.run IS NOT NULL THEN 'run'
         WHEN t.kind IS NOT NULL THEN 'resource'
         ELSE 'untouched' END AS pool_kind,
    CASE WHEN b.tagged_run_id IS NOT NULL THEN b.tagged_run_id
         WHEN len(b.rules) = 1 THEN 'rule:' || b.rules[1]
         WHEN r.run IS NOT NULL THEN r.run
         ELSE b.resource_id END AS pool
  FROM billed AS b LEFT JOIN touched AS t ON t.kind = b.kind AND t.name = b.name
  LEFT JOIN runs AS r ON r.provider = b.provider AND r.run = b.run
)
SELECT * REPLACE (
  CASE WHEN pool_kind IN ('try', 'run') OR kind IS NOT DISTINCT FROM '{RESERVATION}' THEN NULL {whole_days}
       WHEN bool_or(usage_hour IS NULL)
         OVER (PARTITION BY day, provider, billing_account, currency, pool_kind, pool) THEN NULL
       ELSE usage_hour END AS usage_hour)
FROM kinded
""")
    _drop(con, "billed", "touched", "runs")
    rule_sources = " ".join(f"WHEN {_sql_text(rule.pool)} THEN {_sql_text(rule.source)}" for rule in rules)
    con.execute(f"""
CREATE TEMP TABLE pools AS
SELECT row_number() OVER (ORDER BY day, usage_hour, provider, billing_account, currency, pool_kind, pool)
    AS pool_id,
  day, usage_hour, provider, billing_account, currency, pool_kind, pool,
  min(service) AS service, any_value(kind) AS kind, any_value(name) AS name,
  {f"CASE WHEN pool_kind = 'rule' THEN CASE pool {rule_sources} END END" if rules else "NULL::VARCHAR"} AS rule_source,
  sum(amount_nanos)::HUGEINT AS billed_nanos,
  CASE WHEN count(list_nanos) = count(*) THEN sum(list_nanos)::HUGEINT END AS list_nanos,
  CASE WHEN count(DISTINCT dimension) = 1 THEN any_value(dimension) END AS dimension,
  sum(base_quantity) FILTER (WHERE base_quantity IS NOT NULL) AS capacity,
  list(id ORDER BY id) AS billing_cost_ids
FROM pooled GROUP BY day, usage_hour, provider, billing_account, currency, pool_kind, pool
""")
    _drop(con, "pooled")
    _hour_pieces(con, window)
    # ---- lines into pools: tags first, then rules, then resources; a day's pool takes the lines
    # that started that day, an hour's pool the lines' pieces of that hour
    con.execute(f"""
CREATE TEMP TABLE members AS
WITH by_tags AS (
  SELECT p.pool_id, u.* FROM pools AS p
  JOIN used AS u ON p.pool_kind = 'try' AND u.ol_run_id = p.pool AND u.provider = p.provider
  -- a job on a reservation is billed with the reservation, not under its try's labels
  WHERE u.kind IS DISTINCT FROM '{RESERVATION}'
),
tagged AS (SELECT DISTINCT line_id FROM by_tags),
by_run AS (
  SELECT p.pool_id, u.* FROM pools AS p
  JOIN used AS u ON p.pool_kind = 'run' AND u.run = p.pool AND u.provider = p.provider
  WHERE u.line_id NOT IN (SELECT line_id FROM tagged)
),
named AS (SELECT line_id FROM tagged UNION SELECT line_id FROM by_run),
by_rule AS (
  SELECT p.pool_id, u.* FROM pools AS p
  JOIN used AS u ON p.pool_kind = 'rule' AND p.usage_hour IS NULL AND p.pool = 'rule:' || u.rule
    AND u.day = p.day
  WHERE u.line_id NOT IN (SELECT line_id FROM named)
),
by_resource AS (
  SELECT p.pool_id, u.* FROM pools AS p
  JOIN used AS u ON p.pool_kind = 'resource' AND p.usage_hour IS NULL AND u.kind = p.kind AND u.name = p.name
    AND u.day = p.day
  WHERE u.rule IS NULL AND u.line_id NOT IN (SELECT line_id FROM named)
),
by_rule_hour AS (
  SELECT p.pool_id, u.* EXCLUDE (hour) FROM pools AS p
  JOIN used_hours AS u ON p.pool_kind = 'rule' AND p.pool = 'rule:' || u.rule AND u.day = p.day
    AND u.hour = p.usage_hour
  WHERE u.line_id NOT IN (SELECT line_id FROM named)
),
by_resource_hour AS (
  SELECT p.pool_id, u.* EXCLUDE (hour) FROM pools AS p
  JOIN used_hours AS u ON p.pool_kind = 'resource' AND u.kind = p.kind AND u.name = p.name AND u.day = p.day
    AND u.hour = p.usage_hour
  WHERE u.rule IS NULL AND u.line_id NOT IN (SELECT line_id FROM named)
)
SELECT * FROM by_tags UNION ALL SELECT * FROM by_run UNION ALL SELECT * FROM by_rule
UNION ALL SELECT * FROM by_resource UNION ALL SELECT * FROM by_rule_hour
UNION ALL SELECT * FROM by_resource_hour
""")
    _drop(con, "used", "used_hours")
    wrong = con.execute("""
SELECT p.pool, p.day, p.currency, m.currency, m.source, count(*) FROM members AS m JOIN pools AS p USING (pool_id)
WHERE m.currency IS NOT NULL AND m.currency <> p.currency
GROUP BY ALL ORDER BY p.day, p.pool LIMIT 1
""").fetchone()
    if wrong:
        pool, day, billed_currency, line_currency, source, count = wrong
        raise ReconcileError(
            f"the bill of {pool or '(no resource id)'} on {day} is in {billed_currency}, but {count:,} {source} "
            f"line{'s' if count != 1 else ''} that used it {'are' if count != 1 else 'is'} estimated in "
            f"{line_currency}: reconciling would mix currencies. Price {source} in {billed_currency} "
            f"(the price book or worker_rate_currency) or import the bill in {line_currency}"
        )

    # ---- what each pool's lines used of it, and the split
    con.execute(f"""
CREATE TEMP TABLE shares AS
WITH stats AS (
  SELECT p.pool_id, count(m.line_id) AS lines, min(m.source) AS line_source,
    count(m.est) AS priced, sum(m.est)::HUGEINT AS estimated_nanos,
    bool_and(m.dimension IS NOT DISTINCT FROM p.dimension AND m.base_quantity IS NOT NULL) AS same_unit,
    sum(m.base_quantity) AS used_quantity, count(*) FILTER (WHERE m.attributed) AS attributed
  FROM pools AS p LEFT JOIN members AS m USING (pool_id) GROUP BY p.pool_id
),
decided AS (
  SELECT p.*, s.lines, s.priced, s.estimated_nanos, s.used_quantity,
    COALESCE(md.mode, '{default_mode}') AS mode,
    COALESCE(p.rule_source, s.line_source) AS source,
    CASE WHEN s.lines = 0 THEN 'none'
         WHEN p.pool_kind = 'try' THEN 'tags'
         WHEN p.pool_kind = 'run' THEN 'run'
         WHEN s.same_unit AND p.dimension IS NOT NULL AND p.capacity > 0
           THEN CASE WHEN s.attributed > 0 THEN 'attribution' ELSE 'quantity' END
         WHEN s.priced = s.lines AND p.list_nanos > 0 THEN 'list_cost'
         WHEN s.priced = s.lines AND p.billed_nanos > 0 THEN 'estimate'
         ELSE 'even' END AS basis
  FROM pools AS p JOIN stats AS s USING (pool_id)
  LEFT JOIN modes AS md ON md.source = COALESCE(p.rule_source, s.line_source)
)
SELECT *,
  CASE WHEN basis = 'none' THEN 0.0
       WHEN mode = 'spread' OR basis IN ('tags', 'run', 'even') THEN 1.0
       WHEN basis IN ('quantity', 'attribution') THEN least(1.0, used_quantity / capacity)
       WHEN basis = 'list_cost' THEN least(1.0, CAST(estimated_nanos AS DOUBLE) / CAST(list_nanos AS DOUBLE))
       ELSE least(1.0, CAST(estimated_nanos AS DOUBLE) / CAST(billed_nanos AS DOUBLE)) END AS used_share
FROM decided
""")
    con.execute("""
CREATE TEMP TABLE pool_results AS
SELECT *,
  CASE WHEN used_share >= 1.0 THEN billed_nanos
       ELSE CAST(round(CAST(billed_nanos AS DOUBLE) * used_share) AS HUGEINT) END AS attributed_nanos
FROM shares
""")
    _drop(con, "shares")
    con.execute("""
CREATE TEMP TABLE line_results AS
WITH weighted AS (
  SELECT m.pool_id, m.line_id, r.attributed_nanos,
    CASE WHEN r.basis IN ('quantity', 'attribution') THEN m.base_quantity ELSE CAST(m.est AS DOUBLE) END
      AS raw_weight
  FROM members AS m JOIN pool_results AS r USING (pool_id)
),
normal AS (
  SELECT *, CASE WHEN sum(COALESCE(raw_weight, 0)) OVER (PARTITION BY pool_id) > 0
    THEN greatest(COALESCE(raw_weight, 0), 0) ELSE 1.0 END AS weight
  FROM weighted
),
cumulative AS (
  SELECT *, sum(weight) OVER (PARTITION BY pool_id ORDER BY line_id ROWS UNBOUNDED PRECEDING) AS upto,
    sum(weight) OVER (PARTITION BY pool_id) AS total
  FROM normal
),
ends AS (
  SELECT pool_id, line_id,
    CASE WHEN upto >= total THEN attributed_nanos
         ELSE CAST(round(CAST(attributed_nanos AS DOUBLE) * (upto / total)) AS HUGEINT) END AS upto_nanos
  FROM cumulative
)
SELECT pool_id, line_id,
  upto_nanos - COALESCE(lag(upto_nanos) OVER (PARTITION BY pool_id ORDER BY line_id), 0) AS amount_nanos
FROM ends
""")
    _drop(con, "members")


def _hour_pieces(con, window: Window) -> None:
    """`used_hours`: the lines that can join a pool billed per hour, one piece per UTC hour of the
    window their usage overlapped (its start to its end; a usage without times takes its try's, one
    with a start and no end is an instant in the hour it started), each with the share of the line's
    usage and estimate the time it spent in that hour is of all its time. A piece's estimate is the
    rounded estimate up to the hour's end less that up to its start, so the pieces add up to it."""
    first = f"TIMESTAMP '{window.since} 00:00:00'"
    last = f"TIMESTAMP '{window.until} 00:00:00' - INTERVAL 1 MICROSECOND"
    con.execute(f"""
CREATE TEMP TABLE used_hours AS
WITH hourly_resources AS (
  SELECT DISTINCT kind, name FROM pools WHERE pool_kind = 'resource' AND usage_hour IS NOT NULL
),
hourly_rules AS (SELECT DISTINCT pool FROM pools WHERE pool_kind = 'rule' AND usage_hour IS NOT NULL),
candidates AS (
  SELECT u.* FROM used AS u SEMI JOIN hourly_resources AS h ON h.kind = u.kind AND h.name = u.name
  WHERE u.rule IS NULL
  UNION ALL
  SELECT u.* FROM used AS u SEMI JOIN hourly_rules AS h ON h.pool = 'rule:' || u.rule
),
spans AS (
  SELECT *, greatest(COALESCE(ended, started), started) AS finish FROM candidates
),
hours AS (
  -- only the window's hours: no pool is outside it
  SELECT *, unnest(generate_series(greatest(date_trunc('hour', started), {first}),
      least(CASE WHEN finish > started THEN finish - INTERVAL 1 MICROSECOND ELSE started END, {last}),
      INTERVAL 1 HOUR)) AS hour_start
  FROM spans
),
bounds AS (
  SELECT *,
    CASE WHEN finish > started
      THEN CAST(epoch_us(greatest(started, hour_start)) - epoch_us(started) AS DOUBLE)
        / CAST(epoch_us(finish) - epoch_us(started) AS DOUBLE)
      ELSE 0.0 END AS since_share,
    CASE WHEN finish > started
      THEN CAST(epoch_us(least(finish, hour_start + INTERVAL 1 HOUR)) - epoch_us(started) AS DOUBLE)
        / CAST(epoch_us(finish) - epoch_us(started) AS DOUBLE)
      ELSE 1.0 END AS until_share
  FROM hours
)
SELECT * EXCLUDE (finish, hour_start, since_share, until_share) REPLACE (
  CAST(round(est * until_share) AS BIGINT) - CAST(round(est * since_share) AS BIGINT) AS est,
  base_quantity * (until_share - since_share) AS base_quantity,
  CAST(hour_start AS DATE) AS day),
  CAST(hour(hour_start) AS TINYINT) AS hour
FROM bounds
""")


def _drop(con, *tables: str) -> None:
    for table in tables:
        con.execute(f"DROP TABLE {table}")


def to_decimal(nanos: int | None) -> Decimal | None:
    return None if nanos is None else Decimal(int(nanos)).scaleb(-9)
