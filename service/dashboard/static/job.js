// Job page: per-stage progress, ranking table, kNN-vs-fine-tuned scatter, ensemble curve and members.
"use strict";

let JOB_ID = null;  // from <body data-job-id>, read once the DOM is ready
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const STAGE_LABELS = { embed: "embedding", finetune: "fine-tuning", ensemble: "ensemble" };
let timer = null;
let lastRankingKey = null;
let lastEnsembleKey = null;
let lastRunsKey = null;

/** Ranks with ties given their average rank (1-based). */
function averageRanks(values) {
  const order = values.map((v, i) => [v, i]).sort((a, b) => a[0] - b[0]);
  const ranks = new Array(values.length);
  let i = 0;
  while (i < order.length) {
    let j = i;
    while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
    const r = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) ranks[order[k][1]] = r;
    i = j + 1;
  }
  return ranks;
}

/** Spearman's rank correlation (Pearson on average ranks), as scipy.stats.spearmanr; NaN when undefined. */
function spearman(x, y) {
  const n = x.length;
  if (n < 2) return NaN;
  const rx = averageRanks(x), ry = averageRanks(y);
  const mx = rx.reduce((a, b) => a + b, 0) / n, my = ry.reduce((a, b) => a + b, 0) / n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (rx[i] - mx) * (ry[i] - my); sxx += (rx[i] - mx) ** 2; syy += (ry[i] - my) ** 2;
  }
  if (sxx === 0 || syy === 0) return NaN;
  return sxy / Math.sqrt(sxx * syy);
}

function renderHeader(job) {
  document.getElementById("job-status").replaceChildren(statusBadge(job.status));
  const facts = document.getElementById("job-facts");
  const id = job.dataset_id;
  const params = job.params || {};
  const pairs = [
    ["dataset", el("a", { href: "/dashboard/datasets/" + id, text: (job.dataset_name ? job.dataset_name + " " : "") + "#" + id })],
    ["zoo set", job.zoo || "–"],
    ["created", job.created_at ? fmt.age(job.created_at) + " (" + job.created_at + ")" : "–"],
    ["worker", job.worker_id || "–"],
  ];
  for (const k of ["top_k", "strategies", "learning_rates", "steps", "ensemble_size", "resolution", "seed"]) {
    if (params[k] !== undefined && params[k] !== null) pairs.push([k.replace("_", " "), Array.isArray(params[k]) ? params[k].join(", ") : String(params[k])]);
  }
  facts.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  const err = document.getElementById("job-error");
  if (job.status === "failed" || job.error) {
    err.replaceChildren(el("h2", { text: "Error" }), el("div", { class: "error-box", id: "job-error-text", role: "alert", text: job.error || "The job failed without a recorded reason." }));
  } else {
    err.replaceChildren();
  }
}

function renderStages(job) {
  const p = job.progress || {};
  const box = document.getElementById("stages");
  const children = [];
  for (const stage of ["embed", "finetune", "ensemble"]) {
    const st = p[stage] || { done: 0, total: 0 };
    let text;
    if (stage === "embed") text = st.total ? "model " + st.done + " of " + st.total + " embedded" : "not started";
    else if (stage === "finetune") text = st.total ? st.done + " of " + st.total + " runs done" : "not started";
    else text = st.total ? (st.done >= st.total ? "built" : "greedy selection…") : "not started";
    if (st.current && st.done < st.total) text += " — " + st.current;
    children.push(el("div", { text: STAGE_LABELS[stage] }), progressBar(st.done, st.total),
      el("div", { class: "muted", "data-stage": stage, text }));
  }
  box.replaceChildren(...children);
}

function renderRanking(rows) {
  const container = document.getElementById("ranking");
  if (!rows.length) { container.replaceChildren(el("p", { class: "muted", text: "No model scored yet." })); return; }
  const cols = [
    ["rank", "#", "num", (r) => r.rank, (r) => r.rank],
    ["model", "model", "", (r) => r.model_name, (r) => r.model_name],
    ["knn_accuracy", "kNN accuracy", "num", (r) => r.knn_accuracy, (r) => fmt.pct(r.knn_accuracy)],
    ["finetuned_val_acc", "fine-tuned val acc.", "num", (r) => r.finetuned_val_acc, (r) => fmt.pct(r.finetuned_val_acc)],
    ["finetuned_val_ce", "fine-tuned val CE", "num", (r) => r.finetuned_val_ce, (r) => fmt.num(r.finetuned_val_ce)],
    ["finetuned_test_acc", "test acc.", "num", (r) => r.finetuned_test_acc, (r) => fmt.pct(r.finetuned_test_acc)],
    ["best_strategy", "strategy", "", (r) => r.best_strategy || "", (r) => r.best_strategy || "–"],
    ["params", "params", "num", (r) => r.params, (r) => fmt.params(r.params)],
    ["updated_params", "updated params", "num", (r) => r.updated_params, (r) => fmt.params(r.updated_params)],
    ["update_bytes", "update size", "num", (r) => r.update_bytes, (r) => fmt.bytes(r.update_bytes)],
    ["embed_seconds", "embedding time", "num", (r) => r.embed_seconds, (r) => fmt.seconds(r.embed_seconds)],
  ];
  const table = el("table", { id: "ranking-table" });
  table.append(el("thead", {}, el("tr", {}, ...cols.map(([key, label, cls]) => el("th", { class: cls, "data-key": key, text: label })))));
  const body = el("tbody");
  for (const r of rows) {
    body.append(el("tr", { "data-model": r.model_name }, ...cols.map(([key, , cls, raw, shown]) => {
      const v = raw(r);
      return el("td", { class: cls, "data-key": key, "data-sort": v === null || v === undefined ? "" : v, text: shown(r) });
    })));
  }
  table.append(body);
  makeSortable(table);
  container.replaceChildren(table);
}

