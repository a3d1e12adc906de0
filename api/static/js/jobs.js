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

  function row(job) {
    const link = el("a", { href: "/jobs/" + job.id, className: "job-name" }, job.name);
    const metric = job.metric_value === null ? "–" : job.metric_name + " " + number(job.metric_value);
    return el(
      "tr",
      { dataset: { jobId: String(job.id), status: job.status } },
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
