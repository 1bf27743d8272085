// The Costs page: reads the JSON API (the documents `airflow-cost report -o json` prints) for the
// period and filters in the query string, and draws them with plotly.js. Amounts are shown rounded;
// the exact decimal the API gave is in each amount's data-amount (and its tooltip).

const base = document.body.dataset.base;
const query = new URLSearchParams(location.search);
const DAY_MS = 86400000;
const TOP = 10;
const LAST_RUNS = 30;
const PLOT_CONFIG = { displaylogo: false, responsive: true };

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function addDays(day, days) {
  return isoDay(new Date(Date.parse(`${day}T00:00:00Z`) + days * DAY_MS));
}

function listParam(name) {
  return query.getAll(name).flatMap((value) => value.split(",")).map((v) => v.trim()).filter(Boolean);
}

// The period: whole UTC days, until excluded; by default the last 30 days, today included.
const until = query.get("until") || addDays(isoDay(new Date()), 1);
const since = query.get("since") || addDays(until, -30);
const periodDays = Math.round((Date.parse(until) - Date.parse(since)) / DAY_MS);
const previous = { since: addDays(since, -periodDays), until: since };
const filters = { dag_id: listParam("dag_id"), task_id: listParam("task_id"), source: listParam("source") };
const stack = query.get("stack") === "team" ? "team" : "source";

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const one of [].concat(value)) {
      if (one !== undefined && one !== null && one !== "") search.append(name, one);
    }
  }
  const response = await fetch(`${base}${path}?${search}`, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new ApiError(response.status, `${path}: ${detail || response.statusText}`);
  }
  return body;
}

function report(by, extra = {}, period = { since, until }) {
  return api("/api/report", { by, ...period, ...filters, ...extra });
}

function money(amount) {
  const value = Number(amount);
  const digits = Math.abs(value) >= 1 || value === 0 ? 2 : Math.min(9, 2 - Math.floor(Math.log10(Math.abs(value))));
  return value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits });
}

function amountCell(amount, currency) {
  const cell = document.createElement("td");
  cell.className = "num amount";
  if (amount === null || amount === undefined) {
    cell.textContent = "unpriced";
    return cell;
  }
  cell.dataset.amount = amount;
  cell.dataset.currency = currency;
  cell.title = `${amount} ${currency}`;
  cell.textContent = `${money(amount)} ${currency}`;
  return cell;
}

function textCell(text) {
  const cell = document.createElement("td");
  cell.textContent = text ?? "";
  return cell;
}

function withQuery(changes) {
  const next = new URLSearchParams(location.search);
  for (const [name, value] of Object.entries(changes)) next.set(name, value);
  return `${base}/?${next}`;
}

// The currency most of the money is in: charts draw it, the totals name the others.
function mainCurrency(doc) {
  const priced = doc.total.filter((row) => row.currency);
  priced.sort((a, b) => Number(b.amount) - Number(a.amount));
  return priced.length ? priced[0].currency : null;
}

function inCurrency(rows, currency) {
  return rows.filter((row) => row.currency === currency && row.amount !== null);
}

function note(id, text) {
  document.getElementById(id).textContent = text;
}

function showTotal(current, before) {
  const currency = mainCurrency(current);
  const totalBox = document.getElementById("total");
  totalBox.replaceChildren();
  const priced = current.total.filter((row) => row.currency);
  if (!priced.length) totalBox.textContent = "no cost in this period";
  for (const row of priced) {
    const span = document.createElement("div");
    span.className = "amount";
    span.dataset.amount = row.amount;
    span.dataset.currency = row.currency;
    span.title = `${row.amount} ${row.currency}, ${row.lines} lines`;
    span.textContent = `${money(row.amount)} ${row.currency}`;
    totalBox.append(span);
  }
  const unpriced = current.total.filter((row) => !row.currency).reduce((n, row) => n + row.unpriced, 0);
  note("unpriced", unpriced ? `${unpriced} line(s) without a price are not counted.` : "");
  const change = document.getElementById("change");
  if (!currency) return;
  const now = Number(priced.find((row) => row.currency === currency).amount);
  const earlier = before.total.find((row) => row.currency === currency);
  const was = earlier ? Number(earlier.amount) : 0;
  const previousText = `the previous ${periodDays} days (${previous.since} to ${previous.until})`;
  if (!was) {
    change.textContent = `no ${currency} cost in ${previousText}`;
    return;
  }
  const percent = ((now - was) / was) * 100;
  change.className = `change ${percent > 0 ? "up" : "down"}`;
  change.dataset.percent = percent.toFixed(1);
  change.textContent = `${percent > 0 ? "+" : ""}${percent.toFixed(1)}% against ${previousText}: ${money(was)} ${currency}`;
}

