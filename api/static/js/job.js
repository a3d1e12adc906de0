// One job: status, progress and charts live from GET /api/v1/jobs/<id>/stream (server-sent
// events fed by the trainer's Redis channel), or polled from the job's detail and /metrics
// while a stream is refused; the history from /metrics, the timeline from /events, the log
// followed through /logs, checkpoints, and the cancel / retry / predict actions; a seq2seq
// job's sample translations from /samples, reloaded after each validation's metrics; the
// place in the queue and why it waits (queue.js).
"use strict";

(function () {
  const { api, el, number, duration, percent, time } = window.Seqtrain;
  const root = document.getElementById("job");
  const jobId = root.dataset.jobId;
  const task = root.dataset.task;
  const base = "/api/v1/jobs/" + jobId;
  const METRIC = {
    classification: "accuracy", tagging: "f1", language_modeling: "perplexity", seq2seq: "bleu",
  }[task];
  // Not finished: a paused job (a sweep trial at a decision point) can still be cancelled.
  const ACTIVE = ["queued", "running", "paused"];
  const LOG_KEEP_CHARS = 200000;

  const $ = (id) => document.getElementById(id);
  let hasCheckpoint = false;
  const state = {
    status: $("job-status").textContent.trim(),
    lastMetricId: 0,
    lastEventId: 0,
    log: { attempt: null, shown: null, offset: 0, timer: null },
    stream: null,
  };

  // ------------------------------------------------------------ charts (uPlot, x = step)

  // One Map step -> value a series; a later value for a step replaces an earlier one.
  const series = { trainLoss: new Map(), valLoss: new Map(), metric: new Map() };

  function makeChart(node, labels, colors) {
    const opts = {
      width: Math.max(240, node.clientWidth),
      height: 220,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, {}],
      series: [{ label: "step" }].concat(labels.map((label, i) => ({
        label, stroke: colors[i], width: 2, spanGaps: true, points: { show: true, size: 4 },
      }))),
      legend: { show: true },
    };
    return new window.uPlot(opts, [[], ...labels.map(() => [])], node);
  }

  const lossNode = $("loss-chart");
  const metricNode = $("metric-chart");
  $("metric-caption").textContent = "Validation " + METRIC + " by step";
  const lossChart = makeChart(lossNode, ["train loss", "validation loss"], ["#2f6fde", "#d9822b"]);
  const metricChart = makeChart(metricNode, ["validation " + METRIC], ["#2e9e5b"]);

  function aligned(maps) {
    const steps = Array.from(new Set(maps.flatMap((m) => Array.from(m.keys())))).sort((a, b) => a - b);
    return [steps, ...maps.map((m) => steps.map((s) => (m.has(s) ? m.get(s) : null)))];
  }

  let drawPending = false;
  function redraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      lossChart.setData(aligned([series.trainLoss, series.valLoss]));
      metricChart.setData(aligned([series.metric]));
      lossNode.dataset.points = String(series.trainLoss.size + series.valLoss.size);
      metricNode.dataset.points = String(series.metric.size);
    });
  }

  function addMetrics(rows) {
    if (task === "seq2seq" && rows.some((row) => row.split !== "train")) scheduleSamples();
    for (const row of rows) {
      if (row.split === "train" && row.name === "loss") series.trainLoss.set(row.step, row.value);
      else if (row.split === "val" && row.name === "loss") series.valLoss.set(row.step, row.value);
      else if (row.split === "val" && row.name === METRIC) series.metric.set(row.step, row.value);
      else if (row.split === "train" && row.name === "tokens_per_s") $("fact-tokens").textContent = number(row.value, 3);
    }
    redraw();
  }

  async function loadMetrics() {
    for (;;) {
      const page = await api(base + "/metrics?limit=10000&after=" + state.lastMetricId);
      if (page.metrics.length) state.lastMetricId = page.metrics[page.metrics.length - 1].id;
      addMetrics(page.metrics);
      if (page.next_after === null) return;
    }
  }

  window.addEventListener("resize", () => {
    for (const [chart, node] of [[lossChart, lossNode], [metricChart, metricNode]]) {
      chart.setSize({ width: Math.max(240, node.clientWidth), height: 220 });
    }
  });

  // ------------------------------------------------------------ status, progress, timeline

  function showProgress(job) {
    const bar = $("job-progress");
    if (job.progress === null) bar.removeAttribute("value");
    else bar.value = job.progress;
    let label = percent(job.progress);
    if (job.status === "running" && job.eta_seconds !== null) label += " · about " + duration(job.eta_seconds) + " left";
    $("progress-label").textContent = label;
  }

  function showStatus(job) {
    const badge = $("job-status");
    badge.textContent = job.status;
    badge.className = "status status-" + job.status;
    $("fact-attempt").textContent = job.attempt + (job.max_attempts ? " of " + job.max_attempts : "");
    $("fact-step").textContent = job.epoch + " · " + job.step;
    const active = ACTIVE.includes(job.status);
    $("cancel-button").hidden = !active;
    $("cancel-button").disabled = Boolean(job.cancel_requested);
    $("retry-button").hidden = active;
    const error = $("job-error");
    error.hidden = !job.error;
    error.textContent = job.error || "";
    showProgress(job);
    window.SeqtrainQueue.status(job);
    const changed = job.status !== state.status;
    state.status = job.status;
    return changed;
  }

  async function loadDetail() {
    const job = await api(base);
    if (job.started_at) {
      const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
      $("fact-runtime").textContent = duration((end - Date.parse(job.started_at)) / 1000);
    }
    showTrial(job.sweep);
    window.SeqtrainQueue.show(job);
    const decoding = job.spec && job.spec.decoding;
    if (decoding) $("translate-beam").placeholder = String(decoding.beam_size);
    showPredict();
  }

  // A sweep's trial: "trial N of sweep S" under the title, linking to the sweep's page.
  function showTrial(sweep) {
    let note = $("job-sweep");
    if (!sweep) {
      if (note) note.remove();
      return;
    }
    if (!note) {
      note = el("p", { id: "job-sweep", className: "muted" });
      root.querySelector(".title-bar").after(note);
    }
    note.replaceChildren("trial " + sweep.number + " of ",
      el("a", { href: "/sweeps/" + sweep.id }, "sweep " + sweep.id));
  }

  async function loadEvents() {
    const data = await api(base + "/events?after=" + state.lastEventId);
    const list = $("timeline");
    for (const event of data.events) {
      if (event.id <= state.lastEventId) continue; // two reads may overlap
      state.lastEventId = event.id;
      const change = event.to_status
        ? el("span", {}, event.from_status ? event.from_status + " → " : "", el("span", { className: "status status-" + event.to_status }, event.to_status))
        : el("span", { className: "muted" }, "note");
      list.append(el(
        "li",
        { dataset: { to: event.to_status || "" } },
        el("time", { dateTime: event.ts, className: "muted small" }, time(event.ts)), " ",
        change, " ",
        el("span", { className: "pre-line" }, event.message),
        el("span", { className: "muted small" }, " · " + event.actor + (event.attempt ? ", attempt " + event.attempt : "")),
      ));
    }
  }

  async function loadCheckpoints() {
    const data = await api(base + "/checkpoints");
    const rows = data.checkpoints.map((c) => el(
      "tr", {},
      el("td", { className: "num" }, String(c.step)),
      el("td", { className: "num" }, String(c.epoch)),
      el("td", { className: "num" }, (c.bytes / 1024).toFixed(0) + " KiB"),
      el("td", { className: "wide" }, el("code", { title: c.sha256 }, c.sha256.slice(0, 12) + "…")),
      el("td", {}, el("a", { href: c.download_url, download: "" }, "download")),
    ));
    document.querySelector("#checkpoints tbody").replaceChildren(...rows);
    $("checkpoints-empty").hidden = rows.length > 0;
    hasCheckpoint = rows.length > 0;
    showPredict();
  }

  // ------------------------------------------------------------ the stream, or polling

  // A refused stream (429: the user's open streams are at SEQTRAIN_MAX_STREAMS_PER_USER, or
  // any other answer than a stream) closes for good; the page then polls the job's detail
  // and /metrics every POLL_MS, and tries a stream again after RESTREAM_MS.
  const POLL_MS = 2000;
  const RESTREAM_MS = 15000;
  const live = { poll: null, restream: null };

  function openStream() {
    stopPolling();
    if (state.stream) state.stream.close();
    const stream = new EventSource(base + "/stream");
    state.stream = stream;
    root.dataset.live = "stream";
    // Every (re)connect: fill what was written while no stream was open.
    stream.addEventListener("open", () => { loadMetrics().catch(() => {}); });
    stream.addEventListener("metrics", (event) => {
      addMetrics(JSON.parse(event.data));
    });
    stream.addEventListener("status", (event) => {
      const job = JSON.parse(event.data);
      if (showStatus(job)) onStatusChange();
      else loadMetrics().catch(() => {});
    });
    stream.addEventListener("end", () => {
      stream.close();
      state.stream = null;
      root.dataset.live = "ended";
      onStatusChange();
    });
    stream.addEventListener("error", () => {
      // EventSource reconnects by itself after a dropped stream; CLOSED means refused.
      if (stream.readyState !== EventSource.CLOSED || state.stream !== stream) return;
      state.stream = null;
      startPolling();
    });
  }

  function startPolling() {
    stopPolling();
    root.dataset.live = "polling";
    live.poll = setInterval(() => { pollOnce().catch(() => {}); }, POLL_MS);
    live.restream = setTimeout(() => {
      if (ACTIVE.includes(state.status)) openStream();
    }, RESTREAM_MS);
    pollOnce().catch(() => {});
  }

  function stopPolling() {
    clearInterval(live.poll);
    clearTimeout(live.restream);
    live.poll = live.restream = null;
  }

  async function pollOnce() {
    const job = await api(base);
    const progress = job.progress || {};
    const changed = showStatus({ ...job, progress: progress.fraction ?? null, eta_seconds: progress.eta_seconds ?? null });
    await loadMetrics();
    if (changed) onStatusChange();
    if (!ACTIVE.includes(job.status)) {
      stopPolling();
      root.dataset.live = "ended";
    }
  }

  function onStatusChange() {
    window.SeqtrainReport.refresh(state.status);
    loadEvents().catch(() => {});
    loadCheckpoints().catch(() => {});
    loadMetrics().catch(() => {});
    loadDetail().catch(() => {});
    if (task === "seq2seq") scheduleSamples();
    followLog();
  }

  // ------------------------------------------------------------ logs

  const logNode = $("log");
  const attemptSelect = $("log-attempt");

  function appendLog(text) {
    if (!text) return;
    const atBottom = logNode.scrollTop + logNode.clientHeight >= logNode.scrollHeight - 4;
    let content = logNode.textContent + text;
    if (content.length > LOG_KEEP_CHARS) content = content.slice(content.length - LOG_KEEP_CHARS);
    logNode.textContent = content;
    if (atBottom) logNode.scrollTop = logNode.scrollHeight;
  }

  function showAttempts(attempts) {
    const have = new Set(Array.from(attemptSelect.options).map((o) => o.value));
    for (const n of attempts) {
      if (!have.has(String(n))) attemptSelect.append(el("option", { value: String(n) }, "attempt " + n));
    }
  }

  // state.log.attempt: the attempt chosen in the select, or null to follow the latest;
  // state.log.shown: the attempt whose text the log box holds (null before any started).
  async function readLog() {
    clearTimeout(state.log.timer);
    const want = state.log.attempt;
    const reading = want !== null ? want : state.log.shown;
    let url = base + "/logs?offset=" + state.log.offset;
    if (reading) url += "&attempt=" + reading;
    let chunk;
    try {
      chunk = await api(url);
    } catch (error) {
      $("log-note").textContent = "Could not read the log: " + error.message;
      state.log.timer = setTimeout(pollLog, 3000);
      return;
    }
    if (want !== state.log.attempt) return; // the attempt was switched meanwhile
    showAttempts(chunk.attempts);
    if (chunk.attempt > 0 && state.log.shown === null) state.log.shown = chunk.attempt;
    appendLog(chunk.text);
    state.log.offset = chunk.next_offset;
    const latest = chunk.attempts.length ? Math.max(...chunk.attempts) : 0;
    if (want === null && chunk.complete && state.log.shown !== null && latest > state.log.shown) {
      // Following the latest attempt, and a newer one started: switch to it.
      state.log.shown = latest;
      state.log.offset = 0;
      appendLog("\n— attempt " + latest + " —\n");
      state.log.timer = setTimeout(pollLog, 0);
      return;
    }
    $("log-note").textContent = chunk.attempt === 0
      ? "No output yet: the job has not started."
      : "Attempt " + chunk.attempt + ", " + chunk.next_offset.toLocaleString("en") + " bytes"
        + (chunk.complete ? " (ended)" : " (following)");
    const finished = chunk.complete && !ACTIVE.includes(state.status);
    state.log.timer = finished ? null : setTimeout(pollLog, chunk.text.length >= 65536 ? 0 : 1000);
  }

  // One read at a time, so no chunk is appended twice; a call meanwhile reads again after.
  let logBusy = false;
  let logAgain = false;
  async function pollLog() {
    if (logBusy) {
      logAgain = true;
      return;
    }
    logBusy = true;
    try {
      await readLog();
    } finally {
      logBusy = false;
      if (logAgain) {
        logAgain = false;
        pollLog();
      }
    }
  }

  function followLog() {
    pollLog();
  }

  attemptSelect.addEventListener("change", () => {
    state.log.attempt = attemptSelect.value ? Number(attemptSelect.value) : null;
    state.log.shown = state.log.attempt;
    state.log.offset = 0;
    logNode.textContent = "";
    pollLog();
  });

  // ------------------------------------------------------------ actions

  const actionNote = $("action-note");

  $("cancel-button").addEventListener("click", async () => {
    $("cancel-button").disabled = true;
    actionNote.textContent = "Cancelling…";
    try {
      const job = await api(base + "/cancel", { method: "POST" });
      actionNote.textContent = job.status === "cancelled" ? "Cancelled." : "Cancel requested; stopping the trainer.";
      if (showStatus(job)) onStatusChange();
      if (!state.stream) openStream();
    } catch (error) {
      actionNote.textContent = "Could not cancel: " + error.message;
      $("cancel-button").disabled = false;
    }
  });

  $("retry-button").addEventListener("click", async () => {
    $("retry-button").disabled = true;
    actionNote.textContent = "Submitting a new job…";
    try {
      const created = await api(base + "/retry", { method: "POST" });
      window.location.assign("/jobs/" + created.id);
    } catch (error) {
      actionNote.textContent = "Could not retry: " + error.message;
      $("retry-button").disabled = false;
    }
  });

  // ------------------------------------------------------------ predictions / generation

  const predictBox = $("predict-box");

  function showPredict() {
    predictBox.hidden = !(hasCheckpoint && !ACTIVE.includes(state.status));
    window.SeqtrainOutputs.show(!predictBox.hidden);
  }

  if (task === "language_modeling") {
    $("predict-title").textContent = "Generate text";
    $("predict-label").textContent = "Prompt";
    $("generate-options").hidden = false;
  } else if (task === "seq2seq") {
    $("predict-title").textContent = "Translate";
    $("predict-label").textContent = "Source texts, one per line";
    $("predict-button").textContent = "Translate";
    $("translate-options").hidden = false;
  } else {
    $("predict-title").textContent = task === "tagging" ? "Tag sentences" : "Classify texts";
  }

  function predictionTable(predictions) {
    if (task === "tagging") {
      return el("div", {}, ...predictions.map((p) => el(
        "p", { className: "tagged" },
        ...p.tokens.map((token, i) => el("span", { className: "tag-pair" }, token, el("sub", {}, p.tags[i]))),
      )));
    }
    return el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "text"), el("th", {}, "label"), el("th", {}, "probability"))),
      el("tbody", {}, ...predictions.map((p, i) => el("tr", {},
        el("td", {}, predictionTable.texts[i] || ""),
        el("td", {}, p.label),
        el("td", { className: "num" }, number(p.probabilities ? p.probabilities[p.label] : null, 3)),
      ))));
  }

  // Each source with its translation and score (its log-probability over the length penalty).
  function translationList(result) {
    return el("ol", { className: "translations" }, ...result.translations.map((t) => el(
      "li", {},
      el("div", { className: "muted small pre-line" }, t.text),
      el("div", { className: "pre-line translation" }, t.translation),
      el("div", { className: "muted small" }, "score " + number(t.score, 3) + " · beam " + result.beam_size),
    )));
  }

  async function translate(input) {
    const texts = input.split("\n").map((t) => t.trim()).filter(Boolean);
    const beam = $("translate-beam").value;
    const body = { texts };
    if (beam !== "") body.beam_size = Number(beam);
    const result = await api(base + "/translate", { method: "POST", body });
    $("predict-output").replaceChildren(translationList(result));
  }

  $("predict-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("predict-input").value;
    const errorNode = $("predict-error");
    errorNode.hidden = true;
    $("predict-button").disabled = true;
    try {
      if (task === "language_modeling") {
        const result = await api(base + "/generate", {
          method: "POST",
          body: { prompt: input, length: Number($("generate-length").value), temperature: Number($("generate-temperature").value) },
        });
        $("predict-output").replaceChildren(el("pre", { className: "generated" }, el("strong", {}, result.prompt), result.text));
      } else if (task === "seq2seq") {
        await translate(input);
      } else {
        const texts = input.split("\n").map((t) => t.trim()).filter(Boolean);
        predictionTable.texts = texts;
        const result = await api(base + "/predict", { method: "POST", body: { texts } });
        $("predict-output").replaceChildren(predictionTable(result.predictions));
      }
    } catch (error) {
      errorNode.textContent = error.fields && error.fields.length
        ? error.fields.map((f) => (f.path ? f.path + ": " : "") + f.message).join("; ")
        : error.message;
      errorNode.hidden = false;
    } finally {
      $("predict-button").disabled = false;
    }
  });

  // ------------------------------------------------------------ sample translations (seq2seq)

  const samplesBox = $("translation-samples");

  function sampleGroup(sample) {
    return el("div", { className: "sample-group" },
      el("h3", {}, "Epoch " + sample.epoch + " · step " + sample.step
        + (sample.split === "test" ? " (test)" : "") + (sample.attempt > 1 ? " · attempt " + sample.attempt : "")),
      // The sacrebleu signature that epoch's BLEU was computed with (the same for each item).
      el("p", { className: "muted small signature" },
        sample.items.length && sample.items[0].signature ? "BLEU signature " + sample.items[0].signature : ""),
      el("div", { className: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, el("th", {}, "source"), el("th", {}, "reference"), el("th", {}, "hypothesis"))),
        el("tbody", {}, ...sample.items.map((item) => el("tr", {},
          el("td", { className: "pre-line" }, item.source),
          el("td", { className: "pre-line" }, item.reference),
          el("td", { className: "pre-line" }, item.hypothesis),
        ))))));
  }

  async function loadSamples() {
    const data = await api(base + "/samples");
    $("translation-samples-body").replaceChildren(...data.samples.map(sampleGroup));
    $("translation-samples-empty").hidden = data.samples.length > 0;
    samplesBox.dataset.count = String(data.samples.length);
  }

  // Metrics of a validation arrive in bursts: one read of /samples per burst.
  let samplesTimer = null;
  function scheduleSamples() {
    clearTimeout(samplesTimer);
    samplesTimer = setTimeout(() => { loadSamples().catch(() => {}); }, 300);
  }

  // ------------------------------------------------------------ start

  if (task === "seq2seq") {
    samplesBox.hidden = false;
    loadSamples().catch(() => {});
  }

  loadDetail().catch(() => {});
  loadEvents().catch(() => {});
  loadCheckpoints().catch(() => {});
  loadMetrics().catch(() => {});
  pollLog();
  openStream();
  window.SeqtrainReport.refresh(state.status);
})();
