// Submit page: keep the token in localStorage, upload a dataset zip (or pick a registered one), start a job.
"use strict";

function numberList(text, parse) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (!parts.length) return null;
  const values = parts.map(parse);
  if (values.some((v) => Number.isNaN(v))) throw new Error("Not a list of numbers: " + text);
  return values;
}

function optionalInt(value) { return value === "" ? null : parseInt(value, 10); }
function optionalFloat(value) { return value.trim() === "" ? null : parseFloat(value); }

async function loadChoices() {
  const select = document.getElementById("dataset-id");
  try {
    const datasets = items(await apiGet("/datasets?limit=500"));
    for (const d of datasets.sort((a, b) => b.id - a.id)) {
      select.append(el("option", { value: d.id, title: "dataset #" + d.id, text: d.name + (d.classes ? " (" + plural(d.classes.length, "class", "classes") + ")" : "") }));
    }
  } catch (e) { /* the upload still works */ }
}

function jobBody(form, datasetId) {
  const strategies = Array.from(form.querySelectorAll("input[name=strategy]:checked")).map((i) => i.value);
  const body = {
    dataset_id: datasetId,
    zoo: form.zoo.value.trim(),
    top_k: parseInt(form.top_k.value, 10),
    strategies,
    ensemble_size: parseInt(form.ensemble_size.value, 10),
    seed: parseInt(form.seed.value, 10),
  };
  const lrs = numberList(form.learning_rates.value, parseFloat);
  const steps = numberList(form.steps.value, (s) => parseInt(s, 10));
  const resolution = optionalInt(form.resolution.value);
  if (lrs) body.learning_rates = lrs;
  if (steps) body.steps = steps;
  if (resolution !== null) body.resolution = resolution;
  const maxGflops = optionalFloat(form.max_gflops.value), maxLatency = optionalFloat(form.max_latency_ms.value);
  if (maxGflops !== null) body.max_gflops = maxGflops;
  if (maxLatency !== null) body.max_latency_ms = maxLatency;
  const audit = optionalInt(form.audit_ranking.value);
  if (audit) body.audit_ranking = audit;
  if (form.pull && form.pull.checked) body.pull = true;
  // JobParams fields of the same names, sent only when they differ from the API's default
  const k = form.k.value.trim();
  if (k && k !== form.k.dataset.default) {
    if (k !== "auto" && !/^[0-9]+$/.test(k)) throw new Error("kNN k is a whole number of neighbours or 'auto'; got " + JSON.stringify(k) + ".");
    body.k = k === "auto" ? "auto" : parseInt(k, 10);
  }
  for (const name of ["n_train", "n_val"]) {
    const value = optionalInt(form[name].value);
    if (value !== null && String(value) !== form[name].dataset.default) body[name] = value;
  }
  for (const name of ["augmentation", "preprocessing", "small_classes", "taps"]) {
    if (form[name].value !== form[name].dataset.default) body[name] = form[name].value;
  }
  return body;
}

async function onSubmit(event) {
  event.preventDefault();
  const form = event.target;
  const out = document.getElementById("submit-result");
  const button = form.querySelector("button[type=submit]");
  setToken(form.token.value);
  button.disabled = true;
  try {
    if (!getToken()) throw new Error("A token is needed to submit: create one with `zooens tokens create NAME`.");
    const body = jobBody(form, null);  // a mistake in the form shows before the upload
    let datasetId = form.dataset_id.value ? Number(form.dataset_id.value) : null;
    const file = form.dataset_file.files[0];
    if (file) {
      out.replaceChildren(el("p", { class: "notice", text: "Uploading " + file.name + "…" }));
      const data = new FormData();
      data.append("file", file);
      if (form.dataset_name.value.trim()) data.append("name", form.dataset_name.value.trim());
      const ds = await apiPost("/datasets", data);
      datasetId = ds.id;
    }
    if (datasetId === null) throw new Error("Choose a registered dataset or upload a zip of an ImageFolder tree.");
    out.replaceChildren(el("p", { class: "notice", text: "Dataset ready; creating the job…" }));
    body.dataset_id = datasetId;
    const job = await apiPost("/jobs", body);
    const jobId = job.id !== undefined ? job.id : job.job_id;
    out.replaceChildren(el("p", { class: "notice", id: "submitted" }, "Job ", el("a", { href: "/dashboard/jobs/" + jobId, text: "#" + jobId }), " queued."));
    window.location.assign("/dashboard/jobs/" + jobId);
  } catch (err) {
    showError(out, err);
  } finally {
    button.disabled = false;
  }
}

/** The learning-rate and steps placeholders name the ticked strategies' own defaults ("linear: 300, 1000"). */
function showDefaults(form) {
  const ticked = Array.from(form.querySelectorAll("input[name=strategy]:checked"));
  for (const [field, key] of [[form.learning_rates, "defaultLrs"], [form.steps, "defaultSteps"]]) {
    const known = ticked.filter((i) => i.dataset[key]);
    let text = "strategy default";
    if (ticked.length === 1 && known.length === 1) text = known[0].dataset[key];
    else if (ticked.length && known.length === ticked.length) text = known.map((i) => i.value + ": " + i.dataset[key]).join("; ");
    field.placeholder = text;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("submit-form");
  showDefaults(form);
  form.querySelectorAll("input[name=strategy]").forEach((i) => i.addEventListener("change", () => showDefaults(form)));
  form.token.value = getToken();
  form.token.addEventListener("change", () => setToken(form.token.value));
  form.addEventListener("submit", onSubmit);
  loadChoices();
});