function showDaily(doc, currency) {
  const rows = inCurrency(doc.rows, currency);
  const days = daysOfPeriod();
  const byKey = new Map();
  for (const row of rows) {
    if (!byKey.has(row[stack])) byKey.set(row[stack], new Map());
    byKey.get(row[stack]).set(row.day, Number(row.amount));
  }
  const traces = [...byKey].map(([name, perDay]) => ({
    type: "bar",
    name,
    x: days,
    y: days.map((day) => perDay.get(day) || 0),
    hovertemplate: `%{x}: %{y} ${currency}<extra>${name}</extra>`,
  }));
  Plotly.newPlot(
    "daily-chart",
    traces,
    {
      barmode: "stack",
      margin: { t: 10, r: 10, b: 40, l: 60 },
      xaxis: { type: "date", tickformat: "%b %d", range: [`${addDays(since, -1)} 12:00`, `${addDays(until, -1)} 12:00`] },
      yaxis: { title: { text: currency || "" } },
    },
    PLOT_CONFIG,
  );
}

function sparkline(cell, series) {
  const box = document.createElement("div");
  box.className = "spark";
  cell.append(box);
  Plotly.newPlot(
    box,
    [{ type: "scatter", mode: "lines", x: series.map((p) => p[0]), y: series.map((p) => p[1]), line: { width: 1.5 } }],
    {
      width: box.clientWidth || 120,
      height: box.clientHeight || 28,
      margin: { t: 2, r: 2, b: 2, l: 2 },
      xaxis: { visible: false },
      yaxis: { visible: false },
      showlegend: false,
    },
    { staticPlot: true },
  );
}

function daysOfPeriod() {
  const days = [];
  for (let day = since; day < until; day = addDays(day, 1)) days.push(day);
  return days;
}

// the day-by-day cost of the rows of `perDay` that `matches` picks, over every day of the period
function dailySeries(perDay, currency, matches) {
  const amounts = new Map();
  for (const r of inCurrency(perDay.rows, currency).filter(matches)) {
    amounts.set(r.day, (amounts.get(r.day) || 0) + Number(r.amount));
  }
  return daysOfPeriod().map((day) => [day, amounts.get(day) || 0]);
}

function showTopDags(doc, perDay, currency) {
  const body = document.querySelector("#top-dags tbody");
  body.replaceChildren();
  for (const row of doc.rows) {
    const tr = document.createElement("tr");
    tr.dataset.dag = row.dag_id;
    const name = document.createElement("td");
    const link = document.createElement("a");
    link.href = withQuery({ dag: row.dag_id });
    link.textContent = row.dag_id;
    name.append(link);
    const trend = document.createElement("td");
    tr.append(name, amountCell(row.amount, row.currency), trend);
    body.append(tr);
    if (perDay && row.currency === currency) {
      sparkline(trend, dailySeries(perDay, currency, (r) => r.dag_id === row.dag_id));
    }
  }
  if (!doc.rows.length) body.append(Object.assign(document.createElement("tr"), { textContent: "no task costs" }));
}

function showTopTasks(doc, perDay, currency) {
  const body = document.querySelector("#top-tasks tbody");
  body.replaceChildren();
  for (const row of doc.rows) {
    const tr = document.createElement("tr");
    tr.dataset.dag = row.dag_id;
    tr.dataset.task = row.task_id;
    const trend = document.createElement("td");
    tr.append(textCell(row.dag_id), textCell(row.task_id), amountCell(row.amount, row.currency), trend);
    body.append(tr);
    if (perDay && row.currency === currency) {
      sparkline(trend, dailySeries(perDay, currency, (r) => r.dag_id === row.dag_id && r.task_id === row.task_id));
    }
  }
}

function showBreakdown(id, doc, key, currency) {
  const rows = inCurrency(doc.rows, currency).slice().reverse();
  Plotly.newPlot(
    id,
    [{ type: "bar", orientation: "h", y: rows.map((row) => row[key]), x: rows.map((row) => Number(row.amount)) }],
    { margin: { t: 10, r: 10, b: 30, l: 110 }, xaxis: { title: { text: currency || "" } } },
    PLOT_CONFIG,
  );
}

