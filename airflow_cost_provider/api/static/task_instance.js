// The "Cost" tab of a task instance: the lines of its last try from /api/task-instance. Airflow
// fills the tab's URL with the task instance's ids; a task that is not mapped leaves {MAP_INDEX}.

import { getJson, lineCells, settle, showTotals } from "./lines.js";

const base = document.body.dataset.base;
const query = new URLSearchParams(location.search);

async function load() {
  const mapIndex = /^-?\d+$/.test(query.get("map_index") || "") ? query.get("map_index") : "-1";
  const params = new URLSearchParams({
    dag_id: query.get("dag_id") || "",
    task_id: query.get("task_id") || "",
    run_id: query.get("run_id") || "",
    map_index: mapIndex,
  });
  if (query.get("try_number")) params.set("try_number", query.get("try_number"));
  const body = await getJson(`${base}/api/task-instance?${params}`);
  document.getElementById("try").textContent =
    `${body.dag_id}.${body.task_id}, run ${body.run_id}` +
    (body.map_index >= 0 ? `, map index ${body.map_index}` : "") +
    `, try ${body.try_number} (${body.state}); cost ${body.status}` +
    (body.team ? `; team ${body.team}` : "") +
    (body.owner ? `; owner ${body.owner}` : "");
  showTotals(document.getElementById("total"), body.total);
  const rows = document.querySelector("#lines tbody");
  for (const line of body.lines) {
    const tr = document.createElement("tr");
    tr.dataset.source = line.source;
    tr.append(...lineCells(line));
    rows.append(tr);
  }
}

settle(load());
