// The jobs page: GET /api/v1/jobs/board with the filters in the URL, refreshed every few
// seconds without a reload.
"use strict";

(function () {
  const { api, el, number, age, percent, duration, statusBadge } = window.Seqtrain;
  const REFRESH_MS = 3000;
  const form = document.getElementById("filters");
  const body = document.querySelector("#jobs tbody");
  const note = document.getElementById("jobs-note");
  const prev = document.getElementById("prev");
  const next = document.getElementById("next");
  const pageLabel = document.getElementById("page-label");
  const state = { page: 1, pages: 1, timer: null, generation: 0 };
  // Jobs ticked for comparison, in the order ticked; kept across refreshes and pages.
  // (sessionStorage: also across a reload and the way back from the comparison).
  const SELECTED_KEY = "seqtrain.compare";
  const selected = new Set(readSelection());
  const compareButton = document.getElementById("compare-button");
  const COMPARE_MIN = 2;
  const COMPARE_MAX = 8;

  // Filters live in the URL, so a reload or a shared link shows the same view.
  const params = new URLSearchParams(window.location.search);
  for (const name of ["status", "q", "sort"]) {
    if (params.get(name)) form.elements[name].value = params.get(name);
  }
  state.page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);

  function query() {
    const q = new URLSearchParams();
    for (const name of ["status", "q", "sort"]) {
      const value = form.elements[name].value.trim();
      if (value) q.set(name, value);
    }
    if (state.page > 1) q.set("page", String(state.page));
    return q;
  }

  function progressCell(job) {
    const bar = el("progress", { max: 1, value: job.progress === null ? 0 : job.progress });
    if (job.progress === null) bar.removeAttribute("value");
    const label = job.status === "running" && job.eta_seconds !== null
      ? percent(job.progress) + " · " + duration(job.eta_seconds) + " left"
      : percent(job.progress);
    return el("td", { className: "progress-cell" }, bar, " ", el("span", { className: "muted" }, label));
  }

  function readSelection() {
    try {
      const ids = JSON.parse(sessionStorage.getItem(SELECTED_KEY) || "[]");
      return Array.isArray(ids) ? ids.filter((id) => Number.isInteger(id) && id > 0) : [];
    } catch (e) {
      return [];
    }
  }

  function showSelection() {
    try {
      sessionStorage.setItem(SELECTED_KEY, JSON.stringify(Array.from(selected)));
    } catch (e) {
      // storage full or disabled: the selection lives in the page only
    }
    compareButton.textContent = "Compare (" + selected.size + ")";
    compareButton.disabled = selected.size < COMPARE_MIN || selected.size > COMPARE_MAX;
    compareButton.title = selected.size > COMPARE_MAX ? "At most " + COMPARE_MAX + " jobs" : "Select 2 to 8 jobs to compare";
  }

  function selectCell(job) {
    const box = el("input", { type: "checkbox", className: "select-job", checked: selected.has(job.id), "aria-label": "select job " + job.id });
    box.addEventListener("change", () => {
      if (box.checked) selected.add(job.id);
      else selected.delete(job.id);
      showSelection();
    });
    return el("td", { className: "select-cell" }, box);
  }

  compareButton.addEventListener("click", () => {
    window.location.assign("/compare?jobs=" + Array.from(selected).join(","));
  });
  showSelection();

  function row(job) {
    const link = el("a", { href: "/jobs/" + job.id, className: "job-name" }, job.name);
    const metric = job.metric_value === null ? "–" : job.metric_name + " " + number(job.metric_value);
    return el(
      "tr",
      { dataset: { jobId: String(job.id), status: job.status } },
      selectCell(job),
      el("td", { className: "name-cell" }, el("span", { className: "muted" }, "#" + job.id + " "), link),
      el("td", {}, statusBadge(job.status)),
      el("td", { className: "wide" }, job.model_type),
      el("td", { className: "wide" }, job.task),
      progressCell(job),
      el("td", { className: "num" }, number(job.latest_loss)),
      el("td", { className: "num wide" }, metric),
      el("td", { className: "wide" }, job.owner || "–"),
      el("td", { className: "wide", title: job.created_at }, age(job.created_at)),
    );
  }

  async function refresh() {
    clearTimeout(state.timer);
    const generation = ++state.generation;
    const q = query();
    history.replaceState(null, "", q.toString() ? "?" + q : window.location.pathname);
    try {
      const board = await api("/api/v1/jobs/board?" + q);
      if (generation !== state.generation) return; // a newer request superseded this one
      if (board.jobs.length === 0 && state.page > 1 && board.total > 0) {
        state.page = board.pages;
        return refresh();
      }
      state.pages = board.pages;
      body.replaceChildren(...board.jobs.map(row));
      note.textContent = board.total === 0
        ? "No jobs match."
        : board.total + (board.total === 1 ? " job" : " jobs") + " · updated " + new Date().toLocaleTimeString("en-GB");
      pageLabel.textContent = "page " + board.page + " of " + board.pages;
      prev.disabled = board.page <= 1;
      next.disabled = board.page >= board.pages;
    } catch (error) {
      if (generation !== state.generation) return;
      note.textContent = "Could not refresh: " + error.message;
    }
    state.timer = setTimeout(refresh, REFRESH_MS);
  }

  let typing = null;
  form.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.page = 1; refresh(); }, 250);
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); state.page = 1; refresh(); });
  prev.addEventListener("click", () => { state.page = Math.max(1, state.page - 1); refresh(); });
  next.addEventListener("click", () => { state.page = Math.min(state.pages, state.page + 1); refresh(); });
  refresh();
})();
