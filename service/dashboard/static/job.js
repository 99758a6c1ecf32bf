// Job page: its controls (Cancel, Resume, Retry, Delete, as its status and the API allow), how it ended, per-stage
// progress with the current unit in words and the time left, ranking table and its audit, kNN-vs-fine-tuned
// scatter, ensemble curve, accuracy against cost, the calibrated ensemble's reliability diagram, the job's
// warnings, members and runs.
"use strict";

let JOB_ID = null;  // from <body data-job-id>, read once the DOM is ready
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const STAGE_LABELS = { pull: "pulling weights", embed: "embedding", finetune: "fine-tuning", ensemble: "ensemble" };
let timer = null;
let lastRankingKey = null;
let lastEnsembleKey = null;
let lastRunsKey = null;
let lastAuditKey = null;
let lastFrontKey = null;
let lastReliabilityKey = null;

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

const PARAM_LABELS = {
  top_k: "top K", k: "kNN k", strategies: "strategies", learning_rates: "learning rates", steps: "steps",
  batch_size: "batch size", ensemble_size: "ensemble size", resolution: "resolution", seed: "seed",
  n_train: "n_train", n_val: "n_val", max_test: "max test", augmentation: "augmentation",
  preprocessing: "preprocessing", small_classes: "small classes",
};

function renderHeader(job, datasets) {
  document.getElementById("job-status").replaceChildren(statusBadge(job.status));
  const facts = document.getElementById("job-facts");
  const id = job.dataset_id;
  const params = job.params || {};
  const pairs = [
    ["dataset", datasetLink(id, job.dataset_name || (datasets && datasets.get(id)))],
    ["zoo set", job.zoo || "–"],
    ["created", job.created_at ? el("span", { title: job.created_at, text: fmt.age(job.created_at) }) : "–"],
    ["worker", job.worker_id || "–"],
  ];
  for (const [k, label] of Object.entries(PARAM_LABELS)) {
    if (params[k] === undefined || params[k] === null) continue;
    let text = Array.isArray(params[k]) ? params[k].join(", ") : String(params[k]);
    // the sizes the job really uses, when the API reports them and they differ from those asked for
    const used = job[k + "_used"];
    if ((k === "n_train" || k === "n_val") && used !== undefined && used !== null && used !== params[k]) text = used + " used (" + text + " asked)";
    pairs.push([label, text]);
  }
  if (params.max_gflops !== undefined && params.max_gflops !== null) pairs.push(["budget", "at most " + params.max_gflops + " GFLOPs per image"]);
  if (params.max_latency_ms !== undefined && params.max_latency_ms !== null) pairs.push(["budget", "at most " + params.max_latency_ms + " ms per image"]);
  if (params.audit_ranking) pairs.push(["ranking audit", plural(params.audit_ranking, "model") + " beyond the top-K"]);
  if (params.taps && params.taps !== "none") pairs.push(["layer taps", params.taps]);
  if (params.pull) pairs.push(["pull", "missing weights pulled from the hub first"]);
  facts.replaceChildren(...pairs.map(([k, v]) => el("div", { class: "fact" }, el("dt", { text: k }), el("dd", { "data-param": k }, v))));
  const err = document.getElementById("job-error");
  if (job.status === "failed" || (job.error && job.status !== "cancelled")) {
    err.replaceChildren(el("h2", { text: "Error" }), el("div", { class: "error-box", id: "job-error-text", role: "alert", text: job.error || "The job failed without a recorded reason." }));
  } else {
    err.replaceChildren();
  }
}

/** Units done per stage, in words: "embedding 3 of 3, fine-tuning 2 of 6". */
function unitsDone(job) {
  const p = job.progress || {};
  return ["pull", "embed", "finetune", "ensemble"].filter((s) => p[s] && p[s].total)
    .map((s) => STAGE_LABELS[s] + " " + p[s].done + " of " + p[s].total).join(", ");
}

/** How a finished (or finishing) job ended and what to do next; nothing for a job that runs or succeeded. */
function renderEnded(job) {
  const box = document.getElementById("job-ended");
  let text = null, kind = job.status;
  const done = unitsDone(job);
  const when = job.finished_at ? " " + fmt.age(job.finished_at) : "";
  if (job.status === "cancelled") {
    const how = job.started_at
      ? "It stopped with these units finished: " + (done || "none") + "."
      : "It was cancelled before a worker started it.";
    text = "Cancelled" + when + ". " + how + (job.error ? " (" + job.error + ")" : "")
      + " Next: Resume runs only the unfinished units (finished ones are kept); Retry starts a new job with the same"
      + " dataset and parameters; Delete removes the job, its results and its files.";
  } else if ((job.status === "running" || job.status === "queued") && job.cancel_requested) {
    kind = "cancelling";
    text = "Cancel requested: the job stops after its current unit; then it can be resumed, retried or deleted.";
  } else if (job.status === "failed") {
    text = "Failed" + when + " (the error is below). Units finished: " + (done || "none") + ". Next: fix the cause, then"
      + " Resume (finished units are kept) or Retry (a new job with the same parameters); or Delete it.";
  }
  box.replaceChildren(...(text ? [el("p", { class: "notice", id: "job-ended-text", "data-ended": kind, role: "status", text })] : []));
}

