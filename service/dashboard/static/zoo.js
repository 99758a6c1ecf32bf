// The Zoo page: sortable table; changing a select applies the filters at once. For a token holder (the token kept
// by the Submit page), a Pull button on each row without weights and one for every missing model the filters
// match: they start a pull on the server (POST /zoo/pull) and follow it (GET /zoo/pulls/{id}) until it ends.
"use strict";

const PULL_POLL_MS = 500;

function pullText(pull) {
  const n = pull.models.length;
  const what = n === 1 ? pull.models[0] : n + " models";
  if (pull.status === "running") {
    const bytes = pull.total_bytes ? fmt.bytes(pull.done_bytes) + " of " + fmt.bytes(pull.total_bytes) : "starting…";
    return "Pulling " + what + ": " + pull.models_done + " of " + n + " done, " + bytes
      + (pull.current ? " — " + pull.current : "") + ".";
  }
  const counts = {};
  for (const o of pull.outcomes || []) counts[o.status] = (counts[o.status] || 0) + 1;
  const parts = Object.entries(counts).map(([k, v]) => v + " " + k);
  if (pull.status === "succeeded") return "Pulled " + what + (parts.length ? " (" + parts.join(", ") + ")" : "") + ".";
  return "Pull of " + what + " failed: " + (pull.error || "see the outcomes") + ".";
}

/** Mark the rows whose weights the pull brought (or found) as available. */
function markAvailable(pull) {
  for (const o of pull.outcomes || []) {
    if (o.status !== "pulled" && o.status !== "present") continue;
    const row = document.querySelector(`#zoo-table tr[data-name="${CSS.escape(o.model)}"]`);
    if (!row) continue;
    const cell = row.querySelector("td[data-weights]");
    cell.dataset.weights = "yes";
    cell.replaceChildren(document.createTextNode("✔ available"));
  }
}

function rowState(model) {
  const row = document.querySelector(`#zoo-table tr[data-name="${CSS.escape(model)}"]`);
  if (!row) return null;
  const cell = row.querySelector("td[data-weights]");
  let span = cell.querySelector(".pull-state");
  if (!span) { span = el("span", { class: "pull-state" }); cell.append(span); }
  return span;
}

function showPull(pull, line) {
  line.dataset.pullId = pull.id;
  line.dataset.status = pull.status;
  line.className = "pull-state " + pull.status;
  line.textContent = pullText(pull);
  for (const model of pull.models) {
    const span = rowState(model);
    if (!span) continue;
    span.className = "pull-state " + pull.status;
    span.dataset.status = pull.status;
    const outcome = (pull.outcomes || []).find((o) => o.model === model);
    span.textContent = pull.status === "running" ? "pulling…" : (outcome ? outcome.status : pull.status)
      + (outcome && outcome.status === "failed" && outcome.message ? ": " + outcome.message : "");
  }
}

async function followPull(pull, line) {
  showPull(pull, line);
  while (pull.status === "running") {
    await new Promise((resolve) => setTimeout(resolve, PULL_POLL_MS));
    try {
      pull = await apiGet("/zoo/pulls/" + encodeURIComponent(pull.id));
    } catch (err) {
      line.className = "pull-state failed";
      line.textContent = "Lost track of pull " + pull.id + ": " + err.message;
      return;
    }
    showPull(pull, line);
  }
  markAvailable(pull);
}

async function startPull(models, buttons) {
  const box = document.getElementById("pull-status");
  const line = el("div", { class: "pull-state running", text: "Starting the pull of " + models.join(", ") + "…" });
  box.append(line);
  for (const b of buttons) b.disabled = true;
  try {
    const pull = await apiPost("/zoo/pull", { models });
    await followPull(pull, line);
  } catch (err) {
    line.className = "pull-state failed";
    line.dataset.status = "refused";
    line.textContent = "The pull was refused: " + err.message;
    for (const b of buttons) b.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("zoo-table");
  if (table) makeSortable(table);
  for (const sel of document.querySelectorAll("#zoo-filters select")) sel.addEventListener("change", () => sel.form.submit());
  if (!getToken()) return;  // no token: no pull buttons
  const panel = document.getElementById("pull-panel");
  if (panel) panel.hidden = false;
  for (const button of document.querySelectorAll("button.pull-one")) {
    button.hidden = false;
    button.addEventListener("click", () => startPull([button.dataset.model], [button]));
  }
  const all = document.getElementById("pull-all");
  if (all) {
    all.addEventListener("click", () => {
      const models = all.dataset.models.split(" ").filter(Boolean);
      const buttons = [all, ...models.map((m) => document.querySelector(`button.pull-one[data-model="${CSS.escape(m)}"]`)).filter(Boolean)];
      startPull(models, buttons);
    });
  }
});
