// Jobs page: every job, refreshed every few seconds while any job is queued or running.
"use strict";

const ACTIVE = new Set(["queued", "running"]);
let refreshTimer = null;

function datasetLabel(job, datasets) {
  const id = job.dataset_id !== undefined ? job.dataset_id : (job.dataset && job.dataset.id);
  const name = job.dataset_name || (job.dataset && job.dataset.name) || (datasets[id] && datasets[id].name);
  const label = name ? name + " (#" + id + ")" : "#" + id;
  return el("a", { href: "/dashboard/datasets/" + id, text: label });
}

function stageText(job) {
  const p = job.progress || {};
  const st = job.stage && p[job.stage];
  if (job.status === "succeeded") return "done";
  if (!job.stage) return job.status === "queued" ? "waiting for a worker" : "–";
  return st ? job.stage + " " + st.done + "/" + st.total : job.stage;
}

async function loadJobs() {
  const container = document.getElementById("jobs");
  let jobs, datasets = {};
  try {
    jobs = items(await apiGet("/jobs?limit=500"));
    try { for (const d of items(await apiGet("/datasets?limit=500"))) datasets[d.id] = d; } catch (e) { /* names optional */ }
  } catch (err) { showError(container, err); return; }
  jobs.sort((a, b) => b.id - a.id);
  if (!jobs.length) {
    container.replaceChildren(el("p", { class: "notice", text: "No jobs yet. " }, el("a", { href: "/dashboard/submit", text: "Submit one." })));
  } else {
    const table = el("table", { id: "jobs-table" });
    table.append(el("thead", {}, el("tr", {},
      el("th", { class: "num", text: "id" }), el("th", { text: "dataset" }), el("th", { text: "zoo set" }),
      el("th", { text: "status" }), el("th", { text: "stage" }), el("th", { text: "progress", "data-nosort": "" }),
      el("th", { class: "num", text: "created" }))));
    const body = el("tbody");
    for (const job of jobs) {
      const frac = jobFraction(job);
      const created = job.created_at || job.created;
      const row = el("tr", { "data-job-id": job.id, "data-status": job.status },
        el("td", { class: "num", "data-sort": job.id }, el("a", { href: "/dashboard/jobs/" + job.id, text: "#" + job.id })),
        el("td", {}, datasetLabel(job, datasets)),
        el("td", { text: job.zoo || "" }),
        el("td", {}, statusBadge(job.status)),
        el("td", { text: stageText(job) }),
        el("td", { title: (100 * frac).toFixed(0) + " %" }, progressBar(frac, 1)),
        el("td", { class: "num", "data-sort": created ? Date.parse(created) : "", title: created || "", text: fmt.age(created) }));
      body.append(row);
    }
    table.append(body);
    makeSortable(table);
    container.replaceChildren(table);
  }
  const active = jobs.some((j) => ACTIVE.has(j.status));
  document.getElementById("refresh-note").textContent = active ? "Refreshing every 2 s while jobs run." : "";
  clearTimeout(refreshTimer);
  if (active) refreshTimer = setTimeout(loadJobs, 2000);
}

document.addEventListener("DOMContentLoaded", loadJobs);
