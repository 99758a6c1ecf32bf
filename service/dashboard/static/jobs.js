// Jobs page: every job, refreshed every few seconds while any job is queued or running.
"use strict";

const ACTIVE = new Set(["queued", "running"]);
const STAGE_WORDS = { pull: "pulling weights", embed: "embedding", finetune: "fine-tuning", ensemble: "ensemble" };
let refreshTimer = null;
const ensembles = new Map();  // job id -> its ensemble (final once the job succeeded), fetched once
const picked = new Set();     // job ids ticked for comparison, kept across refreshes

/** The ensembles of succeeded jobs, each asked for once (the job list carries no metric). */
async function loadEnsembles(jobs) {
  const missing = jobs.filter((j) => j.status === "succeeded" && !ensembles.has(j.id));
  await Promise.all(missing.map(async (j) => { ensembles.set(j.id, await apiGetOptional("/jobs/" + j.id + "/ensemble")); }));
}

/** The job's headline number: its ensemble's test accuracy, or val accuracy when there is no test split. */
function metric(job) {
  const ens = ensembles.get(job.id);
  if (!ens) return { value: null, text: "–", title: "" };
  if (ens.test_acc !== null && ens.test_acc !== undefined) return { value: ens.test_acc, text: fmt.pct(ens.test_acc) + " test", title: "ensemble test accuracy" };
  if (ens.val_acc !== null && ens.val_acc !== undefined) return { value: ens.val_acc, text: fmt.pct(ens.val_acc) + " val", title: "ensemble val accuracy (no test split)" };
  return { value: null, text: "–", title: "" };
}

/** Wall time: finished - started, or started - now while it runs. */
function duration(job) {
  if (!job.started_at) return null;
  return secondsBetween(job.started_at, job.finished_at || new Date().toISOString());
}

function updateCompare() {
  const link = document.getElementById("compare-link");
  const ids = Array.from(picked).sort((a, b) => a - b);
  link.href = "/dashboard/compare?jobs=" + ids.join(",");
  link.classList.toggle("disabled", ids.length < 2);
  link.setAttribute("aria-disabled", ids.length < 2 ? "true" : "false");
  document.getElementById("compare-count").textContent = ids.length < 2 ? "tick two or more jobs to compare them" : ids.length + " jobs ticked";
}

function datasetLabel(job, datasets) {
  const id = job.dataset_id !== undefined ? job.dataset_id : (job.dataset && job.dataset.id);
  const name = job.dataset_name || (job.dataset && job.dataset.name) || (datasets[id] && datasets[id].name);
  return datasetLink(id, name);
}

function stageText(job) {
  const p = job.progress || {};
  const st = job.stage && p[job.stage];
  if (job.status === "succeeded") return "done";
  if (!job.stage) return job.status === "queued" ? "waiting for a worker" : "–";
  const label = STAGE_WORDS[job.stage] || job.stage;
  return st ? label + " " + st.done + " of " + st.total : label;
}

async function loadJobs() {
  const container = document.getElementById("jobs");
  let jobs, datasets = {};
  try {
    jobs = items(await apiGet("/jobs?limit=500"));
    try { for (const d of items(await apiGet("/datasets?limit=500"))) datasets[d.id] = d; } catch (e) { /* names optional */ }
    await loadEnsembles(jobs);
  } catch (err) { showError(container, err); return; }
  jobs.sort((a, b) => b.id - a.id);
  if (!jobs.length) {
    container.replaceChildren(el("p", { class: "notice", text: "No jobs yet. " }, el("a", { href: "/dashboard/submit", text: "Submit one." })));
  } else {
    const table = el("table", { id: "jobs-table" });
    table.append(el("thead", {}, el("tr", {},
      el("th", { class: "pick", "data-nosort": "", title: "tick jobs to compare", text: "⇆" }),
      el("th", { class: "num", text: "id" }), el("th", { text: "dataset" }), el("th", { text: "zoo set" }),
      el("th", { text: "status" }), el("th", { text: "stage" }), el("th", { text: "progress", "data-nosort": "" }),
      el("th", { class: "num", "data-key": "metric", text: "accuracy" }), el("th", { class: "num", "data-key": "duration", text: "duration" }),
      el("th", { class: "num", text: "created" }))));
    const body = el("tbody");
    for (const job of jobs) {
      const frac = jobFraction(job);
      const created = job.created_at || job.created;
      const m = metric(job), d = duration(job);
      const box = el("input", { type: "checkbox", class: "pick-job", value: job.id, "aria-label": "compare job #" + job.id, checked: picked.has(job.id) });
      box.addEventListener("change", () => { if (box.checked) picked.add(job.id); else picked.delete(job.id); updateCompare(); });
      const row = el("tr", { "data-job-id": job.id, "data-status": job.status },
        el("td", { class: "pick" }, box),
        el("td", { class: "num", "data-sort": job.id }, el("a", { href: "/dashboard/jobs/" + job.id, text: "#" + job.id })),
        el("td", {}, datasetLabel(job, datasets)),
        el("td", { text: job.zoo || "" }),
        el("td", {}, statusBadge(job.status)),
        el("td", { text: stageText(job) }),
        el("td", { title: (100 * frac).toFixed(0) + " %" }, progressBar(frac, 1)),
        el("td", { class: "num", "data-key": "metric", "data-sort": m.value === null ? "" : m.value, title: m.title, text: m.text }),
        el("td", { class: "num", "data-key": "duration", "data-sort": d === null ? "" : d, text: fmt.duration(d) }),
        el("td", { class: "num", "data-sort": created ? Date.parse(created) : "", title: created || "", text: fmt.age(created) }));
      body.append(row);
    }
    table.append(body);
    makeSortable(table);
    container.replaceChildren(table);
  }
  updateCompare();
  const active = jobs.some((j) => ACTIVE.has(j.status));
  document.getElementById("refresh-note").textContent = active ? "Refreshing every 2 s while jobs run." : "";
  clearTimeout(refreshTimer);
  if (active) refreshTimer = setTimeout(loadJobs, 2000);
}

document.addEventListener("DOMContentLoaded", loadJobs);
