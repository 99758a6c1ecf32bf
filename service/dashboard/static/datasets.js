// The Datasets page: the registered datasets from the API, newest first (ids, names, counts; no server paths).
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const box = document.getElementById("datasets");
  try {
    const rows = items(await apiGet("/datasets?limit=500")).sort((a, b) => b.id - a.id);
    if (!rows.length) { box.replaceChildren(el("p", { class: "notice" }, "No datasets yet. ", el("a", { href: "/dashboard/submit", text: "Upload one." }))); return; }
    const table = el("table", { id: "datasets-table" });
    table.append(el("thead", {}, el("tr", {}, el("th", { class: "num", text: "id" }), el("th", { text: "name" }),
      el("th", { class: "num", text: "classes" }), el("th", { text: "fingerprint" }), el("th", { class: "num", text: "created" }))));
    const body = el("tbody");
    for (const d of rows) {
      body.append(el("tr", { "data-dataset-id": d.id },
        el("td", { class: "num", "data-sort": d.id }, el("a", { href: "/dashboard/datasets/" + d.id, text: "#" + d.id })),
        el("td", {}, el("a", { href: "/dashboard/datasets/" + d.id, text: d.name })),
        el("td", { class: "num", text: d.classes ? d.classes.length : "–" }),
        el("td", { text: (d.fingerprint || "").slice(0, 12) }),
        el("td", { class: "num", "data-sort": d.created_at ? Date.parse(d.created_at) : "", text: fmt.age(d.created_at) })));
    }
    table.append(body);
    makeSortable(table);
    box.replaceChildren(table);
  } catch (err) { showError(box, err); }
});
