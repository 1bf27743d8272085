// Table cells of cost lines, shared by the Cost tabs of a task instance and of a DAG run: the usage
// in its unit, the price (linked to its source), the external id (linked to the platform's console
// when the API gives its page).

export function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (className) td.className = className;
  return td;
}

export function linkCell(text, href, className) {
  const td = cell("", className);
  if (text && href && /^https:\/\//.test(href)) {
    const link = Object.assign(document.createElement("a"), { href, textContent: text, target: "_blank" });
    link.rel = "noopener noreferrer";
    td.append(link);
  } else {
    td.textContent = text ?? "";
  }
  return td;
}

export function lineCells(line) {
  const price = line.price_amount ? `${line.price_amount} per ${line.price_unit}` : "";
  const amount = cell(line.amount === null ? "unpriced" : `${line.amount} ${line.currency}`, "num amount");
  if (line.amount !== null) {
    amount.dataset.amount = line.amount;
    amount.dataset.currency = line.currency;
  }
  return [
    cell(line.source),
    cell(`${line.quantity} ${line.unit} (${line.metric})`),
    cell(line.method),
    linkCell(price, line.price_source_url),
    amount,
    cell(line.status + (line.unpriced_reason ? `: ${line.unpriced_reason}` : "")),
    cell(line.resource),
    linkCell(line.external_id, line.console_url, "external-id"),
  ];
}

export function showTotals(box, totals) {
  for (const row of totals) {
    if (!row.currency) continue;
    const div = Object.assign(document.createElement("div"), { className: "amount" });
    div.dataset.amount = row.amount;
    div.dataset.currency = row.currency;
    div.textContent = `${row.amount} ${row.currency}`;
    box.append(div);
  }
  if (!box.children.length) box.textContent = "no priced usage";
}

export async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : response.statusText);
  return body;
}

export function settle(promise) {
  promise
    .then(() => {
      document.body.dataset.state = "ready";
    })
    .catch((error) => {
      const box = document.getElementById("error");
      box.textContent = error.message;
      box.hidden = false;
      document.body.dataset.state = "error";
    });
}
