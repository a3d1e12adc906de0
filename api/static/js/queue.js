// Where the job stands while it waits: "Queued: position 4 — 3 jobs of higher priority
// ahead", read from the job's detail every few seconds while it is queued (the server
// renders the first one); a running job asked to make room for another says so (the
// stream's status events carry preempt_by); the priority fact. Text only, never HTML.
"use strict";

window.SeqtrainQueue = (function () {
  const { api, el } = window.Seqtrain;
  const POLL_MS = 3000;
  const root = document.getElementById("job");
  const base = "/api/v1/jobs/" + root.dataset.jobId;
  const note = document.getElementById("queue-note");
  const priority = document.getElementById("fact-priority");
  let timer = null;
  let reading = false;

  function showPriority(job) {
    if (job.priority === undefined) return;
    priority.replaceChildren(String(job.priority));
    if (job.preemptions) {
      priority.append(" ", el("span", { className: "muted" }, "· preempted " + job.preemptions + "×"));
    }
  }

  function showNote(kind, ...children) {
    note.dataset.kind = kind;
    note.replaceChildren(...children);
    note.hidden = children.length === 0;
  }

  // A running job: the note says whom it makes room for, or nothing.
  function showRoom(preemptBy) {
    if (!preemptBy) {
      showNote("");
      return;
    }
    showNote("room", "Asked to make room for ",
      el("a", { href: "/jobs/" + preemptBy }, "job " + preemptBy),
      ": checkpointing, then back in the queue");
  }

  // A job's detail (GET /api/v1/jobs/<id>): the priority, and the queue or room note.
  function show(job) {
    showPriority(job);
    if (job.status === "queued" && job.queue_position !== null && job.queue_position !== undefined) {
      showNote("queued", el("strong", {}, "Queued: position " + job.queue_position), " — " + job.wait_reason);
    } else if (job.status === "running") {
      showRoom(job.preempt_by);
    } else if (job.status !== "queued") {
      showNote("");
    }
    follow(job.status);
  }

  async function readDetail() {
    if (reading) return;
    reading = true;
    try {
      show(await api(base));
    } catch (error) {
      // The next read tries again; the note keeps what it said.
    } finally {
      reading = false;
    }
  }

  // Read the detail every POLL_MS while the job is queued; stop once it is not.
  function follow(status) {
    if (status === "queued" && timer === null) {
      timer = setInterval(readDetail, POLL_MS);
    } else if (status !== "queued" && timer !== null) {
      clearInterval(timer);
      timer = null;
    }
  }

  // A status event of the stream (or a polled detail): what it tells without another read.
  function status(job) {
    if (job.status === "running") showRoom(job.preempt_by);
    else if (job.status !== "queued") showNote("");
    if (job.status === "queued" && timer === null) readDetail();
    follow(job.status);
  }

  return { show, status };
})();
