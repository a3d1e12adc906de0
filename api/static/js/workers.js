// The workers page: GET /api/v1/workers every few seconds; what each worker holds.
"use strict";

(function () {
  const { api, el, time, duration, age } = window.Seqtrain;
  const REFRESH_MS = 3000;
  const workersBody = document.querySelector("#workers tbody");
  const queuesBody = document.querySelector("#queues tbody");
  const note = document.getElementById("workers-note");

  function devices(worker) {
    const names = (worker.devices || []).map((d) => {
      const memory = d.memory_bytes ? " (" + (d.memory_bytes / 2 ** 30).toFixed(0) + " GiB)" : "";
      return (d.name || worker.device_kind) + memory;
    });
    const summary = worker.device_count + " × " + worker.device_kind;
    return el("td", {}, summary, names.length ? el("div", { className: "muted small" }, names.join(", ")) : null);
  }

  // What the worker holds: the job it runs (name, owner, priority, since when) or the node
  // rank of a multi-node attempt it reserved; busy with a job you may not see; or idle.
  function currentJob(worker) {
    const job = worker.job;
    if (job) {
      const facts = [job.owner || "no owner", "priority " + job.priority];
      if (job.node_rank !== null) facts.push("node " + job.node_rank + " of " + job.nodes);
      if (job.since) facts.push("since " + time(job.since) + " (" + age(job.since) + " ago)");
      return el("td", { className: "holder", dataset: { job: String(job.id) } },
        el("a", { href: "/jobs/" + job.id }, "job " + job.id), " ", job.name,
        el("div", { className: "muted small" }, facts.join(" · ")),
        job.preempt_by
          ? el("div", { className: "small" }, "making room for ", el("a", { href: "/jobs/" + job.preempt_by }, "job " + job.preempt_by))
          : null);
    }
    if (worker.current_job_id !== null) {
      return el("td", {}, el("a", { href: "/jobs/" + worker.current_job_id }, "job " + worker.current_job_id));
    }
    return el("td", { className: "muted" }, worker.busy ? "busy (another user's job)" : "idle");
  }

  function row(worker) {
    const stale = worker.heartbeat_age_seconds > 30;
    return el(
      "tr",
      { dataset: { worker: worker.name } },
      el("td", {}, worker.name, el("div", { className: "muted small" }, worker.hostname + " · pid " + worker.pid)),
      el("td", {}, el("span", { className: "status status-" + worker.state }, worker.state)),
      devices(worker),
      el("td", { className: "wide" }, worker.queues.join(", ")),
      currentJob(worker),
      el("td", { className: stale ? "error" : "" }, duration(worker.heartbeat_age_seconds) + " ago"),
      el("td", { className: "wide", title: worker.started_at }, time(worker.started_at)),
    );
  }

  async function refresh() {
    try {
      const data = await api("/api/v1/workers");
      workersBody.replaceChildren(...data.workers.map(row));
      if (data.queues === null) {
        queuesBody.replaceChildren(el("tr", {}, el("td", { colSpan: 2, className: "error" }, "Redis does not answer")));
      } else {
        queuesBody.replaceChildren(
          ...Object.entries(data.queues).map(([name, depth]) =>
            el("tr", {}, el("td", {}, name), el("td", { className: "num" }, String(depth)))),
        );
      }
      note.textContent = data.workers.length + (data.workers.length === 1 ? " worker" : " workers")
        + " · updated " + new Date().toLocaleTimeString("en-GB");
    } catch (error) {
      note.textContent = "Could not refresh: " + error.message;
    }
    setTimeout(refresh, REFRESH_MS);
  }

  refresh();
})();
