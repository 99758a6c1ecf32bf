// A dataset's page: its counts table sorts by clicking a header.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("counts-table");
  if (table) makeSortable(table);
});
