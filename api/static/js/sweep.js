// One sweep: its settings and counts, the best trial (cloned as a job on request), the
// objective by trial and each parameter against the objective (plain SVG), and the trials
// table, all from GET /api/v1/sweeps/<id>, polled every 2 s while the sweep runs.
"use strict";

(function () {
  const { api, el, number, statusBadge } = window.Seqtrain;
  const $ = (id) => document.getElementById(id);
  const root = $("sweep");
  const sweepId = root.dataset.sweepId;
  const base = "/api/v1/sweeps/" + sweepId;
  const POLL_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const INSET = 12;
  const COUNT_ORDER = ["running", "queued", "paused", "succeeded", "pruned", "failed", "cancelled"];
  const FINISHED = ["succeeded", "failed", "cancelled", "pruned"];
  let current = null; // the newest sweep JSON

  // ------------------------------------------------------------ formatting

  function show(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "number") return number(value, 4);
    return String(value);
  }

  function arrow(objective) {
    return objective.direction === "maximize" ? "maximize ↑" : "minimize ↓";
  }

  function pruner(p) {
    if (p.type === "none") return "none";
    const parts = [p.unit + " from " + p.min_resource, "×" + p.reduction_factor];
    if (p.type === "median") parts.push(p.startup_trials + " startup trials");
    return p.type + " (" + parts.join(", ") + ")";
  }

  // ------------------------------------------------------------ SVG charts

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  // Round tick values covering [lo, hi]: about `count` of them, at 1, 2 or 5 times a power of 10.
  function ticks(lo, hi, count) {
    const span = hi - lo;
    if (!(span > 0)) return [lo];
    const raw = span / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
    return out;
  }

  function padded(values) {
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    const pad = hi > lo ? (hi - lo) * 0.08 : Math.abs(lo) * 0.05 || 0.5;
    return [lo - pad, hi + pad];
  }

  // An axis: map(value) -> pixel, its ticks [value, label], and its bands (categorical).
  function linearAxis(lo, hi, a, b, count) {
    const map = (v) => a + ((v - lo) / (hi - lo || 1)) * (b - a);
    return { map, ticks: ticks(lo, hi, count).map((t) => [t, number(t, 3)]) };
  }

  function logAxis(lo, hi, a, b) {
    const l0 = Math.log10(lo);
    const l1 = Math.log10(hi);
    const map = (v) => a + ((Math.log10(Math.max(v, lo)) - l0) / (l1 - l0 || 1)) * (b - a);
    let values = [];
    for (let e = Math.ceil(l0 - 1e-9); e <= l1 + 1e-9; e++) values.push(Math.pow(10, e));
    if (values.length < 2) values = [lo, hi];
    return { map, ticks: values.map((t) => [t, number(t, 2)]), log: true };
  }

  function bandAxis(choices, a, b) {
    const keys = choices.map((c) => JSON.stringify(c));
    const width = (b - a) / Math.max(1, choices.length);
    const center = (v) => a + width * (keys.indexOf(JSON.stringify(v)) + 0.5);
    return { map: center, width, start: a, bands: choices, ticks: choices.map((c) => [c, show(c)]) };
  }

  function xAxisFor(param, a, b) {
    if (param.type === "categorical") return bandAxis(param.choices, a, b);
    if (param.log && param.low > 0) return logAxis(param.low, param.high, a, b);
    return linearAxis(param.low, param.high, a, b, 4);
  }

  // Jitter inside a band, fixed per trial, so points of one choice do not sit on each other.
  function jitter(number_, width) {
    return (((number_ * 0.618034) % 1) - 0.5) * width * 0.6;
  }

  function short(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  // Draw a scatter chart into `node`: points [{x, y, trial}], x from `makeX(a, b)`.
  function scatter(node, points, makeX, options) {
    const width = Math.max(220, Math.floor(node.clientWidth || 300));
    const height = options.height;
    const m = { left: 54, right: 12, top: 10, bottom: options.xLabel ? 40 : 26 };
    const x = makeX(m.left + INSET, width - m.right - INSET); // no point half outside the frame
    const ys = points.map((p) => p.y);
    const [ylo, yhi] = ys.length ? padded(ys) : [0, 1];
    const y = linearAxis(ylo, yhi, height - m.bottom, m.top, 4);
    const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", "aria-label": options.label });
    chart.append(svg("rect", { x: m.left, y: m.top, width: width - m.left - m.right, height: height - m.top - m.bottom, class: "frame" }));
    (x.bands || []).forEach((choice, i) => {
      if (i % 2) chart.append(svg("rect", { x: x.start + i * x.width, y: m.top, width: x.width, height: height - m.top - m.bottom, class: "band" }));
    });
    for (const [value, label] of y.ticks) {
      chart.append(svg("line", { x1: m.left, x2: width - m.right, y1: y.map(value), y2: y.map(value), class: "grid" }));
      chart.append(svg("text", { x: m.left - 4, y: y.map(value) + 3, "text-anchor": "end", class: "tick" }, label));
    }
    const room = x.bands ? Math.max(3, Math.floor(x.width / 7)) : 12;
    for (const [value, label] of x.ticks) {
      const text = svg("text", { x: x.map(value), y: height - m.bottom + 13, "text-anchor": "middle", class: "tick" }, short(label, room));
      if (label.length > room) text.append(svg("title", {}, label));
      chart.append(text);
    }
    if (options.xLabel) chart.append(svg("text", { x: (m.left + width - m.right) / 2, y: height - 6, "text-anchor": "middle", class: "axis-label" }, options.xLabel));
    if (options.line && options.line.length) {
      const path = options.line.map(([lx, ly], i) => (i ? "H" + x.map(lx) + "V" : "M" + x.map(lx) + ",") + y.map(ly)).join("");
      chart.append(svg("path", { d: path + "H" + (width - m.right), class: "best-line" }));
    }
    for (const p of points) {
      const cx = x.map(p.x) + (x.bands ? jitter(p.trial.number, x.width) : 0);
      const classes = "point status-" + p.trial.status + (p.trial.status === "pruned" ? " pruned" : "") + (p.best ? " best" : "");
      chart.append(svg("circle", { cx, cy: y.map(p.y), r: p.best ? 5.5 : 4, class: classes, "data-trial": p.trial.number },
        svg("title", {}, "trial " + p.trial.number + " (" + p.trial.status + "): " + show(p.x) + " → " + show(p.y))));
    }
    chart.dataset.points = String(points.length);
    node.dataset.points = String(points.length);
    node.replaceChildren(chart);
  }

  function scored(sweep) {
    const bestNumber = sweep.best_trial ? sweep.best_trial.number : null;
    return sweep.trials
      .filter((t) => typeof t.value === "number" && isFinite(t.value))
      .map((t) => ({ trial: t, y: t.value, best: t.number === bestNumber }));
  }

  // Best so far over the trials that finished training: [trial number, value] at each change.
  function bestSoFar(sweep) {
    const better = sweep.objective.direction === "maximize" ? (a, b) => a > b : (a, b) => a < b;
    const line = [];
    for (const t of sweep.trials) {
      if (t.status !== "succeeded" || typeof t.value !== "number") continue;
      if (!line.length || better(t.value, line[line.length - 1][1])) line.push([t.number, t.value]);
    }
    return line;
  }

  function drawCharts(sweep) {
    const points = scored(sweep);
    const last = Math.max(1, ...sweep.trials.map((t) => t.number));
    scatter($("objective-chart"), points.map((p) => ({ ...p, x: p.trial.number })),
      (a, b) => linearAxis(-0.5, last + 0.5, a, b, Math.min(last, 8)),
      { height: 230, xLabel: "trial", label: sweep.objective.metric + " by trial", line: bestSoFar(sweep) });

    const holder = $("param-charts");
    const paths = Object.keys(sweep.parameters);
    const have = Array.from(holder.children).map((f) => f.dataset.param);
    if (have.join("\n") !== paths.join("\n")) {
      holder.replaceChildren(...paths.map((path) => el("figure", { className: "param-figure", dataset: { param: path } },
        el("figcaption", {}, el("code", {}, path), " ", el("span", { className: "muted small" }, describe(sweep.parameters[path]))),
        el("div", { className: "svg-chart param-chart", dataset: { points: "0" } }))));
    }
    for (const figure of holder.children) {
      const path = figure.dataset.param;
      const param = sweep.parameters[path];
      const mine = points.filter((p) => p.trial.params[path] !== undefined && p.trial.params[path] !== null)
        .map((p) => ({ ...p, x: p.trial.params[path] }));
      scatter(figure.querySelector(".param-chart"), mine, (a, b) => xAxisFor(param, a, b),
        { height: 180, label: path + " against " + sweep.objective.metric });
      figure.dataset.scale = param.type === "categorical" ? "bands" : param.log ? "log" : "linear";
    }
  }

  function describe(param) {
    if (param.type === "categorical") return param.choices.length + " choices";
    return param.type + " " + show(param.low) + " – " + show(param.high) + (param.log ? ", log" : "") + (param.step ? ", step " + show(param.step) : "");
  }

  // ------------------------------------------------------------ header, best trial, table

  function showHeader(sweep) {
    $("sweep-name").textContent = sweep.name;
    const badge = $("sweep-status");
    badge.textContent = sweep.status;
    badge.className = "status status-" + sweep.status;
    $("fact-objective").textContent = sweep.objective.metric + " · " + arrow(sweep.objective);
    $("fact-sampler").textContent = sweep.sampler + " · seed " + sweep.seed;
    $("fact-pruner").textContent = pruner(sweep.pruner);
    const done = FINISHED.reduce((sum, s) => sum + (sweep.counts[s] || 0), 0);
    $("fact-trials").textContent = done + " of " + sweep.max_trials + " done · " + sweep.max_parallel + " at a time";
    $("fact-epochs").textContent = number(sweep.epochs_trained, 3);
    $("sweep-counts").replaceChildren(...COUNT_ORDER.filter((s) => sweep.counts[s])
      .map((s) => el("span", { className: "count", dataset: { status: s } }, statusBadge(s), " " + sweep.counts[s])));
    const error = $("sweep-error");
    error.hidden = !sweep.error;
    error.textContent = sweep.error || "";
    const cancel = $("cancel-sweep");
    cancel.hidden = sweep.status !== "running";
    cancel.disabled = Boolean(sweep.cancel_requested);
    if (sweep.cancel_requested && sweep.status === "running") $("sweep-note").textContent = "Cancel requested; the trials are stopping.";
    else if (sweep.status !== "running") $("sweep-note").textContent = "";
  }

  function showBest(sweep) {
    const best = sweep.best_trial;
    $("best").hidden = !best;
    $("best-none").hidden = Boolean(best);
    if (!best) return;
    $("best").dataset.trial = String(best.number);
    $("best-summary").textContent = "Trial " + best.number + ": " + sweep.objective.metric + " " + show(best.value);
    const link = $("best-job");
    link.hidden = best.job_id === null;
    link.href = "/jobs/" + best.job_id;
    link.textContent = "job " + best.job_id;
    $("best-params").replaceChildren(...Object.entries(best.params).map(([path, value]) =>
      el("div", {}, el("dt", {}, path), el("dd", {}, show(value)))));
    $("clone-best").disabled = best.job_id === null || cloning;
  }

  function showTrials(sweep) {
    const paths = Object.keys(sweep.parameters);
    const head = document.querySelector("#trials thead tr");
    head.replaceChildren(el("th", {}, "#"), el("th", {}, "Status"),
      ...paths.map((p) => el("th", { className: "param-head" }, p)),
      el("th", {}, sweep.objective.metric), el("th", {}, "Epochs"), el("th", {}, "Job"));
    const bestNumber = sweep.best_trial ? sweep.best_trial.number : null;
    const rows = sweep.trials.map((t) => el(
      "tr",
      { dataset: { trial: String(t.number), status: t.status }, className: t.number === bestNumber ? "best-row" : "" },
      el("td", { className: "num" }, String(t.number)),
      el("td", { className: "status-cell" }, statusBadge(t.status), t.held ? el("span", { className: "muted small" }, " held") : null,
        t.error ? el("div", { className: "error small trial-error" }, t.error) : null),
      ...paths.map((p) => el("td", { className: typeof t.params[p] === "number" ? "num param" : "param" }, show(t.params[p]))),
      el("td", { className: "num value" }, show(t.value)),
      el("td", { className: "num" }, number(t.epochs_trained, 3) + " / " + t.epochs),
      el("td", {}, t.job_id === null ? "–" : el("a", { href: "/jobs/" + t.job_id }, "#" + t.job_id)),
    ));
    document.querySelector("#trials tbody").replaceChildren(...rows);
    $("trials-empty").hidden = rows.length > 0;
  }

  function render(sweep) {
    current = sweep;
    showHeader(sweep);
    showBest(sweep);
    showTrials(sweep);
    drawCharts(sweep);
    root.dataset.status = sweep.status;
    root.dataset.trials = String(sweep.trials.length);
  }

  // ------------------------------------------------------------ live

  let timer = null;
  async function load() {
    clearTimeout(timer);
    try {
      render(await api(base));
    } catch (error) {
      $("sweep-note").textContent = "Could not refresh: " + error.message;
    }
    const running = !current || current.status === "running";
    root.dataset.live = running ? "polling" : "ended";
    if (running) timer = setTimeout(load, POLL_MS);
  }

  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (current) drawCharts(current); }, 100);
  });

  // ------------------------------------------------------------ actions

  $("cancel-sweep").addEventListener("click", async () => {
    $("cancel-sweep").disabled = true;
    $("sweep-note").textContent = "Cancelling…";
    try {
      render(await api(base + "/cancel", { method: "POST" }));
      load();
    } catch (error) {
      $("sweep-note").textContent = "Could not cancel: " + error.message;
      $("cancel-sweep").disabled = false;
    }
  });

  // The best trial's job spec (its sampled values set) as a new job, under a new name.
  let cloning = false;
  $("clone-best").addEventListener("click", async () => {
    const best = current && current.best_trial;
    if (!best || best.job_id === null) return;
    const note = $("clone-note");
    cloning = true;
    $("clone-best").disabled = true;
    note.textContent = "Submitting a new job…";
    try {
      const job = await api("/api/v1/jobs/" + best.job_id);
      const spec = { ...job.spec, name: (current.name.slice(0, 160) + " best (trial " + best.number + ")") };
      const created = await api("/api/v1/jobs", { method: "POST", body: spec });
      window.location.assign("/jobs/" + created.id);
    } catch (error) {
      note.textContent = "Could not clone: " + (error.fields && error.fields.length
        ? error.fields.map((f) => (f.path ? f.path + ": " : "") + f.message).join("; ")
        : error.message);
      cloning = false;
      $("clone-best").disabled = false;
    }
  });

  load();
})();
