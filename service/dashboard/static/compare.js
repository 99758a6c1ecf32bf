// Compare page: each job's ensemble and ranking side by side, from the jobs API.
"use strict";

const TOP = 10;  // ranking rows shown per job

async function loadJob(id) {
  const job = await apiGet("/jobs/" + id);
  const ranking = items(await apiGetOptional("/jobs/" + id + "/ranking") || []);
  const ensemble = job.status === "succeeded" ? await apiGetOptional("/jobs/" + id + "/ensemble") : null;
  return { job, ranking, ensemble };
}

function summaryTable(loaded, datasets) {
  const table = el("table", { id: "compare-table" });
  table.append(el("thead", {}, el("tr", {},
    el("th", { class: "num", text: "job" }), el("th", { text: "dataset" }), el("th", { text: "zoo set" }), el("th", { text: "status" }),
    el("th", { class: "num", text: "runs in the ensemble" }), el("th", { class: "num", text: "val CE" }), el("th", { class: "num", text: "val acc." }),
    el("th", { class: "num", text: "test acc." }), el("th", { class: "num", text: "best single test acc." }), el("th", { class: "num", text: "duration" }))));
  const body = el("tbody");
  for (const { job, ranking, ensemble: e } of loaded) {
    const best = ranking.filter((r) => r.finetuned_val_ce !== null).sort((a, b) => a.finetuned_val_ce - b.finetuned_val_ce)[0];
    const d = job.started_at && job.finished_at ? secondsBetween(job.started_at, job.finished_at) : null;
    const cell = (key, v, text) => el("td", { class: "num", "data-key": key, "data-sort": v === null || v === undefined ? "" : v, text });
    body.append(el("tr", { "data-job-id": job.id },
      el("td", { class: "num", "data-sort": job.id }, el("a", { href: "/dashboard/jobs/" + job.id, text: "#" + job.id })),
      el("td", {}, datasetLink(job.dataset_id, datasets.get(job.dataset_id))), el("td", { text: job.zoo }), el("td", {}, statusBadge(job.status)),
      cell("size", e && distinctRuns(e), e ? membersText(e) : "–"),
      cell("val_ce", e && e.val_ce, e ? fmt.num(e.val_ce, 4) : "–"),
      cell("val_acc", e && e.val_acc, e ? fmt.pct(e.val_acc) : "–"),
      cell("test_acc", e && e.test_acc, e ? (e.test_acc === null ? "no test split" : fmt.pct(e.test_acc)) : "–"),
      el("td", { class: "num name", "data-key": "best_single", "data-sort": best && best.finetuned_test_acc !== null ? best.finetuned_test_acc : "" },
        best ? fmt.pct(best.finetuned_test_acc) + " (" : "–", best ? breakable(best.model_name) : null, best ? ")" : null),
      cell("duration", d, fmt.duration(d))));
  }
  table.append(body);
  makeSortable(table);
  return table;
}

function column({ job, ranking, ensemble }, datasets) {
  const section = el("section", { class: "card", "data-job-id": job.id });
  section.append(el("h2", {}, el("a", { href: "/dashboard/jobs/" + job.id, text: "Job #" + job.id }), " ", statusBadge(job.status)));
  if (datasets) section.append(el("p", { class: "muted" }, "on ", datasetLink(job.dataset_id, datasets.get(job.dataset_id))));
  if (ensemble) {
    const members = el("table", { class: "members" });
    members.append(el("thead", {}, el("tr", {}, el("th", { text: "run" }), el("th", { text: "strategy" }), el("th", { text: "hyper-parameters" }),
      el("th", { class: "num", text: "weight" }), el("th", { class: "num", text: "val acc." }))));
    const body = el("tbody");
    const keys = distinguishingKeys(ensemble.members);
    for (const m of ensemble.members) {
      body.append(el("tr", { "data-run-id": m.run_id }, el("td", { class: "name" }, breakable(m.model_name)), el("td", { text: m.strategy }),
        el("td", { "data-key": "hparams", text: hparamsText(m.hparams, keys) }),
        el("td", { class: "num", text: fmt.num(m.weight, 3) }), el("td", { class: "num", text: fmt.pct(m.val_acc) })));
    }
    members.append(body);
    section.append(el("h3", { class: "ensemble-title", "data-runs": String(distinctRuns(ensemble)), text: "Ensemble of " + membersText(ensemble) }), members);
  } else {
    section.append(el("p", { class: "muted", text: "No ensemble (yet)." }));
  }
  const table = el("table", { class: "ranking" });
  table.append(el("thead", {}, el("tr", {}, el("th", { class: "num", text: "#" }), el("th", { text: "model" }),
    el("th", { class: "num", text: "kNN" }), el("th", { class: "num", text: "fine-tuned val acc." }))));
  const body = el("tbody");
  for (const r of ranking.slice(0, TOP)) {
    body.append(el("tr", { "data-model": r.model_name }, el("td", { class: "num", text: String(r.rank) }), el("td", { class: "name" }, breakable(r.model_name)),
      el("td", { class: "num", text: fmt.pct(r.knn_accuracy) }), el("td", { class: "num", text: fmt.pct(r.finetuned_val_acc) })));
  }
  table.append(body);
  section.append(el("h3", { text: ranking.length > TOP ? "Ranking (top " + TOP + " of " + ranking.length + ")" : "Ranking" }), table);
  return section;
}

document.addEventListener("DOMContentLoaded", async () => {
  const ids = document.body.dataset.jobIds.split(",").map(Number);
  const summary = document.getElementById("compare-summary");
  try {
    const [loaded, datasets] = await Promise.all([Promise.all(ids.map(loadJob)), datasetNames()]);
    summary.replaceChildren(summaryTable(loaded, datasets));
    document.getElementById("compare-columns").replaceChildren(...loaded.map((one) => column(one, datasets)));
    document.body.dataset.loaded = "true";
  } catch (err) {
    showError(summary, err);
  }
});
