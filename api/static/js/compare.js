// The comparison page: /compare?jobs=3,5,9 reads GET /api/v1/compare (summaries, final and
// best metrics, spec differences) and each job's /metrics, and overlays every job's curve
// on one chart per metric, by step, epoch or wall time since the job's start. The URL is
// the shareable link: the x axis is kept in it too.
"use strict";

(function () {
  const { api, el, number, duration, time, statusBadge } = window.Seqtrain;
  const COLORS = ["#2f6fde", "#d9822b", "#2e9e5b", "#b3261e", "#7b4fc9", "#0f8b8d", "#c2408f", "#6b7280"];
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);
  const axis = $("x-axis");
  const state = { jobs: [], rows: new Map(), charts: [] };
  if (["step", "epoch", "time"].includes(params.get("x"))) axis.value = params.get("x");

  // ------------------------------------------------------------ data

  async function allMetrics(jobId) {
    const rows = [];
    let after = 0;
    for (;;) {
      const page = await api("/api/v1/jobs/" + jobId + "/metrics?limit=10000&after=" + after);
      rows.push(...page.metrics);
      if (page.next_after === null) return rows;
      after = page.next_after;
    }
  }

  // "val" metrics first, then the train loss, then the rest, each group by name.
  function metricOrder(key) {
    const [split, name] = key.split("/");
    return [split === "val" ? 0 : name === "loss" ? 1 : 2, key];
  }
  const byOrder = (a, b) => {
    const [ga, ka] = metricOrder(a);
    const [gb, kb] = metricOrder(b);
    return ga - gb || (ka < kb ? -1 : ka > kb ? 1 : 0);
  };

  function xOf(row, job) {
    if (axis.value === "epoch") return row.epoch;
    if (axis.value === "time") {
      const start = Date.parse(job.started_at || job.created_at);
      return Math.max(0, (Date.parse(row.ts) - start) / 1000);
    }
    return row.step;
  }

  // key -> [x values, one series per job]; a later row at the same x replaces an earlier.
  function curves() {
    const keys = new Set();
    const perJob = state.jobs.map((job) => {
      const maps = new Map();
      for (const row of state.rows.get(job.id) || []) {
        const key = row.split + "/" + row.name;
        keys.add(key);
        if (!maps.has(key)) maps.set(key, new Map());
        maps.get(key).set(xOf(row, job), row.value);
      }
      return maps;
    });
    return Array.from(keys).sort(byOrder).map((key) => {
      const maps = perJob.map((m) => m.get(key) || new Map());
      const xs = Array.from(new Set(maps.flatMap((m) => Array.from(m.keys())))).sort((a, b) => a - b);
      return { key, maps, data: [xs, ...maps.map((m) => xs.map((x) => (m.has(x) ? m.get(x) : null)))] };
    });
  }

  // ------------------------------------------------------------ charts

  // A y tick short enough for the axis: 203,300 -> 203k.
  function tick(value) {
    const size = Math.abs(value);
    if (size >= 1e6) return number(value / 1e6, 3) + "M";
    if (size >= 1e4) return number(value / 1e3, 3) + "k";
    return number(value, 3);
  }

  function drawCharts() {
    for (const chart of state.charts) chart.destroy();
    state.charts = [];
    const label = { step: "step", epoch: "epoch", time: "seconds since start" }[axis.value];
    const drawn = curves().map(({ key, maps, data }) => {
      const node = el("div", { className: "chart", dataset: { metric: key, series: String(maps.filter((m) => m.size).length) } });
      return { node, data, figure: el("figure", { dataset: { metric: key } }, el("figcaption", {}, key), node) };
    });
    // In the page first, so each chart takes its column's width.
    $("compare-charts").replaceChildren(...drawn.map((d) => d.figure));
    for (const { node, data } of drawn) {
      const series = [{ label }].concat(state.jobs.map((job, i) => ({
        label: "#" + job.id + " " + job.name, stroke: COLORS[i % COLORS.length], width: 2,
        spanGaps: true, points: { show: true, size: 4 },
      })));
      state.charts.push(new window.uPlot({
        width: Math.max(240, node.clientWidth), height: 220,
        scales: { x: { time: false } }, axes: [{ label }, { size: 56, values: (u, ticks) => ticks.map(tick) }],
        series, legend: { show: true },
      }, data, node));
    }
  }

  window.addEventListener("resize", () => {
    for (const chart of state.charts) {
      const node = chart.root.parentNode;
      chart.setSize({ width: Math.max(240, node.clientWidth), height: 220 });
    }
  });

  axis.addEventListener("change", () => {
    params.set("x", axis.value);
    history.replaceState(null, "", "?" + params);
    drawCharts();
  });

  // ------------------------------------------------------------ tables

  function swatch(i) {
    const dot = el("span", { className: "swatch", "aria-hidden": "true" });
    dot.style.backgroundColor = COLORS[i % COLORS.length];
    return dot;
  }

  function jobHead() {
    return el("tr", {}, el("th", {}, ""), ...state.jobs.map((job, i) => el(
      "th", { dataset: { jobId: String(job.id) } }, swatch(i), el("a", { href: "/jobs/" + job.id }, "#" + job.id), " ", el("span", { className: "job-name" }, job.name))));
  }

  function summaryRows(body) {
    $("compare-jobs").querySelector("tbody").replaceChildren(...body.jobs.map((job, i) => {
      const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
      const ran = job.started_at ? duration((end - Date.parse(job.started_at)) / 1000) : "–";
      return el("tr", { dataset: { jobId: String(job.id) } },
        el("td", { className: "name-cell" }, swatch(i), el("span", { className: "muted" }, "#" + job.id + " "), el("a", { href: "/jobs/" + job.id, className: "job-name" }, job.name)),
        el("td", {}, statusBadge(job.status)), el("td", {}, job.task), el("td", {}, job.model_type),
        el("td", { className: "wide" }, time(job.created_at)), el("td", { className: "wide" }, ran));
    }));
  }

  // The job whose best value of `key` is the best (null when fewer than two have one).
  function winner(body, key) {
    const have = body.jobs.filter((job) => job.best[key]);
    if (have.length < 2) return null;
    const lower = body.directions[key] === "min";
    return have.reduce((a, b) => ((lower ? b.best[key].value < a.best[key].value : b.best[key].value > a.best[key].value) ? b : a)).id;
  }

  function metricsTable(body) {
    const keys = Array.from(new Set(body.jobs.flatMap((job) => Object.keys(job.final)))).sort(byOrder);
    const table = $("compare-metrics");
    table.querySelector("thead").replaceChildren(jobHead());
    table.querySelector("tbody").replaceChildren(...keys.map((key) => {
      const top = winner(body, key);
      return el("tr", { dataset: { metric: key } }, el("th", { scope: "row" }, key), ...body.jobs.map((job) => {
        const final = job.final[key];
        const best = job.best[key];
        const cell = el("td", { className: "num" + (top === job.id ? " winner" : ""), dataset: { jobId: String(job.id) } },
          el("span", { className: "final" }, final ? number(final.value) : "–"));
        if (best) cell.append(el("br"), el("span", { className: "best muted small" }, "best " + number(best.value) + " @ " + best.step));
        return cell;
      }));
    }));
  }

  function shown(value) {
    if (value === null || value === undefined) return "–";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function specTable(body) {
    const table = $("spec-diff");
    table.querySelector("thead").replaceChildren(jobHead());
    table.querySelector("tbody").replaceChildren(...body.spec_differences.map((d) => el(
      "tr", { dataset: { path: d.path } }, el("th", { scope: "row" }, el("code", {}, d.path)),
      ...d.values.map((v) => el("td", { className: "spec-value" }, shown(v))))));
    $("spec-same").hidden = body.spec_differences.length > 0;
  }

  // ------------------------------------------------------------ start

  async function start() {
    const ids = params.get("jobs") || "";
    try {
      const body = await api("/api/v1/compare?" + new URLSearchParams({ jobs: ids }));
      state.jobs = body.jobs;
      summaryRows(body);
      metricsTable(body);
      specTable(body);
      const rows = await Promise.all(body.jobs.map((job) => allMetrics(job.id)));
      body.jobs.forEach((job, i) => state.rows.set(job.id, rows[i]));
      drawCharts();
      $("compare").dataset.ready = "true";
      $("compare-note").textContent = body.jobs.length + " jobs · " + rows.reduce((a, r) => a + r.length, 0).toLocaleString("en") + " metric rows";
    } catch (error) {
      $("compare-note").hidden = true;
      const detail = error.fields && error.fields.length ? error.fields.map((f) => f.path + ": " + f.message).join("; ") : error.message;
      $("compare-error").textContent = "Could not compare: " + detail;
      $("compare-error").hidden = false;
    }
  }

  start();
})();
