// Shared helpers for the dashboard pages: API calls, the token, formatting, sortable tables.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "zooens.token";

function getToken() { return window.localStorage.getItem(TOKEN_KEY) || ""; }
function setToken(value) { window.localStorage.setItem(TOKEN_KEY, value.trim()); }

async function apiError(resp) {
  let message = resp.status + " " + resp.statusText;
  try {
    const body = await resp.json();
    const detail = body.detail !== undefined ? body.detail : (body.message || body.error || body);
    message = typeof detail === "string" ? detail : JSON.stringify(detail);
  } catch (e) { /* not JSON: keep the status line */ }
  const err = new Error(message);
  err.status = resp.status;
  return err;
}

async function apiGet(path) {
  const headers = { "Accept": "application/json" };
  const token = getToken();
  if (token) headers["Authorization"] = "Bearer " + token;
  const resp = await fetch(API + path, { headers });
  if (!resp.ok) throw await apiError(resp);
  return resp.json();
}

/** GET that answers null for 404 (e.g. an ensemble not built yet) instead of throwing. */
async function apiGetOptional(path) {
  try { return await apiGet(path); } catch (e) { if (e.status === 404 || e.status === 409) return null; throw e; }
}

async function apiPost(path, body) {
  const headers = { "Accept": "application/json", "Authorization": "Bearer " + getToken() };
  let payload = body;
  if (!(body instanceof FormData)) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body || {}); }
  const resp = await fetch(API + path, { method: "POST", headers, body: payload });
  if (!resp.ok) throw await apiError(resp);
  return resp.json();
}

/** Lists come as {data, count} or as a bare array. */
function items(body) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body.data)) return body.data;
  if (body && Array.isArray(body.items)) return body.items;
  return [];
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const fmt = {
  pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %"; },
  num(v, digits = 3) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); },
  int(v) { return v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"); },
  params(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 1e6) return (v / 1e6).toFixed(2) + " M";
    if (v >= 1e3) return (v / 1e3).toFixed(1) + " k";
    return String(v);
  },
  bytes(v) {
    if (v === null || v === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0; while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : String(v)) + " " + units[i];
  },
  seconds(v) { return v === null || v === undefined ? "–" : Number(v).toFixed(2) + " s"; },
  age(iso) {
    if (!iso) return "–";
    const t = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z");
    if (Number.isNaN(t)) return iso;
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
    return (s / 86400).toFixed(1) + " d ago";
  },
};

function statusBadge(status) {
  return el("span", { class: "status status-" + status, "data-status": status, text: status });
}

function progressBar(done, total) {
  const frac = total ? Math.min(1, done / total) : 0;
  const bar = el("div", { class: "bar" + (total && done >= total ? " done" : ""), title: done + " of " + total });
  const fill = el("span");
  fill.style.width = (100 * frac).toFixed(1) + "%";
  bar.append(fill);
  return bar;
}

/** Overall fraction of a job's work done, from its per-stage progress. */
function jobFraction(job) {
  if (job.status === "succeeded") return 1;
  const p = job.progress || {};
  const weights = { embed: 0.4, finetune: 0.55, ensemble: 0.05 };
  let f = 0;
  for (const [stage, w] of Object.entries(weights)) {
    const st = p[stage];
    if (st && st.total) f += w * Math.min(1, st.done / st.total);
  }
  return f;
}