let controlsKey = null;
let controlsGeneration = 0;

/** The job's actions, as its status and the API allow: Cancel (queued or running), Resume (failed or cancelled),
 * Retry and Delete (finished). Each asks the API with the token kept by the Submit page. */
async function renderControls(job) {
  const key = job.status + ":" + job.cancel_requested;
  if (key === controlsKey) return;
  controlsKey = key;
  const generation = ++controlsGeneration;
  const box = document.getElementById("job-actions");
  const out = el("span", { class: "delete-result", id: "action-result", role: "status" });
  const active = job.status === "queued" || job.status === "running";
  const finished = FINISHED.has(job.status);
  const specs = [
    ["cancel", "Cancel", "post", "/api/v1/jobs/{}/cancel", active, ""],
    ["resume", "Resume", "post", "/api/v1/jobs/{}/resume", job.status === "failed" || job.status === "cancelled", ""],
    ["retry", "Retry", "post", "/api/v1/jobs/{}/retry", finished, ""],
    ["delete", "Delete job", "delete", "/api/v1/jobs/{}", finished, "danger"],
  ];
  const buttons = [];
  for (const [action, label, method, template, allowed, cls] of specs) {
    if (!allowed || !(await apiOffers(method, template))) continue;
    const cancelling = action === "cancel" && job.cancel_requested;
    const button = el("button", { type: "button", class: cls, id: action + "-button", "data-action": action,
      text: cancelling ? "Cancelling…" : label, disabled: cancelling });
    button.addEventListener("click", async () => {
      if (action === "delete" && !window.confirm("Delete job #" + JOB_ID + " with its runs and ensemble? This cannot be undone.")) return;
      button.disabled = true;
      out.replaceChildren();
      try {
        if (action === "delete") { await apiDelete("/jobs/" + JOB_ID); window.location.assign("/dashboard/jobs"); return; }
        const answer = await apiAction("/jobs/" + JOB_ID + "/" + action);
        if (action === "retry") { window.location.assign("/dashboard/jobs/" + answer.id); return; }
        controlsKey = null;
        refresh();
      } catch (err) {
        showError(out, err);
        button.disabled = false;
      }
    });
    buttons.push(button);
  }
  if (generation === controlsGeneration) box.replaceChildren(...buttons, out);
}

/** The work done inside the current unit, when the worker reports it (images embedded of a split). */
function innerWords(st) {
  const inner = st && st.inner;
  if (!inner || !inner.total) return "";
  const fmt = (n) => Number(n).toLocaleString("en-US");
  return " (" + fmt(Math.min(inner.done, inner.total)) + " of " + fmt(inner.total) + " images)";
}

function renderStages(job) {
  const p = job.progress || {};
  const box = document.getElementById("stages");
  const children = [];
  // the pull stage only for a job that pulls missing weights (it has a "pull" entry), and then first
  const stages = (p.pull ? ["pull"] : []).concat(["embed", "finetune", "ensemble"]);
  const active = job.status === "running";
  for (const stage of stages) {
    const st = p[stage] || { done: 0, total: 0 };
    let text;
    if (stage === "pull") text = st.total ? "model " + st.done + " of " + st.total + " fetched" : "nothing to fetch";
    else if (stage === "embed") text = st.total ? "model " + st.done + " of " + st.total + " embedded" : "not started";
    else if (stage === "finetune") text = st.total ? st.done + " of " + plural(st.total, "run") + " done" : "not started";
    else text = st.total ? (st.done >= st.total ? "built" : "greedy selection…") : "not started";
    if (st.current && st.done < st.total && active) text += "; now " + unitWords(st.current) + innerWords(st);
    children.push(el("div", { class: "stage-name", text: STAGE_LABELS[stage] }), progressBar(st.done, st.total),
      el("div", { class: "muted stage-text", "data-stage": stage, "data-unit": st.current || "", text }));
  }
  box.replaceChildren(...children);
  const now = document.getElementById("job-now");
  const st = job.stage && p[job.stage];
  let text = "";
  if (job.status === "queued") text = job.cancel_requested ? "" : "Waiting for a worker.";
  else if (active && st && st.current && st.done < st.total) text = "Now " + unitWords(st.current) + innerWords(st) + ".";
  else if (active && job.stage) text = "Now " + (STAGE_LABELS[job.stage] || job.stage) + ".";
  now.textContent = text;
  now.dataset.unit = active && st && st.current ? st.current : "";
}

function mean(values) {
  const known = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  return known.length ? known.reduce((a, b) => a + b, 0) / known.length : null;
}

/** Seconds left, estimated per unit kind: the embedding units left times the mean embedding time so far, plus the
 * fine-tuning runs left times the mean run time so far, strategy by strategy where the worker counted the runs left
 * of each (`progress.finetune.left`). {seconds, basis, missing}: `basis`, how many finished units the estimate rests
 * on; `missing`, the first stage with units left but none of their kind timed yet (their time is not counted: the
 * estimate is then a lower bound); seconds null when no stage with units left has a timed unit. */