function runAnomalies(budgets, dagId) {
  const found = new Map();
  for (const detail of budgets?.details || []) {
    for (const anomaly of detail.anomalies || []) {
      if (anomaly.kind === "run" && anomaly.subject.startsWith(`${dagId}/`)) {
        found.set(anomaly.subject.slice(dagId.length + 1), anomaly.description);
      }
    }
  }
  return found;
}

function showRuns(dagId, doc, currency, budgets) {
  document.getElementById("dag-name").textContent = dagId;
  const runs = new Map();
  for (const row of inCurrency(doc.rows, currency)) {
    const run = runs.get(row.run_id) || { run_id: row.run_id, day: row.day, amount: 0 };
    run.amount += Number(row.amount);
    if (row.day < run.day) run.day = row.day;
    runs.set(row.run_id, run);
  }
  const last = [...runs.values()]
    .sort((a, b) => (a.day === b.day ? a.run_id.localeCompare(b.run_id) : a.day.localeCompare(b.day)))
    .slice(-LAST_RUNS);
  const anomalies = runAnomalies(budgets, dagId);
  const marked = last.filter((run) => anomalies.has(run.run_id));
  const traces = [
    {
      type: "bar",
      name: "cost per run",
      x: last.map((run) => run.run_id),
      y: last.map((run) => run.amount),
      marker: { color: last.map((run) => (anomalies.has(run.run_id) ? "#c53030" : "#3182ce")) },
      hovertemplate: `%{x}: %{y} ${currency}<extra></extra>`,
    },
  ];
  if (marked.length) {
    traces.push({
      type: "scatter",
      mode: "markers",
      name: "anomaly",
      x: marked.map((run) => run.run_id),
      y: marked.map((run) => run.amount),
      text: marked.map((run) => anomalies.get(run.run_id)),
      marker: { symbol: "triangle-down", size: 12, color: "#c53030" },
    });
  }
  Plotly.newPlot(
    "runs-chart",
    traces,
    {
      margin: { t: 10, r: 10, b: 20, l: 60 },
      xaxis: { type: "category", tickangle: -30, automargin: true, showticklabels: last.length <= 15 },
      yaxis: { title: { text: currency || "" } },
      showlegend: marked.length > 0,
    },
    PLOT_CONFIG,
  );
  const chart = document.getElementById("runs-chart");
  chart.removeAllListeners?.("plotly_click");
  chart.on("plotly_click", (event) => {
    const runId = event.points?.[0]?.x;
    if (runId) location.href = `${base}/dag-run?${new URLSearchParams({ dag_id: dagId, run_id: runId })}`;
  });
  note(
    "runs-note",
    `${last.length} last run(s) in the period, ${currency}` +
      (marked.length ? `; ${marked.length} anomaly(ies) marked in red, as the budgets found them.` : ".") +
      " Click a run for its cost per task and its lines.",
  );
}

function showStorage(doc) {
  const body = document.querySelector("#storage tbody");
  body.replaceChildren();
  for (const row of doc.rows) {
    const tr = document.createElement("tr");
    tr.append(textCell(row.provider), textCell(row.resource_id), amountCell(row.amount, row.currency));
    body.append(tr);
  }
  note("storage-note", doc.rows.length ? "" : "no storage costs imported for this period");
}

function showStorageDatasets(doc) {
  const body = document.querySelector("#storage-datasets tbody");
  body.replaceChildren();
  for (const row of doc.rows) {
    const tr = document.createElement("tr");
    const name = `${row.dataset_namespace.replace(/\/$/, "")}/${row.dataset_name.replace(/^\//, "")}`;
    tr.dataset.dataset = name;
    tr.append(textCell(name), amountCell(row.amount, row.currency));
    body.append(tr);
  }
  note(
    "storage-datasets-note",
    doc.rows.length
      ? "The share of each bucket's cost allocated to the dataset by bytes (storage_allocation)."
      : "no storage costs allocated to datasets for this period (storage_allocation)",
  );
}