/** Make a table sortable by clicking its headers; cells carry data-sort with a raw value. */
function makeSortable(table) {
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((th, col) => {
    if (th.dataset.nosort !== undefined) return;
    th.classList.add("sortable");
    th.tabIndex = 0;
    const sort = () => {
      const asc = th.getAttribute("aria-sort") !== "ascending";
      headers.forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      const numeric = th.classList.contains("num");
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      const key = (row) => {
        const cell = row.cells[col];
        const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent;
        if (!numeric) return raw.toLowerCase();
        return raw === "" ? null : Number(raw);
      };
      rows.sort((a, b) => {
        const ka = key(a), kb = key(b);
        if (ka === kb) return 0;
        if (ka === null) return 1;  // missing values last either way
        if (kb === null) return -1;
        return (ka < kb ? -1 : 1) * (asc ? 1 : -1);
      });
      rows.forEach((r) => body.append(r));
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") sort(); });
  });
}

function showError(container, err) {
  container.replaceChildren(el("div", { class: "error-box", role: "alert", text: String(err.message || err) }));
}

/** DELETE with the bearer token kept by the Submit page; an answer without a body is fine. */
async function apiDelete(path) {
  const token = getToken();
  if (!token) throw new Error("Deleting needs an API token: enter it on the Submit page (create one with `zooens tokens create NAME`).");
  const resp = await fetch(API + path, { method: "DELETE", headers: { "Accept": "application/json", "Authorization": "Bearer " + token } });
  if (!resp.ok) throw await apiError(resp);
  return resp.status === 204 ? null : resp.json().catch(() => null);
}

let openApiPaths = null;

/** Whether this server's OpenAPI document offers `method` on `template` ("/api/v1/jobs/{}": any parameter name). */
async function apiOffers(method, template) {
  if (openApiPaths === null) {
    openApiPaths = fetch("/openapi.json").then((r) => (r.ok ? r.json() : { paths: {} })).then((doc) => {
      const out = {};
      for (const [path, ops] of Object.entries(doc.paths || {})) out[path.replace(/\{[^}]*\}/g, "{}")] = Object.keys(ops);
      return out;
    }).catch(() => ({}));
  }
  const ops = (await openApiPaths)[template] || [];
  return ops.includes(method.toLowerCase());
}

/** A button that asks before deleting, then goes to `after`; shown only when the API offers that DELETE. */
async function deleteButton(container, { label, question, template, path, after }) {
  if (!(await apiOffers("delete", template))) return;
  const button = el("button", { type: "button", class: "danger", id: "delete-button", text: label });
  const out = el("span", { class: "delete-result" });
  button.addEventListener("click", async () => {
    if (!window.confirm(question)) return;
    button.disabled = true;
    try { await apiDelete(path); window.location.assign(after); } catch (err) { showError(out, err); button.disabled = false; }
  });
  container.replaceChildren(button, out);
}

/** Seconds between two ISO times (the job's true wall time), or null. */
function secondsBetween(start, end) {
  if (!start || !end) return null;
  const parse = (iso) => Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z");
  const s = (parse(end) - parse(start)) / 1000;
  return Number.isFinite(s) ? s : null;
}

fmt.duration = function (v) {
  if (v === null || v === undefined) return "–";
  if (v < 60) return v.toFixed(1) + " s";
  const m = Math.floor(v / 60), s = Math.round(v % 60);
  if (m < 60) return m + " min " + String(s).padStart(2, "0") + " s";
  return Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " min";
};

/** Axis settings for accuracies (fractions): the data's range padded, clipped to [0, 1], and ticks whose step and
 * decimals come from that range so that no two ticks read the same. */
function accuracyAxis(values, title) {
  const lo = Math.min(...values), hi = Math.max(...values);
  const pad = Math.max(0.01, 0.08 * (hi - lo));
  let a = Math.max(0, lo - pad), b = Math.min(1, hi + pad);
  const raw = (b - a) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw);
  const points = step * 100;  // the step in percentage points: as many decimals as it needs, no more
  let decimals = 0;
  while (decimals < 6 && Math.abs(Math.round(points * 10 ** decimals) - points * 10 ** decimals) > 1e-6) decimals++;
  return { title: { text: title }, range: [a, b], dtick: step, tick0: 0, tickformat: "." + decimals + "%", zeroline: false };
}

/** "1 budget", "3 budgets": a count with its noun in the right number (`many`: an irregular plural). */
function plural(n, one, many) {
  return n + " " + (n === 1 ? one : (many || one + "s"));
}

/** A model name (or any long identifier) that wraps at its separators, never mid-word, and at a `.` or `@` first:
 * each dot-separated part is an inline block, inside which a <wbr> follows each `_`, `-`, `/` and `:`. The
 * router's `breakable` (for server-rendered pages) builds the same. */
function breakable(text) {
  const frag = document.createDocumentFragment();
  for (const part of String(text).split(/(?<=[.@])/)) {
    if (!part) continue;
    const span = el("span", { class: "name-part" });
    for (const piece of part.split(/(?<=[_\-/:])/)) {
      if (!piece) continue;
      if (span.childNodes.length) span.append(document.createElement("wbr"));
      span.append(document.createTextNode(piece));
    }
    if (frag.childNodes.length) frag.append(document.createElement("wbr"));
    frag.append(span);
  }
  return frag;
}