function estimateLeft(job, ranking, runs) {
  const p = job.progress || {};
  let seconds = null, basis = 0, missing = null;
  const add = (name, left, times) => {  // `left` units of stage `name`, each timed by the mean of `times`
    if (!left) return;
    const timed = times.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
    if (!timed.length) { if (missing === null) missing = name; return; }
    basis += timed.length;
    seconds = (seconds || 0) + left * mean(timed);
  };
  const stage = (name, times) => {
    const st = p[name];
    if (!st || !st.total) {  // not planned yet: fine-tuning's runs are known once the ranking is done
      if (name === "finetune" && missing === null) missing = name;
      return;
    }
    if (name === "finetune" && st.left && Object.keys(st.left).length) {
      // by strategy, as the CLI's ETA: a linear probe and a FiLM run take very different times
      for (const [strategy, left] of Object.entries(st.left)) {
        add(name, left, runs.filter((r) => r.strategy === strategy).map((r) => r.seconds));
      }
      return;
    }
    add(name, Math.max(0, st.total - st.done), times);
  };
  stage("embed", ranking.map((r) => r.embed_seconds));
  stage("finetune", runs.map((r) => r.seconds));
  return { seconds, basis, missing };
}

const MISSING_WORDS = { embed: "the first model is embedded", finetune: "a fine-tuning run of each strategy finishes" };

function renderEta(job, ranking, runs) {
  const box = document.getElementById("job-eta");
  box.dataset.seconds = "";
  if (FINISHED.has(job.status)) {
    const d = job.duration_seconds !== undefined && job.duration_seconds !== null ? job.duration_seconds : secondsBetween(job.started_at, job.finished_at);
    box.textContent = d === null ? "" : "Ran for " + fmt.duration(d) + ".";
    return;
  }
  if (job.status !== "running") { box.textContent = ""; return; }
  const elapsed = job.started_at ? secondsBetween(job.started_at, new Date().toISOString()) : null;
  const eta = estimateLeft(job, ranking, runs);
  const ran = elapsed === null ? "" : "Running for " + fmt.duration(elapsed) + ". ";
  const later = eta.missing ? "the time of " + (eta.missing === "embed" ? "embedding" : "fine-tuning") + " is known once " + MISSING_WORDS[eta.missing] : "";
  if (eta.seconds === null) {
    box.textContent = ran + "Time left: " + (eta.missing ? "known once " + MISSING_WORDS[eta.missing] : "not estimated for this stage") + ".";
    return;
  }
  box.dataset.seconds = String(eta.seconds);
  box.textContent = ran + "Time left: about " + fmt.duration(eta.seconds) + (later ? " or more (" + later + ")" : "")
    + ", from the times of " + plural(eta.basis, "finished unit") + ".";
}

/** The kNN column's title with its k: "kNN@5" when every score used the same k, "kNN@k" otherwise. */
function knnLabel(rows) {
  const ks = new Set(rows.map((r) => r.k).filter((k) => k !== null && k !== undefined));
  return ks.size === 1 ? "kNN@" + Array.from(ks)[0] : "kNN@k";
}

function renderRanking(rows) {
  const container = document.getElementById("ranking");
  if (!rows.length) { container.replaceChildren(el("p", { class: "muted", text: "No model scored yet." })); return; }
  const cols = [
    ["rank", "#", "num", (r) => r.rank, (r) => r.rank],
    ["model", "model", "name", (r) => r.model_name, (r) => breakable(r.model_name)],
    ["knn_accuracy", knnLabel(rows), "num", (r) => r.knn_accuracy, (r) => fmt.pct(r.knn_accuracy)],
    ["knn1_accuracy", "kNN@1", "num", (r) => r.knn1_accuracy, (r) => fmt.pct(r.knn1_accuracy)],
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
      return el("td", { class: cls, "data-key": key, "data-sort": v === null || v === undefined ? "" : v }, shown(r));
    })));
  }
  table.append(body);
  makeSortable(table);
  container.replaceChildren(table);
}

/** kNN accuracy against fine-tuned accuracy. With the job's ranking audit, the points and ρ are the audit's (each
 * audited model's best fine-tuned val accuracy); an older job without one gets ρ computed here over the ranking's
 * best runs (lowest val CE). */