function showCoverage(doc) {
  const body = document.querySelector("#coverage tbody");
  body.replaceChildren();
  for (const row of doc.rows) {
    const tr = document.createElement("tr");
    const share = row.coverage === null ? "" : `${(Number(row.coverage) * 100).toFixed(1)}%`;
    tr.append(
      textCell(row.provider),
      amountCell(row.billed, row.currency),
      amountCell(row.attributed, row.currency),
      amountCell(row.unattributed, row.currency),
      Object.assign(textCell(share), { className: "num" }),
      amountCell(row.untouched, row.currency),
    );
    body.append(tr);
  }
  const idle = doc.idle.map((pool) => `${pool.pool}: ${money(pool.idle)} ${pool.currency} of ${money(pool.billed)}`);
  note(
    "coverage-note",
    doc.rows.length
      ? `Billing days ${doc.since} to ${doc.until} (excluded), as airflow-cost reconcile split them.` +
          (idle.length ? ` Idle or unattributed most: ${idle.join("; ")}.` : "")
      : "nothing reconciled for these days: import the bill (airflow-cost import-billing) and run airflow-cost reconcile",
  );
}

function showBudgets(doc) {
  const body = document.querySelector("#budgets tbody");
  body.replaceChildren();
  for (const row of doc.rows) {
    const tr = document.createElement("tr");
    tr.dataset.budget = row.budget;
    const crossed = textCell((row.crossed || []).join(", "));
    if ((row.crossed || []).length) crossed.className = "crossed";
    tr.append(
      textCell(row.budget),
      textCell(`${row.period} from ${row.period_start.slice(0, 10)}`),
      amountCell(row.spent, row.currency),
      amountCell(row.forecast, row.currency),
      amountCell(row.amount, row.currency),
      Object.assign(textCell(`${row.percent}%`), { className: "num" }),
      crossed,
    );
    body.append(tr);
  }
  note("budgets-note", doc.rows.length ? "" : "no budgets defined");
}

function fillForm() {
  const form = document.getElementById("filters");
  form.since.value = since;
  form.until.value = until;
  form.dag_id.value = filters.dag_id.join(",");
  form.task_id.value = filters.task_id.join(",");
  form.source.value = filters.source.join(",");
  form.stack.value = stack;
  form.dag.value = query.get("dag") || "";
  document.getElementById("stack-name").textContent = stack;
  note("period", `${since} to ${until} UTC (until excluded), ${periodDays} days`);
}

async function load() {
  fillForm();
  const optional = (promise) => promise.catch((error) => error);
  // budgets evaluate every budget's forecast and anomalies: the rest of the page does not wait for them
  const budgets = optional(api("/api/budgets", {}));
  const [overview, storage, datasets, coverage] = await Promise.all([
    api("/api/overview", { since, until, ...filters, stack, top: TOP }),
    optional(api("/api/report/storage", { by: "resource", since, until, top: TOP })),
    optional(api("/api/report/storage", { by: "dataset", since, until, top: TOP })),
    optional(api("/api/coverage", { by: "provider", since, until })),
  ]);
  const reports = overview.reports;
  const current = reports.source;
  const currency = mainCurrency(current);
  showTotal(current, overview.previous);
  showDaily(reports[`day,${stack}`], currency);
  showTopDags(reports.dag, reports["dag,day"], currency);
  showTopTasks(reports.task, reports["task,day"], currency);
  showBreakdown("team-chart", reports.team, "team", currency);
  showBreakdown("owner-chart", reports.owner, "owner", currency);
  showBreakdown("source-chart", current, "source", currency);
  if (storage instanceof Error) note("storage-note", storage.message);
  else showStorage(storage);
  if (datasets instanceof Error) note("storage-datasets-note", datasets.message);
  else showStorageDatasets(datasets);
  if (coverage instanceof Error) note("coverage-note", coverage.message);
  else showCoverage(coverage);
  const dagId = query.get("dag") || reports.dag.rows[0]?.dag_id;
  let runs = null;
  if (dagId) {
    runs = await report("run,day", { dag_id: dagId });
    showRuns(dagId, runs, currency, null);
  } else {
    document.getElementById("dag-view").hidden = true;
  }
  budgets.then((found) => {
    const section = document.getElementById("budgets-section");
    if (found instanceof Error) {
      note("budgets-note", found.message);
      section.dataset.state = "error";
      return;
    }
    showBudgets(found);
    if (runs) showRuns(dagId, runs, currency, found);
    section.dataset.state = "ready";
  });
}

load()
  .then(() => {
    document.body.dataset.state = "ready";
  })
  .catch((error) => {
    const box = document.getElementById("error");
    box.textContent = error.message;
    box.hidden = false;
    document.body.dataset.state = "error";
  });
