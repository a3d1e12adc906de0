// The job page's outputs: batch predictions over a dataset and export bundles, each run by a
// worker. A table of GET /api/v1/jobs/<id>/outputs (polled every 1.5 s while any is queued
// or running), a form that starts a prediction over one of the user's datasets (or any
// reference), and an export button. Dataset names and errors are written with textContent.
"use strict";

window.SeqtrainOutputs = (function () {
  const { api, el, number, time, statusBadge } = window.Seqtrain;
  const ACTIVE = ["queued", "running"];
  const POLL_MS = 1500;
  const OTHER = "__other__";
  const $ = (id) => document.getElementById(id);
  const section = $("outputs");
  const jobId = $("job").dataset.jobId;
  const task = $("job").dataset.task;
  const base = "/api/v1/jobs/" + jobId;
  const state = { shown: false, timer: null, busy: false, again: false };

  // ------------------------------------------------------------ the table

  function size(bytes) {
    if (bytes === null || bytes === undefined) return "";
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1 << 20) return (bytes / 1024).toFixed(1) + " KiB";
    return (bytes / (1 << 20)).toFixed(1) + " MiB";
  }

  function exportHeadline(summary) {
    const onnx = summary.onnx || {};
    const files = Object.keys(summary.files || {}).length + " files, " + size(summary.bytes);
    if (onnx.exported) {
      const parity = onnx.parity || {};
      return files + " · ONNX matches PyTorch (max difference " + number(parity.max_abs_diff, 2)
        + ", tolerance " + number(parity.tolerance, 2) + ")";
    }
    return files + " · no ONNX: " + (onnx.reason || "not exported");
  }

  function headline(output) {
    if (output.status === "failed") {
      return el("span", { className: "error pre-line output-error" }, output.error || "failed");
    }
    if (output.status === "cancelled") return el("span", { className: "muted" }, output.error || "cancelled");
    if (output.status !== "succeeded") return el("span", { className: "muted" }, "–");
    const summary = output.summary || {};
    if (output.kind === "export") return el("span", { className: "output-headline" }, exportHeadline(summary));
    return el("span", { className: "output-headline" },
      number(summary.rows_per_second, 3) + " rows/s · " + number(summary.rows, 6) + " rows · "
        + (summary.format || "").toUpperCase() + " · " + size(output.bytes));
  }

  function progressCell(output) {
    const bar = el("progress", { max: 1 });
    if (output.progress !== null) bar.value = output.progress;
    else if (!ACTIVE.includes(output.status)) bar.value = 0; // ended before any progress
    const total = output.rows_total === null ? "–" : String(output.rows_total);
    const label = output.kind === "predictions"
      ? output.rows_done + " of " + total + " rows"
      : (output.progress === null ? "–" : Math.floor(output.progress * 100) + "%");
    return el("td", { className: "output-progress" }, bar, " ", el("span", { className: "small rows" }, label));
  }

  function actionCell(output) {
    const cell = el("td", { className: "output-actions" });
    if (output.status === "succeeded") {
      cell.append(el("a", { href: output.links.download, download: "", className: "download", title: output.filename || "" }, "Download"));
    } else if (ACTIVE.includes(output.status)) {
      const button = el("button", { type: "button", className: "cancel-output" }, "Cancel");
      button.addEventListener("click", () => cancel(output, button));
      cell.append(button);
    }
    return cell;
  }

  function row(output) {
    return el("tr", { dataset: { outputId: String(output.id), kind: output.kind, status: output.status } },
      el("td", {}, output.kind, el("span", { className: "muted small" }, " #" + output.id)),
      el("td", {}, statusBadge(output.status)),
      progressCell(output),
      el("td", { className: "small wide" }, time(output.created_at)),
      el("td", { className: "output-result" }, headline(output)),
      actionCell(output));
  }

  function render(outputs) {
    $("outputs-table").querySelector("tbody").replaceChildren(...outputs.map(row));
    $("outputs-empty").hidden = outputs.length > 0;
  }

  // ------------------------------------------------------------ loading and polling

  // One read at a time; a call meanwhile reads again after it. While any output is active
  // the next read is POLL_MS after this one; when none is, polling stops.
  async function load() {
    if (state.busy) {
      state.again = true;
      return;
    }
    state.busy = true;
    clearTimeout(state.timer);
    state.timer = null;
    let active = true;
    try {
      const data = await api(base + "/outputs");
      render(data.outputs);
      active = data.outputs.some((o) => ACTIVE.includes(o.status));
      $("outputs-note").textContent = "";
    } catch (error) {
      $("outputs-note").textContent = "Could not read the outputs: " + error.message;
    } finally {
      state.busy = false;
    }
    if (state.again) {
      state.again = false;
      load();
      return;
    }
    if (active) state.timer = setTimeout(load, POLL_MS);
    section.dataset.polling = String(active);
  }

  async function cancel(output, button) {
    button.disabled = true;
    try {
      await api(output.links.cancel, { method: "POST" });
    } catch (error) {
      $("outputs-note").textContent = "Could not cancel output " + output.id + ": " + error.message;
    }
    load();
  }

  // ------------------------------------------------------------ the forms

  async function loadDatasets() {
    const select = $("outputs-dataset");
    let datasets = [];
    try {
      datasets = (await api("/api/v1/datasets?limit=500")).datasets;
    } catch (error) {
      $("outputs-note").textContent = "Could not list your datasets: " + error.message;
    }
    const options = datasets.map((d) => el("option", { value: d.reference },
      d.name + " · " + d.format + " · " + d.rows.toLocaleString("en") + " rows"));
    options.push(el("option", { value: OTHER }, "another reference…"));
    select.replaceChildren(...options);
    pickDataset();
  }

  function pickDataset() {
    const other = $("outputs-dataset").value === OTHER;
    $("outputs-reference-label").hidden = !other;
  }

  function showError(node, error) {
    node.textContent = error.fields && error.fields.length
      ? error.fields.map((f) => (f.path ? f.path + ": " : "") + f.message).join("; ")
      : error.message;
    node.hidden = false;
  }

  async function start(button, errorNode, path, body) {
    errorNode.hidden = true;
    button.disabled = true;
    try {
      await api(path, { method: "POST", body });
      load();
    } catch (error) {
      showError(errorNode, error);
    } finally {
      button.disabled = false;
    }
  }

  function predictionBody() {
    const chosen = $("outputs-dataset").value;
    const body = {
      dataset: chosen === OTHER ? $("outputs-reference").value.trim() : chosen,
      format: $("outputs-format").value,
    };
    if (task === "language_modeling") {
      body.length = Number($("outputs-length").value);
      body.temperature = Number($("outputs-temperature").value);
    }
    return body;
  }

  $("outputs-dataset").addEventListener("change", pickDataset);
  $("outputs-predict-form").addEventListener("submit", (event) => {
    event.preventDefault();
    start($("outputs-predict-button"), $("outputs-error"), base + "/predictions", predictionBody());
  });
  $("outputs-export-form").addEventListener("submit", (event) => {
    event.preventDefault();
    start($("outputs-export-button"), $("outputs-export-error"), base + "/exports", { onnx: $("outputs-onnx").checked });
  });
  $("outputs-lm-options").hidden = task !== "language_modeling";

  // Called by the job page: shown where /predict or /generate works (a checkpoint, and the
  // job no longer queued or running); the first showing reads the datasets and outputs.
  function show(visible) {
    section.hidden = !visible;
    if (!visible || state.shown) return;
    state.shown = true;
    loadDatasets();
    load();
  }

  return { show, refresh: load };
})();
