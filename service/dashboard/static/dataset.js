// A dataset's page: its counts table sorts by clicking a header; a delete button when the API offers it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("counts-table");
  if (table) makeSortable(table);
  const id = document.body.dataset.datasetId;
  deleteButton(document.getElementById("dataset-actions"), {
    label: "Delete dataset", template: "/api/v1/datasets/{}", path: "/datasets/" + id, after: "/dashboard/datasets",
    question: "Delete dataset #" + id + " (" + document.body.dataset.datasetName + ")? The server refuses while a job uses it.",
  });
});