function renderScatter(rows, audit) {
  const note = document.getElementById("spearman");
  const plot = document.getElementById("scatter-plot");
  const knn = new Map(rows.map((r) => [r.model_name, r.knn_accuracy]));
  let pts, rho, yTitle, source;
  const knnAudit = audit && audit.predictors && audit.predictors.knn;
  if (knnAudit && audit.finetuned_accuracy) {
    pts = Object.entries(audit.finetuned_accuracy).filter(([m]) => knn.get(m) !== null && knn.get(m) !== undefined)
      .map(([m, acc]) => ({ model_name: m, knn_accuracy: knn.get(m), finetuned: acc }));
    rho = knnAudit.spearman.value === null ? NaN : knnAudit.spearman.value;
    yTitle = "best fine-tuned val accuracy";
    source = "audit";
  } else {
    pts = rows.filter((r) => r.knn_accuracy !== null && r.finetuned_val_acc !== null && r.finetuned_val_acc !== undefined)
      .map((r) => ({ model_name: r.model_name, knn_accuracy: r.knn_accuracy, finetuned: r.finetuned_val_acc }));
    rho = spearman(pts.map((p) => p.knn_accuracy), pts.map((p) => p.finetuned));
    yTitle = "fine-tuned val accuracy";
    source = "page";
  }
  if (!pts.length) {
    note.textContent = "Appears when fine-tuned runs finish.";
    return;
  }
  const x = pts.map((p) => p.knn_accuracy), y = pts.map((p) => p.finetuned);
  note.dataset.value = Number.isNaN(rho) ? "nan" : String(rho);
  note.dataset.source = source;
  const reason = knnAudit && knnAudit.spearman.reason ? knnAudit.spearman.reason : "fewer than two distinct values";
  note.textContent = "Spearman ρ = " + (Number.isNaN(rho) ? "undefined (" + reason + ")" : rho.toFixed(3)) + " over " + pts.length
    + " models" + (source === "audit" ? " (the job's ranking audit, below)" : " (computed here: this job has no stored audit)");
  Plotly.react(plot, [{
    x, y, text: pts.map((p) => p.model_name), mode: "markers+text", type: "scatter", textposition: "top center", cliponaxis: false,
    marker: { size: 10, color: "#2b6cb0" }, hovertemplate: "%{text}<br>kNN %{x:.3f}<br>fine-tuned %{y:.3f}<extra></extra>",
  }], {
    margin: { l: 60, r: 20, t: 20, b: 50 },
    xaxis: accuracyAxis(x, "kNN accuracy (leave-one-out)"),
    yaxis: accuracyAxis(y, yTitle),
  }, { displaylogo: false, displayModeBar: false, responsive: true });
}

const PREDICTORS = {
  knn: "kNN",
  logme: "LogME",
  imagenet_top1: "ImageNet top-1 (static prior)",
  num_params: "parameter count (static prior)",
};
const PREDICTOR_ORDER = ["knn", "logme", "imagenet_top1", "num_params"];
const DATA_PREDICTORS = ["knn", "logme"];  // they look at the job's data
const STATIC_PRIORS = ["imagenet_top1", "num_params"];  // the same order for every dataset
const COST_LABELS = { gflops: "GFLOPs per image", latency_ms: "latency per image (ms, batch 1)" };
const COST_UNITS = { gflops: "GFLOPs", latency_ms: "ms" };

function predictorLabel(name) { return PREDICTORS[name] || name; }

/** 1 when audit `a` ordered the fine-tuned models better than `b`, -1 when `b` did, 0 when no figure tells them
 * apart: the higher Spearman ρ, then the higher Kendall τ, then the lower regret (undefined or equal within 1e-9:
 * the next figure). Mirrors `compare_predictors` in the dashboard router. */
function comparePredictors(a, b) {
  if (!a || !b) return 0;
  const corr = (p, k) => (p[k] && p[k].value !== undefined ? p[k].value : null);
  const tests = [[corr(a, "spearman"), corr(b, "spearman"), 1], [corr(a, "kendall"), corr(b, "kendall"), 1], [a.regret, b.regret, -1]];
  for (const [x, y, sign] of tests) {
    if (x === null || y === null || x === undefined || y === undefined || Math.abs(x - y) <= 1e-9) continue;
    return (x - y) * sign > 0 ? 1 : -1;
  }
  return 0;
}

/** Which of kNN and LogME ordered the fine-tuned models better; null when no figure tells them apart. Mirrors
 * `better_predictor` in the dashboard router. */
function betterPredictor(predictors) {
  const a = predictors.knn, b = predictors.logme;
  if (!a || !b) return null;
  const verdict = comparePredictors(a, b);
  return verdict === 0 ? null : (verdict > 0 ? "knn" : "logme");
}

function bestOf(predictors, names) {
  let best = null;
  for (const name of names) {
    if (!predictors[name]) continue;
    if (best === null || comparePredictors(predictors[name], predictors[best]) > 0) best = name;
  }
  return best;
}

/** Whether looking at the data beat the static priors: the best of kNN and LogME against the best prior;
 * {data, prior, winner: "data" | "prior" | null} or null without both sides. Mirrors `data_versus_prior`. */
function dataVersusPrior(predictors) {
  const data = bestOf(predictors, DATA_PREDICTORS), prior = bestOf(predictors, STATIC_PRIORS);
  if (data === null || prior === null) return null;
  const verdict = comparePredictors(predictors[data], predictors[prior]);
  return { data, prior, winner: verdict === 0 ? null : (verdict > 0 ? "data" : "prior") };
}

function figureCell(key, value, digits, undefinedText) {
  const known = value !== null && value !== undefined;
  return el("td", { class: "num", "data-key": key, "data-value": known ? String(value) : "", "data-sort": known ? value : "",
    text: known ? (digits === "pct" ? fmt.pct(value) : fmt.num(value, digits)) : undefinedText });
}

