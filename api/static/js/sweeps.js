// The sweeps page: GET /api/v1/sweeps (the caller's; an admin's everyone's), refreshed
// every few seconds while any of them runs.
"use strict";

(function () {
  const { api, el, number, age, statusBadge } = window.Seqtrain;
  const REFRESH_MS = 3000;
  const FINISHED = ["succeeded", "failed", "cancelled", "pruned"];
  const body = document.querySelector("#sweeps tbody");
  const note = document.getElementById("sweeps-note");

  function trialsDone(sweep) {
    return FINISHED.reduce((sum, status) => sum + (sweep.counts[status] || 0), 0);
  }

  function bestCell(sweep) {
    const best = sweep.best_trial;
    if (!best || best.value === null) return el("td", { className: "num" }, "–");
    return el("td", { className: "num", title: "trial " + best.number }, number(best.value));
  }

  function row(sweep) {
    const objective = sweep.objective.metric + " (" + (sweep.objective.direction === "maximize" ? "max" : "min") + ")";
    return el(
      "tr",
      { dataset: { sweepId: String(sweep.id), status: sweep.status } },
      el("td", { className: "name-cell" }, el("span", { className: "muted" }, sweep.id + " "),
        el("a", { href: "/sweeps/" + sweep.id, className: "job-name" }, sweep.name)),
      el("td", {}, statusBadge(sweep.status)),
      el("td", { className: "num trials-done" }, trialsDone(sweep) + " / " + sweep.max_trials),
      bestCell(sweep),
      el("td", { className: "wide" }, objective),
      el("td", { className: "wide" }, sweep.owner || "–"),
      el("td", { className: "wide", title: sweep.created_at }, age(sweep.created_at) + " ago"),
    );
  }

  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    let running = true;
    try {
      const data = await api("/api/v1/sweeps?limit=200");
      body.replaceChildren(...data.sweeps.map(row));
      note.textContent = data.sweeps.length === 0
        ? "No sweeps yet."
        : data.sweeps.length + (data.sweeps.length === 1 ? " sweep" : " sweeps") + " · updated " + new Date().toLocaleTimeString("en-GB");
      running = data.sweeps.some((s) => s.status === "running");
    } catch (error) {
      note.textContent = "Could not refresh: " + error.message;
    }
    if (running) timer = setTimeout(refresh, REFRESH_MS);
  }
  refresh();
})();