let datasetNamesPromise = null;

/** Registered datasets' names by id, read once per page (an empty map when the list cannot be read). */
function datasetNames() {
  if (datasetNamesPromise === null) {
    datasetNamesPromise = apiGet("/datasets?limit=1000")
      .then((body) => new Map(items(body).map((d) => [d.id, d.name])))
      .catch(() => new Map());
  }
  return datasetNamesPromise;
}

/** A link to a dataset's page that reads its name (its id in the tooltip); "dataset #id" only when it has none. */
function datasetLink(id, name) {
  return el("a", { href: "/dashboard/datasets/" + id, class: "dataset-link", "data-dataset-id": id, title: "dataset #" + id,
    text: name || "dataset #" + id });
}

/** A unit key in words: "embed:m" -> "embedding m"; "finetune:m:linear:lr=0.1:steps=60" -> "fine-tuning m (linear,
 * learning rate 0.1, 60 steps)"; "pull:m" -> "fetching m"; "ensemble" -> "building the ensemble". */
function unitWords(key) {
  if (!key) return "";
  const [kind, ...rest] = String(key).split(":");
  if (kind === "embed" && rest.length) return "embedding " + rest.join(":");
  if (kind === "pull" && rest.length) return "fetching " + rest.join(":");
  if (kind === "ensemble") return "building the ensemble";
  if (kind === "finetune" && rest.length >= 4) {
    const steps = rest[rest.length - 1], lr = rest[rest.length - 2], strategy = rest[rest.length - 3];
    const model = rest.slice(0, rest.length - 3).join(":");
    if (lr.startsWith("lr=") && steps.startsWith("steps=")) {
      const n = Number(steps.slice(6));
      return "fine-tuning " + model + " (" + strategy + ", learning rate " + lr.slice(3) + ", " + plural(n, "step") + ")";
    }
  }
  return String(key);
}

/** POST a job action (cancel, resume, retry) with the token kept by the Submit page. */
async function apiAction(path) {
  if (!getToken()) throw new Error("This needs an API token: enter it on the Submit page (create one with `zooens tokens create NAME`).");
  return apiPost(path, {});
}

/** How many distinct runs an ensemble holds (the greedy selection picks with replacement: its size counts picks). */
function distinctRuns(ens) {
  return new Set((ens.members || []).map((m) => m.run_id)).size;
}

/** "3 distinct runs (9 greedy picks)", or "3 runs" when every run was picked once. */
function membersText(ens) {
  const runs = distinctRuns(ens);
  return plural(runs, "run") + (ens.size && ens.size !== runs ? " (" + plural(ens.size, "greedy pick") + ")" : "");
}

/** Short scalar hyper-parameters that tell `runs` apart: lr and steps always, and any other number, word or flag whose
 * value differs between the runs (lists and long values, e.g. a search grid or a loss path, are left out). */
function distinguishingKeys(runs) {
  const shown = (v) => (typeof v === "number" || typeof v === "boolean" || (typeof v === "string" && v.length <= 24));
  const keys = new Set(["lr", "steps"]);
  const all = new Set(runs.flatMap((r) => Object.keys(r.hparams || {})));
  for (const k of all) {
    const values = runs.map((r) => (r.hparams || {})[k]);
    if (values.every((v) => v === undefined || shown(v)) && new Set(values.map(String)).size > 1) keys.add(k);
  }
  return Array.from(keys);
}

/** A run's hyper-parameters in words, `keys` only (`distinguishingKeys`): "lr 0.1, 60 steps, C=3.16". */
function hparamsText(hparams, keys) {
  if (!hparams) return "";
  const parts = [];
  for (const k of keys || ["lr", "steps"]) {
    const v = hparams[k];
    if (v === undefined || v === null) continue;
    if (k === "lr") parts.push("lr " + v);
    else if (k === "steps") parts.push(plural(Number(v), "step"));
    else parts.push(k + "=" + (typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(3)) : v));
  }
  return parts.join(", ");
}
