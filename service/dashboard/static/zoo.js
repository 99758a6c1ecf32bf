// The Zoo page: sortable table; changing a select applies the filters at once.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("zoo-table");
  if (table) makeSortable(table);
  for (const sel of document.querySelectorAll("#zoo-filters select")) sel.addEventListener("change", () => sel.form.submit());
});