/** The job's ranking audit: one row per predictor, reasons for every undefined figure, and the verdict. */
function renderAudit(job) {
  const box = document.getElementById("ranking-audit");
  const audit = job.ranking_audit;
  if (!audit || !audit.predictors) {
    const text = FINISHED.has(job.status)
      ? "No ranking audit is stored for this job: it ran before zooens audited rankings, or no fine-tuning run finished. Retry the job to get one."
      : "Appears when the ensemble is built.";
    box.replaceChildren(el("p", { class: "muted", id: "audit-absent", text }));
    return;
  }
  const names = Object.keys(audit.predictors).sort((a, b) => {
    const ia = PREDICTOR_ORDER.indexOf(a), ib = PREDICTOR_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  const table = el("table", { id: "audit-table" });
  table.append(el("thead", {}, el("tr", {},
    el("th", { text: "predictor" }), el("th", { class: "num", text: "models audited" }),
    el("th", { class: "num", text: "Spearman ρ" }), el("th", { class: "num", text: "Kendall τ-b" }),
    el("th", { class: "num", text: "K" }), el("th", { text: "its top-K" }),
    el("th", { class: "num", text: "best in top-K" }), el("th", { class: "num", text: "best overall" }),
    el("th", { class: "num", text: "regret" }))));
  const body = el("tbody");
  const reasons = [];
  for (const name of names) {
    const p = audit.predictors[name];
    const label = predictorLabel(name);
    if (p.spearman.reason) reasons.push(label + " Spearman ρ undefined: " + p.spearman.reason + ".");
    if (p.kendall.reason) reasons.push(label + " Kendall τ-b undefined: " + p.kendall.reason + ".");
    if (p.regret === null) reasons.push(label + " regret undefined: " + (p.regret_reason || "no model to compare") + ".");
    const skipped = (audit.skipped || {})[name];
    if (skipped && skipped.length) reasons.push(label + " has no score for " + skipped.join(", ") + ": left out of its audit.");
    body.append(el("tr", { "data-predictor": name },
      el("td", { "data-key": "predictor", text: label }),
      el("td", { class: "num", "data-key": "n", "data-value": String(p.n), "data-sort": p.n, text: String(p.n) }),
      figureCell("spearman", p.spearman.value, 3, "undefined"),
      figureCell("kendall", p.kendall.value, 3, "undefined"),
      el("td", { class: "num", "data-key": "top_k", "data-value": String(p.top_k), text: String(p.top_k) }),
      el("td", { "data-key": "top_k_models", text: (p.top_k_models || []).join(", ") || "–" }),
      figureCell("best_in_top_k", p.best_in_top_k, "pct", "–"),
      figureCell("best_overall", p.best_overall, "pct", "–"),
      figureCell("regret", p.regret, "pct", "undefined")));
  }
  table.append(body);
  makeSortable(table);
  const facts = el("p", { id: "audit-facts" },
    String(audit.audited_models !== undefined ? audit.audited_models : Object.keys(audit.finetuned_accuracy || {}).length)
    + " models audited; fine-tuned accuracy: " + (audit.basis || "best val accuracy over each model's runs") + ".");
  const better = betterPredictor(audit.predictors);
  const dataNames = names.filter((n) => DATA_PREDICTORS.includes(n));
  let verdict;
  if (dataNames.length < 2) verdict = dataNames.length ? "Only " + predictorLabel(dataNames[0]) + " looked at the data: nothing to compare it with." : "Neither kNN nor LogME scored these models.";
  else if (better) {
    const other = better === "knn" ? "logme" : "knn";
    verdict = predictorLabel(better) + " predicted the fine-tuned order better than " + predictorLabel(other) + " on this data.";
  } else verdict = "Neither kNN nor LogME did better on this data (equal or undefined figures).";
  const versus = dataVersusPrior(audit.predictors);
  let priorText;
  if (!versus) priorText = "No static prior was audited for this job: nothing to say whether looking at the data helped.";
  else if (versus.winner === "data") priorText = "Looking at the data paid off: " + predictorLabel(versus.data) + " ordered the models better than the best static prior, " + predictorLabel(versus.prior) + ".";
  else if (versus.winner === "prior") priorText = "Looking at the data did not pay off: the static prior " + predictorLabel(versus.prior) + " ordered the models better than " + predictorLabel(versus.data) + ", the better of kNN and LogME.";
  else priorText = "Looking at the data did no better or worse than the static priors (" + predictorLabel(versus.data) + " and " + predictorLabel(versus.prior) + ": equal or undefined figures).";
  const children = [facts, table,
    el("p", { id: "audit-verdict", "data-better": better || "", class: "notice", text: verdict }),
    el("p", { id: "audit-prior-verdict", class: "notice", "data-winner": versus ? (versus.winner || "") : "", "data-data": versus ? versus.data : "", "data-prior": versus ? versus.prior : "", text: priorText })];
  if (reasons.length) children.push(el("ul", { id: "audit-reasons", class: "muted" }, ...reasons.map((r) => el("li", { text: r }))));
  box.replaceChildren(...children);
}

/** The ensemble's accuracy-against-cost front: val CE (top) and test accuracy (bottom) of every prefix of the greedy
 * path and of the best ensemble under each budget, the job's budget as a vertical line, the chosen ensemble a star. */
/** The cost axis's range: the costs padded by 6 % of their spread; from 0 when they (nearly) coincide, so that one
 * point is not stretched over a ±1 % axis whose ticks all read the same. */
function costRange(costs) {
  const lo = Math.min(...costs), hi = Math.max(...costs);
  if (!(hi > 0)) return [0, 1];
  if (hi - lo <= 0.05 * hi) return [0, hi * 1.25];
  const pad = (hi - lo) * 0.06;
  return [Math.max(0, lo - pad), hi + pad];
}

function renderFront(ens) {
  const note = document.getElementById("front-note");
  const plot = document.getElementById("front-plot");
  const front = ens && ens.front;
  if (!front) {
    note.textContent = ens ? "No cost front is stored for this ensemble: it was built before zooens measured inference cost."
      : "Appears when the ensemble is built.";
    plot.classList.add("empty");
    return;
  }
  plot.classList.remove("empty");
  const metric = front.metric || "gflops";
  const unit = COST_UNITS[metric] || metric;
  const path = front.path || [], best = front.front || [];
  const hasTest = path.concat(best).some((p) => p.test_accuracy !== null && p.test_accuracy !== undefined);
  const hover = (what) => what + "<br>%{customdata}<br>" + unit + " %{x:.4g}<br>%{y}<extra></extra>";
  const traces = [];
  const add = (points, name, color, dash, yaxis, field, extra) => {
    traces.push({
      x: points.map((p) => p.cost), y: points.map((p) => p[field]), customdata: points.map((p) => plural(p.size, "member")),
      name, type: "scatter", mode: "lines+markers", yaxis, line: { color, dash, shape: extra.shape || "linear" },
      marker: { size: 7, color }, showlegend: extra.legend, legendgroup: name, cliponaxis: false,
      hovertemplate: hover(name).replace("%{y}", field === "val_loss" ? "val CE %{y:.4f}" : "test %{y:.1%}"),
    });
  };
  add(path, "greedy path (each prefix)", "#2f855a", "solid", "y", "val_loss", { legend: true });
  add(best, "best within each budget", "#2b6cb0", "dot", "y", "val_loss", { legend: true, shape: "hv" });
  if (hasTest) {
    add(path, "greedy path (each prefix)", "#2f855a", "solid", "y2", "test_accuracy", { legend: false });
    add(best, "best within each budget", "#2b6cb0", "dot", "y2", "test_accuracy", { legend: false, shape: "hv" });
  }
  const chosenCost = ens[metric];
  if (chosenCost !== null && chosenCost !== undefined) {
    const star = { type: "scatter", mode: "markers", name: "chosen ensemble", legendgroup: "chosen", cliponaxis: false,
      marker: { symbol: "star", size: 15, color: "#c05621", line: { color: "#1d232b", width: 1 } } };
    traces.push({ ...star, x: [chosenCost], y: [ens.val_ce], yaxis: "y",
      hovertemplate: "chosen ensemble<br>" + unit + " %{x:.4g}<br>val CE %{y:.4f}<extra></extra>" });
    if (hasTest && ens.test_acc !== null && ens.test_acc !== undefined) {
      traces.push({ ...star, x: [chosenCost], y: [ens.test_acc], yaxis: "y2", showlegend: false,
        hovertemplate: "chosen ensemble<br>" + unit + " %{x:.4g}<br>test %{y:.1%}<extra></extra>" });
    }
  }
  const shapes = [], annotations = [];
  if (front.budget !== null && front.budget !== undefined) {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: front.budget, x1: front.budget, y0: 0, y1: 1,
      line: { color: "#c53030", dash: "dash", width: 2 } });
    annotations.push({ xref: "x", yref: "paper", x: front.budget, y: 1, yanchor: "bottom", showarrow: false,
      text: "budget " + fmt.num(front.budget, 4) + " " + unit, font: { color: "#c53030" } });
  }
  const costs = path.concat(best).map((p) => p.cost).concat(chosenCost === null || chosenCost === undefined ? [] : [chosenCost]);
  if (front.budget !== null && front.budget !== undefined) costs.push(front.budget);
  const range = costRange(costs);
  const layout = {
    height: hasTest ? 520 : 380, margin: { l: 70, r: 20, t: 50, b: 55 },
    legend: { orientation: "h", x: 0, y: 1.14, yanchor: "bottom" },
    xaxis: { title: { text: COST_LABELS[metric] || metric }, anchor: hasTest ? "y2" : "y", range, zeroline: false },
    yaxis: { title: { text: "ensemble val CE" }, domain: hasTest ? [0.55, 1] : [0, 1], anchor: "x", rangemode: "tozero" },
    shapes, annotations,
  };
  if (hasTest) {
    const acc = path.concat(best).map((p) => p.test_accuracy).filter((v) => v !== null && v !== undefined);
    if (ens.test_acc !== null && ens.test_acc !== undefined) acc.push(ens.test_acc);
    layout.yaxis2 = { ...accuracyAxis(acc, "test accuracy"), domain: [0, 0.42], anchor: "x" };
  }
  const parts = [plural(path.length, "prefix", "prefixes") + " of the greedy path", plural(best.length, "budget") + " on the front"];
  note.dataset.metric = metric;
  note.textContent = "Cost: " + (COST_LABELS[metric] || metric) + "; forward passes shared by members are paid once. "
    + parts.join(", ") + "." + (front.budget !== null && front.budget !== undefined ? " The job's budget: " + fmt.num(front.budget, 4) + " " + unit + "." : " No budget was set.")
    + (front.complete === false ? " The budget sweep stopped at its limit: the front is partial." : "");
  Plotly.react(plot, traces, layout, { displaylogo: false, displayModeBar: false, responsive: true });
}

