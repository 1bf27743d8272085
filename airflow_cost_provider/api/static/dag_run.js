// The "Cost" tab of a DAG run, from /api/dag-run: the run's total and its cost per task (the
// document `airflow-cost report --by task --dag DAG --run RUN` prints), then every recorded try's
// lines. Airflow fills the tab's URL with the run's ids.

import { cell, getJson, lineCells, settle, showTotals } from "./lines.js";

const base = document.body.dataset.base;
const query = new URLSearchParams(location.search);

async function load() {
  const params = new URLSearchParams({ dag_id: query.get("dag_id") || "", run_id: query.get("run_id") || "" });
  const body = await getJson(`${base}/api/dag-run?${params}`);
  const tries = body.tries.length;
  document.getElementById("run").textContent =
    `${body.dag_id}, run ${body.run_id}: ${tries} tr${tries === 1 ? "y" : "ies"} recorded, ` +
    `ended ${body.since.slice(0, 19).replace("T", " ")} to ${body.until.slice(0, 19).replace("T", " ")} UTC`;
  showTotals(document.getElementById("total"), body.total);
  const unpriced = body.total.filter((row) => !row.currency).reduce((n, row) => n + row.unpriced, 0);
  document.getElementById("unpriced").textContent = unpriced
    ? `${unpriced} line(s) without a price are not counted.`
    : "";
  const tasks = document.querySelector("#tasks tbody");
  for (const row of body.by_task.rows) {
    const tr = document.createElement("tr");
    tr.dataset.task = row.task_id;
    const amount = cell(row.amount === null ? "unpriced" : `${row.amount} ${row.currency}`, "num amount");
    if (row.amount !== null) {
      amount.dataset.amount = row.amount;
      amount.dataset.currency = row.currency;
    }
    tr.append(cell(row.task_id), amount, cell(row.status), cell(row.lines, "num"), cell(row.unpriced, "num"));
    tasks.append(tr);
  }
  const lines = document.querySelector("#lines tbody");
  for (const found of body.tries) {
    const which = `${found.try_number}${found.map_index >= 0 ? `, map index ${found.map_index}` : ""} (${found.state})`;
    if (!found.lines.length) {
      const tr = document.createElement("tr");
      tr.dataset.task = found.task_id;
      tr.append(cell(found.task_id), cell(which), Object.assign(cell("no cost lines"), { colSpan: 8 }));
      lines.append(tr);
    }
    for (const line of found.lines) {
      const tr = document.createElement("tr");
      tr.dataset.task = found.task_id;
      tr.dataset.source = line.source;
      tr.append(cell(found.task_id), cell(which), ...lineCells(line));
      lines.append(tr);
    }
  }
}

settle(load());