function renderScatter(rows) {
  const pts = rows.filter((r) => r.knn_accuracy !== null && r.finetuned_val_acc !== null && r.finetuned_val_acc !== undefined);
  const note = document.getElementById("spearman");
  const plot = document.getElementById("scatter-plot");
  if (!pts.length) {
    note.textContent = "Appears when fine-tuned runs finish.";
    return;
  }
  const x = pts.map((r) => r.knn_accuracy), y = pts.map((r) => r.finetuned_val_acc);
  const rho = spearman(x, y);
  note.dataset.value = Number.isNaN(rho) ? "nan" : String(rho);
  note.textContent = "Spearman ρ = " + (Number.isNaN(rho) ? "undefined (fewer than two distinct values)" : rho.toFixed(3)) + " over " + pts.length + " models";
  Plotly.react(plot, [{
    x, y, text: pts.map((r) => r.model_name), mode: "markers+text", type: "scatter", textposition: "top center",
    marker: { size: 10, color: "#2b6cb0" }, hovertemplate: "%{text}<br>kNN %{x:.3f}<br>fine-tuned %{y:.3f}<extra></extra>",
  }], {
    margin: { l: 60, r: 20, t: 20, b: 50 },
    xaxis: accuracyAxis(x, "kNN accuracy (leave-one-out)"),
    yaxis: accuracyAxis(y, "fine-tuned val accuracy"),
  }, { displaylogo: false, displayModeBar: false, responsive: true });
}

/** Every fine-tuning run of the job, lowest val CE first; sortable by any column. */
function renderRuns(runs) {
  const container = document.getElementById("runs");
  if (!runs.length) { container.replaceChildren(el("p", { class: "muted", text: "No run finished yet." })); return; }
  const cols = [
    ["model", "model", "", (r) => r.model_name, (r) => r.model_name],
    ["strategy", "strategy", "", (r) => r.strategy, (r) => r.strategy],
    ["lr", "lr", "num", (r) => r.hparams.lr, (r) => (r.hparams.lr === undefined ? "–" : String(r.hparams.lr))],
    ["steps", "steps", "num", (r) => r.hparams.steps, (r) => fmt.int(r.hparams.steps)],
    ["val_ce", "val CE", "num", (r) => r.val_ce, (r) => fmt.num(r.val_ce, 4)],
    ["val_acc", "val acc.", "num", (r) => r.val_acc, (r) => fmt.pct(r.val_acc)],
    ["test_acc", "test acc.", "num", (r) => r.test_acc, (r) => fmt.pct(r.test_acc)],
    ["updated_params", "updated params", "num", (r) => r.updated_params, (r) => fmt.params(r.updated_params)],
    ["seconds", "time", "num", (r) => r.seconds, (r) => fmt.duration(r.seconds)],
  ];
  const table = el("table", { id: "runs-table" });
  table.append(el("thead", {}, el("tr", {}, ...cols.map(([key, label, cls]) => el("th", { class: cls, "data-key": key, text: label })))));
  const body = el("tbody");
  for (const r of runs.slice().sort((a, b) => a.val_ce - b.val_ce)) {
    body.append(el("tr", { "data-run-id": r.id }, ...cols.map(([key, , cls, raw, shown]) => {
      const v = raw(r);
      return el("td", { class: cls, "data-key": key, "data-sort": v === null || v === undefined ? "" : v, text: shown(r) });
    })));
  }
  table.append(body);
  makeSortable(table);
  container.replaceChildren(table);
}