/** Why the job's val numbers may not be trusted (`jobs.warnings`: a small val split, a val CE near 0). */
function renderWarnings(job) {
  const box = document.getElementById("job-warnings");
  const warnings = job.warnings || [];
  box.replaceChildren(...(warnings.length ? [el("div", { class: "notice", id: "job-warnings-list", role: "status" },
    el("strong", { text: warnings.length === 1 ? "Warning" : "Warnings" }),
    el("ul", {}, ...warnings.map((w) => el("li", { class: "job-warning", text: w }))))] : []));
}

/** The calibrated ensemble's reliability diagram (test, or val without a test split): accuracy against mean
 * confidence per bin, the diagonal, and the bin counts as bars on a second axis. */
function renderReliability(ens) {
  const note = document.getElementById("reliability-note");
  const plot = document.getElementById("reliability-plot");
  const rel = ens && ens.reliability;
  if (!rel || !rel.bins) {
    note.textContent = ens ? "No calibration is stored for this ensemble: it was built before zooens fitted temperatures."
      : "Appears when the ensemble is built.";
    plot.classList.add("empty");
    return;
  }
  plot.classList.remove("empty");
  const n = rel.n_bins || rel.bins.length;
  const centres = rel.bins.map((_, i) => (i + 0.5) / n);
  const filled = rel.bins.map((b, i) => [b, i]).filter(([b]) => b[0] > 0);
  const split = rel.split || "test";
  const metric = (name) => {
    const nll = ens[split + "_nll"], brier = ens[split + "_brier"], ece = ens[split + "_ece"];
    return nll === null || nll === undefined ? "" : name + ": NLL " + fmt.num(nll, 4) + ", Brier " + fmt.num(brier, 4) + ", ECE " + fmt.pct(ece);
  };
  const before = ens["uncalibrated_" + split + "_ece"];
  note.dataset.split = split;
  note.textContent = "On " + split + (split === "val" ? " (no test split; T was fitted on it)" : "") + ". Temperature T = "
    + fmt.num(ens.temperature, 3) + (ens.temperature > 1 ? " (the ensemble was over-confident)" : ens.temperature < 1 ? " (the ensemble was under-confident)" : "")
    + ". " + metric("Calibrated") + (before === null || before === undefined ? "." : " (ECE " + fmt.pct(before) + " before scaling).");
  const traces = [
    { x: centres, y: rel.bins.map((b) => b[0]), type: "bar", name: "images per bin", yaxis: "y2", width: 0.9 / n,
      marker: { color: "rgba(113, 128, 150, 0.35)" }, hovertemplate: "confidence %{x:.2f}<br>%{y} image(s)<extra></extra>" },
    { x: [0, 1], y: [0, 1], type: "scatter", mode: "lines", name: "perfect calibration", line: { color: "#718096", dash: "dash" }, hoverinfo: "skip" },
    { x: filled.map(([b]) => b[1]), y: filled.map(([b]) => b[2]), customdata: filled.map(([b]) => b[0]),
      type: "scatter", mode: "lines+markers", name: "calibrated ensemble", cliponaxis: false, line: { color: "#2b6cb0" }, marker: { size: 8, color: "#2b6cb0" },
      hovertemplate: "mean confidence %{x:.3f}<br>accuracy %{y:.1%}<br>%{customdata} image(s)<extra></extra>" },
  ];
  const layout = {
    height: 420, margin: { l: 70, r: 70, t: 40, b: 55 }, barmode: "overlay",
    legend: { orientation: "h", x: 0, y: 1.05, yanchor: "bottom" },
    xaxis: { title: { text: "confidence (top probability)" }, range: [0, 1], dtick: 0.2 },
    yaxis: { title: { text: "accuracy" }, range: [0, 1.02], tickformat: ".0%" },
    yaxis2: { title: { text: "images" }, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false },
  };
  Plotly.react(plot, traces, layout, { displaylogo: false, displayModeBar: false, responsive: true });
}

