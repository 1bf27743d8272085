// The "Cost" tab of a task instance: the lines of its last try from /api/task-instance. Airflow
// fills the tab's URL with the task instance's ids; a task that is not mapped leaves {MAP_INDEX}.

const base = document.body.dataset.base;
const query = new URLSearchParams(location.search);

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (className) td.className = className;
  return td;
}

function linkCell(text, href) {
  const td = document.createElement("td");
  if (href && /^https?:\/\//.test(href)) {
    const link = Object.assign(document.createElement("a"), { href, textContent: text, target: "_blank" });
    link.rel = "noopener";
    td.append(link);
  } else {
    td.textContent = text ?? "";
  }
  return td;
}

async function load() {
  const mapIndex = /^-?\d+$/.test(query.get("map_index") || "") ? query.get("map_index") : "-1";
  const params = new URLSearchParams({
    dag_id: query.get("dag_id") || "",
    task_id: query.get("task_id") || "",
    run_id: query.get("run_id") || "",
    map_index: mapIndex,
  });
  if (query.get("try_number")) params.set("try_number", query.get("try_number"));
  const response = await fetch(`${base}/api/task-instance?${params}`, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : response.statusText);
  document.getElementById("try").textContent =
    `${body.dag_id}.${body.task_id}, run ${body.run_id}` +
    (body.map_index >= 0 ? `, map index ${body.map_index}` : "") +
    `, try ${body.try_number} (${body.state}); cost ${body.status}` +
    (body.team ? `; team ${body.team}` : "") +
    (body.owner ? `; owner ${body.owner}` : "");
  const total = document.getElementById("total");
  for (const row of body.total) {
    const div = Object.assign(document.createElement("div"), { className: "amount" });
    div.dataset.amount = row.amount;
    div.dataset.currency = row.currency;
    div.textContent = `${row.amount} ${row.currency}`;
    total.append(div);
  }
  const rows = document.querySelector("#lines tbody");
  for (const line of body.lines) {
    const tr = document.createElement("tr");
    tr.dataset.source = line.source;
    const price = line.price_amount ? `${line.price_amount} per ${line.price_unit}` : "";
    tr.append(
      cell(line.source),
      cell(`${line.quantity} ${line.unit} (${line.metric})`),
      cell(line.method),
      linkCell(price, line.price_source_url),
      cell(line.amount === null ? "unpriced" : `${line.amount} ${line.currency}`, "num amount"),
      cell(line.status + (line.unpriced_reason ? `: ${line.unpriced_reason}` : "")),
      cell(line.resource),
      cell(line.external_id),
    );
    rows.append(tr);
  }
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