function renderEnsemble(ens, ranking) {
  const summary = document.getElementById("ensemble-summary");
  const members = document.getElementById("ensemble-members");
  const curve = document.getElementById("curve-plot");
  if (!ens) {
    summary.replaceChildren(el("p", { class: "muted", text: "Not built yet." }));
    members.replaceChildren();
    return;
  }
  summary.replaceChildren(el("dl", { class: "kv", id: "ensemble-facts" },
    el("dt", { text: "size" }), el("dd", { text: String(ens.size) }),
    el("dt", { text: "val CE" }), el("dd", { text: fmt.num(ens.val_ce, 4) }),
    el("dt", { text: "val accuracy" }), el("dd", { text: fmt.pct(ens.val_acc) }),
    el("dt", { text: "test accuracy" }), el("dd", { id: "ensemble-test-acc", text: ens.test_acc === null || ens.test_acc === undefined ? "not known (no test split)" : fmt.pct(ens.test_acc) })),
    el("p", { id: "ensemble-export" }));
  apiOffers("get", "/api/v1/ensembles/{}/export").then((offered) => {
    if (offered) document.getElementById("ensemble-export").replaceChildren(el("a", { href: API + "/ensembles/" + ens.id + "/export", download: "", id: "export-link", text: "Download the ensemble (one .zooens file)" }));
  });
  const table = el("table", { id: "members-table" });
  table.append(el("thead", {}, el("tr", {},
    el("th", { text: "model" }), el("th", { text: "strategy" }), el("th", { text: "hyper-parameters" }),
    el("th", { class: "num", text: "weight" }), el("th", { class: "num", text: "val CE" }),
    el("th", { class: "num", text: "val acc." }), el("th", { class: "num", text: "test acc." }))));
  const body = el("tbody");
  for (const m of ens.members || []) {
    const hp = m.hparams ? Object.entries(m.hparams).map(([k, v]) => k + "=" + v).join(", ") : "";
    body.append(el("tr", { "data-run-id": m.run_id },
      el("td", { text: m.model_name }), el("td", { text: m.strategy || "" }), el("td", { text: hp }),
      el("td", { class: "num", "data-sort": m.weight, text: fmt.num(m.weight, 3) }),
      el("td", { class: "num", "data-sort": m.val_ce, text: fmt.num(m.val_ce, 4) }),
      el("td", { class: "num", "data-sort": m.val_acc, text: fmt.pct(m.val_acc) }),
      el("td", { class: "num", "data-sort": m.test_acc === null ? "" : m.test_acc, text: fmt.pct(m.test_acc) })));
  }
  table.append(body);
  makeSortable(table);
  members.replaceChildren(table);
  const losses = ens.loss_curve || [];
  if (losses.length) {
    Plotly.react(curve, [{
      x: losses.map((_, i) => i + 1), y: losses, type: "scatter", mode: "lines+markers", line: { color: "#2f855a" },
      hovertemplate: "step %{x}<br>val CE %{y:.4f}<extra></extra>",
    }], {
      margin: { l: 60, r: 20, t: 20, b: 50 },
      xaxis: { title: { text: "greedy step (members added)" }, dtick: 1 },
      yaxis: { title: { text: "ensemble val cross-entropy" } },
      shapes: ens.size ? [{ type: "line", x0: ens.size, x1: ens.size, yref: "paper", y0: 0, y1: 1, line: { dash: "dot", color: "#718096" } }] : [],
    }, { displaylogo: false, displayModeBar: false, responsive: true });
  }
}

async function refresh() {
  const main = document.getElementById("job-main");
  let job;
  try {
    job = await apiGet("/jobs/" + JOB_ID);
  } catch (err) {
    showError(main, err);
    return;
  }
  renderHeader(job);
  renderStages(job);
  try {
    const ranking = items(await apiGetOptional("/jobs/" + JOB_ID + "/ranking") || []);
    const key = JSON.stringify(ranking);
    if (key !== lastRankingKey) { lastRankingKey = key; renderRanking(ranking); renderScatter(ranking); }
    const runs = items(await apiGetOptional("/jobs/" + JOB_ID + "/runs") || []);
    const rkey = JSON.stringify(runs);
    if (rkey !== lastRunsKey) { lastRunsKey = rkey; renderRuns(runs); }
    // Ask for the ensemble only once it exists: a 404 would show as a console error.
    const p = (job.progress || {}).ensemble;
    const built = job.status === "succeeded" || (p && p.total && p.done >= p.total);
    const ens = built ? await apiGetOptional("/jobs/" + JOB_ID + "/ensemble") : null;
    const ekey = JSON.stringify(ens);
    if (ekey !== lastEnsembleKey) { lastEnsembleKey = ekey; renderEnsemble(ens, ranking); }
  } catch (err) {
    showError(document.getElementById("ranking"), err);
  }
  document.body.dataset.jobStatus = job.status;
  document.getElementById("refresh-note").textContent = FINISHED.has(job.status) ? "" : "Refreshing every 1.5 s until the job ends.";
  clearTimeout(timer);
  if (!FINISHED.has(job.status)) timer = setTimeout(refresh, 1500);
}

document.addEventListener("DOMContentLoaded", () => {
  JOB_ID = Number(document.body.dataset.jobId);
  deleteButton(document.getElementById("job-actions"), {
    label: "Delete job", template: "/api/v1/jobs/{}", path: "/jobs/" + JOB_ID, after: "/dashboard/jobs",
    question: "Delete job #" + JOB_ID + " with its runs and ensemble? This cannot be undone.",
  });
  refresh();
});