/** Every fine-tuning run of the job, lowest val CE first; sortable by any column. */
function renderRuns(runs) {
  const container = document.getElementById("runs");
  if (!runs.length) { container.replaceChildren(el("p", { class: "muted", text: "No run finished yet." })); return; }
  const cols = [
    ["model", "model", "name", (r) => r.model_name, (r) => breakable(r.model_name)],
    ["strategy", "strategy", "", (r) => r.strategy, (r) => r.strategy],
    ["lr", "lr", "num", (r) => r.hparams.lr, (r) => (r.hparams.lr === undefined ? "–" : String(r.hparams.lr))],
    ["steps", "steps", "num", (r) => r.hparams.steps, (r) => fmt.int(r.hparams.steps)],
    ["val_ce", "val CE", "num", (r) => r.val_ce, (r) => fmt.num(r.val_ce, 4)],
    ["val_acc", "val acc.", "num", (r) => r.val_acc, (r) => fmt.pct(r.val_acc)],
    ["test_acc", "test acc.", "num", (r) => r.test_acc, (r) => fmt.pct(r.test_acc)],
    ["updated_params", "updated params", "num", (r) => r.updated_params, (r) => fmt.params(r.updated_params)],
    ["gflops", "GFLOPs", "num", (r) => r.gflops, (r) => fmt.num(r.gflops, 4)],
    ["latency_ms", "latency", "num", (r) => r.latency_ms, (r) => (r.latency_ms === null || r.latency_ms === undefined ? "–" : fmt.num(r.latency_ms, 2) + " ms")],
    ["seconds", "time", "num", (r) => r.seconds, (r) => fmt.duration(r.seconds)],
  ];
  const table = el("table", { id: "runs-table" });
  table.append(el("thead", {}, el("tr", {}, ...cols.map(([key, label, cls]) => el("th", { class: cls, "data-key": key, text: label })))));
  const body = el("tbody");
  for (const r of runs.slice().sort((a, b) => a.val_ce - b.val_ce)) {
    body.append(el("tr", { "data-run-id": r.id }, ...cols.map(([key, , cls, raw, shown]) => {
      const v = raw(r);
      return el("td", { class: cls, "data-key": key, "data-sort": v === null || v === undefined ? "" : v }, shown(r));
    })));
  }
  table.append(body);
  makeSortable(table);
  container.replaceChildren(table);
}

