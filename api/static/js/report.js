// The job page's evaluation report: GET /api/v1/jobs/<id>/report once the job has ended,
// drawn by task (classification, tagging, language modelling, seq2seq) with a split selector when
// the report has a test split. Every text from the report (texts, tokens, labels, tag and
// entity names) is written with textContent; the charts are SVG built node by node, or uPlot.
"use strict";

window.SeqtrainReport = (function () {
  const { api, el, number } = window.Seqtrain;
  const SVG = "http://www.w3.org/2000/svg";
  const TERMINAL = ["succeeded", "failed", "cancelled", "pruned"];
  const SPLIT_NAMES = { validation: "validation", test: "test" };
  const state = { loaded: false, loading: false, retried: false, report: null, chart: null };

  const $ = (id) => document.getElementById(id);
  const fixed = (value, digits) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits === undefined ? 3 : digits));
  const pct = (value) => (value === null || value === undefined ? "–" : (100 * value).toFixed(1) + "%");

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  function facts(pairs) {
    return el("dl", { className: "facts report-facts" },
      ...pairs.map(([name, value]) => el("div", {}, el("dt", {}, name), el("dd", {}, value))));
  }

  function table(className, head, rows, foot) {
    const t = el("table", { className },
      el("thead", {}, el("tr", {}, ...head.map((h) => (h instanceof Node ? h : el("th", {}, h))))),
      el("tbody", {}, ...rows));
    if (foot && foot.length) t.append(el("tfoot", {}, ...foot));
    return el("div", { className: "table-wrap" }, t);
  }

  const numCell = (value, digits) => el("td", { className: "num" }, fixed(value, digits));

  // ------------------------------------------------------------ heat map (confusion)

  // counts: rows = true label, columns = predicted. `normalized` may be absent: rows are
  // divided by their sums here then (a row of zeros stays zeros).
  function heatMap(id, labels, counts, normalized) {
    const rowsNormalized = normalized || counts.map((row) => {
      const total = row.reduce((a, b) => a + b, 0);
      return row.map((c) => (total ? c / total : 0));
    });
    const max = Math.max(1, ...counts.flat());
    const toggle = el("input", { type: "checkbox", id: id + "-normalized" });
    const corner = el("th", { className: "corner", scope: "col" }, "true ↓ · predicted →");
    const head = [corner, ...labels.map((label) => el("th", { scope: "col", className: "heat-label" }, label))];
    const cells = [];
    const rows = counts.map((row, i) => el(
      "tr", {},
      el("th", { scope: "row", className: "heat-label" }, labels[i]),
      ...row.map((count, j) => {
        const cell = el("td", { className: "num heat" + (i === j ? " diag" : ""), dataset: { true: String(i), predicted: String(j), count: String(count) } });
        cells.push({ cell, count, fraction: rowsNormalized[i][j] });
        return cell;
      }),
    ));
    function paint() {
      for (const { cell, count, fraction } of cells) {
        const strength = toggle.checked ? fraction : count / max;
        cell.textContent = toggle.checked ? pct(fraction) : String(count);
        cell.style.backgroundColor = "rgba(47, 111, 222, " + (0.06 + 0.84 * strength).toFixed(3) + ")";
        cell.classList.toggle("heat-strong", strength > 0.55);
      }
    }
    toggle.addEventListener("change", paint);
    paint();
    const wrap = table("heatmap", head, rows);
    wrap.querySelector("table").id = id;
    return el("div", {}, el("label", { className: "inline-label small" }, toggle, " row-normalized (share of each true label)"), wrap);
  }

  // ------------------------------------------------------------ classification

  function perClassTable(section) {
    const rows = section.per_class.map((c) => el("tr", { dataset: { label: c.label } },
      el("td", {}, c.label), numCell(c.precision), numCell(c.recall), numCell(c.f1), el("td", { className: "num" }, String(c.support))));
    const support = section.per_class.reduce((a, c) => a + c.support, 0);
    const average = (name, values) => el("tr", { className: "average" },
      el("th", { scope: "row" }, name), numCell(values.precision), numCell(values.recall), numCell(values.f1), el("td", { className: "num" }, String(support)));
    return table("per-class", ["label", "precision", "recall", "F1", "support"], rows,
      [average("macro average", section.macro), average("weighted average", section.weighted)]);
  }

  // Accuracy per confidence bin as bars against the diagonal (perfect calibration).
  function reliability(calibration) {
    const size = 240, pad = 34;
    const x = (v) => pad + v * size;
    const y = (v) => pad / 2 + (1 - v) * size;
    const chart = svg("svg", { viewBox: `0 0 ${size + pad + 10} ${size + pad + 24}`, class: "reliability", role: "img", "aria-label": "reliability diagram" });
    chart.append(svg("rect", { x: x(0), y: y(1), width: size, height: size, class: "frame" }));
    for (const bin of calibration.bins) {
      if (!bin.count) continue;
      const bar = svg("rect", {
        x: x(bin.lower) + 1, y: y(bin.accuracy), width: Math.max(1, (bin.upper - bin.lower) * size - 2),
        height: Math.max(0, bin.accuracy * size), class: "bar",
      }, svg("title", {}, `confidence ${fixed(bin.lower, 1)}–${fixed(bin.upper, 1)}: accuracy ${fixed(bin.accuracy)} over ${bin.count} (mean confidence ${fixed(bin.confidence)})`));
      chart.append(bar);
    }
    chart.append(svg("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), class: "diagonal" }));
    for (const t of [0, 0.5, 1]) {
      chart.append(svg("text", { x: x(t), y: y(0) + 14, "text-anchor": "middle", class: "tick" }, String(t)));
      chart.append(svg("text", { x: x(0) - 4, y: y(t) + 4, "text-anchor": "end", class: "tick" }, String(t)));
    }
    chart.append(svg("text", { x: x(0.5), y: y(0) + 30, "text-anchor": "middle", class: "tick" }, "confidence"));
    return el("figure", { className: "reliability-figure" }, chart,
      el("figcaption", {}, "Accuracy per confidence bin; the diagonal is perfect calibration. ECE ", el("strong", { id: "report-ece" }, fixed(calibration.ece, 4))));
  }

  function mistakesTable(mistakes) {
    if (!mistakes.length) return el("p", { className: "muted" }, "No mistakes on this split.");
    const rows = mistakes.map((m) => el("tr", {},
      el("td", { className: "report-text" }, m.text), el("td", {}, m.label), el("td", {}, m.prediction), numCell(m.probability)));
    return table("mistakes", ["text", "label", "predicted", "probability"], rows);
  }

  function classification(section) {
    return [
      facts([["Examples", String(section.examples)], ["Accuracy", fixed(section.accuracy, 4)],
        ["Macro F1", fixed(section.macro.f1, 4)], ["ECE", fixed(section.calibration.ece, 4)]]),
      el("div", { className: "report-grid" },
        el("section", {}, el("h3", {}, "Confusion matrix"), heatMap("confusion", section.labels, section.confusion.counts, section.confusion.normalized)),
        el("section", {}, el("h3", {}, "Reliability"), reliability(section.calibration))),
      el("h3", {}, "Per class"), perClassTable(section),
      el("h3", {}, "Most confident mistakes"), mistakesTable(section.mistakes),
    ];
  }

  // ------------------------------------------------------------ tagging

  function entityTable(entities) {
    const rows = entities.per_type.map((e) => el("tr", { dataset: { type: e.type } },
      el("td", {}, e.type), numCell(e.precision), numCell(e.recall), numCell(e.f1), el("td", { className: "num" }, String(e.support))));
    const support = entities.per_type.reduce((a, e) => a + e.support, 0);
    const average = (name, values) => el("tr", { className: "average" },
      el("th", { scope: "row" }, name), numCell(values.precision), numCell(values.recall), numCell(values.f1), el("td", { className: "num" }, String(support)));
    const wrap = table("entities", ["entity type", "precision", "recall", "F1", "support"], rows,
      [average("micro", entities.micro), average("macro", entities.macro)]);
    wrap.querySelector("table").id = "entity-table";
    return wrap;
  }

  // The sentence with the entity's words [start, end) in a <mark>, its type beside it.
  function entitySentence(example) {
    const before = example.tokens.slice(0, example.start).join(" ");
    const span = example.tokens.slice(example.start, example.end).join(" ");
    const after = example.tokens.slice(example.end).join(" ");
    return el("li", { className: "entity-example" },
      before ? before + " " : "", el("mark", {}, span), el("sub", { className: "entity-type" }, example.type), after ? " " + after : "");
  }

  function examples(title, id, list) {
    const body = list.length
      ? el("ol", { className: "entity-examples", id }, ...list.map(entitySentence))
      : el("p", { className: "muted", id }, "None.");
    return el("section", {}, el("h3", {}, title), body);
  }

  function tagging(section) {
    return [
      facts([["Sentences", String(section.examples)], ["Token accuracy", fixed(section.token_accuracy, 4)],
        ["Entity F1 (micro)", fixed(section.entities.micro.f1, 4)], ["Entity F1 (macro)", fixed(section.entities.macro.f1, 4)]]),
      el("h3", {}, "Per entity type"), entityTable(section.entities),
      el("h3", {}, "Tag confusion"), heatMap("tag-confusion", section.tag_confusion.labels, section.tag_confusion.counts, null),
      el("div", { className: "report-grid" },
        examples("Missed entities", "missed", section.missed),
        examples("Spurious entities", "spurious", section.spurious)),
    ];
  }

  // ------------------------------------------------------------ language modelling

  function positionChart(buckets) {
    const node = el("div", { className: "chart", id: "position-chart", dataset: { points: String(buckets.length) } });
    const data = [buckets.map((b) => (b.start + b.end - 1) / 2), buckets.map((b) => b.loss)];
    // Drawn once the node is in the page, so it takes the page's width.
    requestAnimationFrame(() => {
      if (state.chart) state.chart.destroy();
      state.chart = new window.uPlot({
        width: Math.max(240, node.clientWidth), height: 220, scales: { x: { time: false } },
        axes: [{ label: "position in the context" }, { label: "loss (nats)" }],
        series: [{ label: "position" }, { label: "mean token loss", stroke: "#2f6fde", width: 2, points: { show: true, size: 5 } }],
      }, data, node);
    });
    return node;
  }

  function languageModeling(section) {
    const parts = [
      facts([["Windows", String(section.windows)], ["Loss (nats/token)", fixed(section.loss, 4)], ["Perplexity", number(section.perplexity, 5)]]),
      el("h3", {}, "Loss by position in the context"), positionChart(section.loss_by_position),
    ];
    if (section.samples && section.samples.length) {
      parts.push(el("h3", {}, "Samples"), el("div", { id: "samples" }, ...section.samples.map((s) => el(
        "figure", { className: "sample", dataset: { temperature: String(s.temperature) } },
        el("figcaption", {}, "temperature " + s.temperature),
        el("pre", { className: "generated" }, el("strong", {}, s.prompt), s.text)))));
    }
    return parts;
  }

  // ------------------------------------------------------------ seq2seq

  function translation(section) {
    const lengthRows = section.by_source_length.map((b) => el("tr", {},
      el("td", {}, b.words), el("td", { className: "num" }, String(b.pairs)), numCell(b.bleu, 2)));
    const worstRows = section.worst.map((w) => el("tr", {},
      el("td", { className: "report-text" }, w.source), el("td", { className: "report-text" }, w.reference),
      el("td", { className: "report-text" }, w.hypothesis), numCell(w.chrf, 1)));
    return [
      facts([["Pairs", String(section.pairs)], ["BLEU", fixed(section.bleu, 2)], ["chrF", fixed(section.chrf, 2)],
        ["Length ratio", fixed(section.length_ratio, 3)], ["Beam", String(section.beam_size)]]),
      el("p", { className: "muted small", id: "report-signature" }, "sacrebleu BLEU " + section.signatures.bleu
        + " · chrF " + section.signatures.chrf),
      el("h3", {}, "BLEU by source length (words)"),
      table("by-length", ["source words", "pairs", "BLEU"], lengthRows),
      el("h3", {}, "Lowest sentence chrF"),
      worstRows.length ? table("worst-translations", ["source", "reference", "translation", "chrF"], worstRows)
        : el("p", { className: "muted" }, "None."),
    ];
  }

  // ------------------------------------------------------------ the section

  const DRAW = { classification, tagging, language_modeling: languageModeling, seq2seq: translation };

  function draw(split) {
    const body = state.report.report;
    const section = body.splits[split];
    const drawer = DRAW[body.task];
    $("report").dataset.split = split;
    $("report-body").replaceChildren(...(drawer && section ? drawer(section) : [el("p", { className: "muted" }, "This task's report has no view yet.")]));
  }

  function show(answer) {
    state.report = answer;
    const body = answer.report;
    const splits = Object.keys(body.splits || {});
    const select = $("report-split");
    select.replaceChildren(...splits.map((s) => el("option", { value: s }, SPLIT_NAMES[s] || s)));
    $("report-split-label").hidden = splits.length < 2;
    const checkpoint = body.checkpoint || {};
    $("report-meta").textContent = "Best checkpoint: step " + checkpoint.step + ", epoch " + checkpoint.epoch
      + " · computed " + new Date(answer.created_at).toLocaleString("en-GB", { hour12: false });
    $("report").hidden = false;
    $("report").dataset.task = body.task;
    if (splits.length) draw(splits[0]);
  }

  async function load(status) {
    state.loading = true;
    try {
      show(await api("/api/v1/jobs/" + $("job").dataset.jobId + "/report"));
      state.loaded = true;
    } catch (error) {
      // 404: no report (failed, cancelled, or finished before reports existed). A job just
      // shown succeeded may be a moment ahead of its report: ask once more.
      if (error.status === 404 && status === "succeeded" && !state.retried) {
        state.retried = true;
        setTimeout(() => load(status), 2000);
      }
    } finally {
      state.loading = false;
    }
  }

  // Called by the job page with the status it shows, at start and on every change.
  function refresh(status) {
    if (state.loaded || state.loading || !TERMINAL.includes(status)) return;
    load(status);
  }

  $("report-split").addEventListener("change", (event) => draw(event.target.value));
  window.addEventListener("resize", () => {
    const node = $("position-chart");
    if (state.chart && node) state.chart.setSize({ width: Math.max(240, node.clientWidth), height: 220 });
  });

  return { refresh };
})();