function budgetText(ens) {
  if (ens.max_gflops !== null && ens.max_gflops !== undefined) return "at most " + fmt.num(ens.max_gflops, 4) + " GFLOPs";
  if (ens.max_latency_ms !== null && ens.max_latency_ms !== undefined) return "at most " + fmt.num(ens.max_latency_ms, 2) + " ms";
  return "none";
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
    el("dt", { text: "members" }), el("dd", { id: "ensemble-size", "data-runs": String(distinctRuns(ens)), "data-picks": String(ens.size), text: membersText(ens) }),
    el("dt", { text: "val CE" }), el("dd", { text: fmt.num(ens.val_ce, 4) }),
    el("dt", { text: "val accuracy" }), el("dd", { text: fmt.pct(ens.val_acc) }),
    el("dt", { text: "test accuracy" }), el("dd", { id: "ensemble-test-acc", text: ens.test_acc === null || ens.test_acc === undefined ? "not known (no test split)" : fmt.pct(ens.test_acc) }),
    el("dt", { text: "GFLOPs" }), el("dd", { id: "ensemble-gflops", "data-value": ens.gflops === null || ens.gflops === undefined ? "" : String(ens.gflops), text: ens.gflops === null || ens.gflops === undefined ? "not measured" : fmt.num(ens.gflops, 4) + " per image" }),
    el("dt", { text: "latency" }), el("dd", { id: "ensemble-latency", text: ens.latency_ms === null || ens.latency_ms === undefined ? "not measured" : fmt.num(ens.latency_ms, 2) + " ms per image (batch 1)" }),
    el("dt", { text: "budget" }), el("dd", { id: "ensemble-budget", text: budgetText(ens) })),
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
  const keys = distinguishingKeys(ens.members || []);
  for (const m of ens.members || []) {
    const hp = hparamsText(m.hparams, keys);
    body.append(el("tr", { "data-run-id": m.run_id },
      el("td", { class: "name" }, breakable(m.model_name)), el("td", { text: m.strategy || "" }), el("td", { text: hp }),
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
      x: losses.map((_, i) => i + 1), y: losses, type: "scatter", mode: "lines+markers", line: { color: "#2f855a" }, cliponaxis: false,
      hovertemplate: "step %{x}<br>val CE %{y:.4f}<extra></extra>",
    }], {
      margin: { l: 60, r: 20, t: 20, b: 50 },
      xaxis: { title: { text: "greedy step (members added)" }, dtick: 1 },
      yaxis: { title: { text: "ensemble val cross-entropy" }, rangemode: "tozero" },
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
  renderHeader(job, await datasetNames());
  renderControls(job);
  renderEnded(job);
  renderWarnings(job);
  renderStages(job);
  try {
    const ranking = items(await apiGetOptional("/jobs/" + JOB_ID + "/ranking") || []);
    const key = JSON.stringify(ranking);
    if (key !== lastRankingKey) { lastRankingKey = key; renderRanking(ranking); }
    const akey = JSON.stringify([job.status, job.ranking_audit]);
    if (key + akey !== lastAuditKey) { lastAuditKey = key + akey; renderScatter(ranking, job.ranking_audit); renderAudit(job); }
    const runs = items(await apiGetOptional("/jobs/" + JOB_ID + "/runs") || []);
    const rkey = JSON.stringify(runs);
    if (rkey !== lastRunsKey) { lastRunsKey = rkey; renderRuns(runs); }
    renderEta(job, ranking, runs);
    // Ask for the ensemble only once it exists: a 404 would show as a console error.
    const p = (job.progress || {}).ensemble;
    const built = job.status === "succeeded" || (p && p.total && p.done >= p.total);
    const ens = built ? await apiGetOptional("/jobs/" + JOB_ID + "/ensemble") : null;
    const ekey = JSON.stringify(ens);
    if (ekey !== lastEnsembleKey) { lastEnsembleKey = ekey; renderEnsemble(ens, ranking); }
    const fkey = JSON.stringify([job.status, ens && ens.front]);
    if (fkey !== lastFrontKey) { lastFrontKey = fkey; renderFront(ens); }
    const relKey = JSON.stringify([job.status, ens && ens.reliability, ens && ens.temperature]);
    if (relKey !== lastReliabilityKey) { lastReliabilityKey = relKey; renderReliability(ens); }
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
  refresh();
});
