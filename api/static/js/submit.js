// The submit page: the spec is parsed as YAML (JSON is YAML too) in the browser, posted to
// POST /api/v1/jobs as JSON, and each error the API names is shown beside the spec line of
// the field it concerns.
"use strict";

(function () {
  const { api, el } = window.Seqtrain;
  const form = document.getElementById("submit-form");
  const textarea = document.getElementById("spec");
  const box = document.getElementById("spec-errors");
  const summary = document.getElementById("spec-error-summary");
  const annotated = document.getElementById("spec-annotated");
  const note = document.getElementById("submit-note");
  const button = document.getElementById("submit-button");
  const KEY = /^(\s*)(?:-\s+)?["']?([A-Za-z0-9_]+)["']?\s*:/;

  // The 0-based line where a dotted path ("model.type", "data.tokenizer.kind") is written:
  // keys are tracked by indentation. A missing field points at its nearest written parent.
  function lineOf(text, path) {
    const wanted = path.replace(/\[\d+\]/g, "").split(".").filter(Boolean);
    if (wanted.length === 0) return 0;
    const stack = [];
    let best = { depth: 0, line: 0 };
    text.split("\n").forEach((line, index) => {
      const match = KEY.exec(line);
      if (!match) return;
      const indent = match[1].length;
      while (stack.length && stack[stack.length - 1].indent >= indent) stack.pop();
      stack.push({ indent, key: match[2] });
      const keys = stack.map((s) => s.key);
      let depth = 0;
      while (depth < keys.length && depth < wanted.length && keys[depth] === wanted[depth]) depth++;
      if (depth === keys.length && depth > best.depth) best = { depth, line: index };
    });
    return best.line;
  }

  function clearErrors() {
    box.hidden = true;
    annotated.replaceChildren();
    textarea.removeAttribute("aria-invalid");
  }

  function selectLine(text, line) {
    const lines = text.split("\n");
    const start = lines.slice(0, line).reduce((n, l) => n + l.length + 1, 0);
    textarea.focus();
    textarea.setSelectionRange(start, start + (lines[line] || "").length);
  }

  // errors: [{path, message, line}]. The spec with line numbers, each error under its line.
  function showErrors(text, message, errors) {
    const byLine = new Map();
    for (const error of errors) {
      if (!byLine.has(error.line)) byLine.set(error.line, []);
      byLine.get(error.line).push(error);
    }
    const items = [];
    text.split("\n").forEach((line, index) => {
      const problems = byLine.get(index) || [];
      const item = el("li", { className: problems.length ? "bad-line" : "" }, el("code", {}, line || " "));
      for (const problem of problems) {
        const note = el(
          "div",
          { className: "field-error", role: "alert", dataset: { path: problem.path } },
          el("strong", {}, problem.path || "(spec)"), ": ", problem.message,
        );
        note.addEventListener("click", () => selectLine(text, index));
        item.append(note);
      }
      items.push(item);
    });
    summary.textContent = message;
    annotated.replaceChildren(...items);
    box.hidden = false;
    textarea.setAttribute("aria-invalid", "true");
  }

  function parse(text) {
    try {
      return { value: window.jsyaml.load(text) };
    } catch (error) {
      const line = error.mark ? error.mark.line : 0;
      const reason = error.reason || error.message;
      return { error: { path: "", message: "not valid YAML or JSON: " + reason, line } };
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const text = textarea.value;
    const parsed = parse(text);
    if (parsed.error) {
      showErrors(text, "The spec does not parse.", [parsed.error]);
      return;
    }
    if (parsed.value === null || typeof parsed.value !== "object" || Array.isArray(parsed.value)) {
      showErrors(text, "The spec must be a mapping of sections.", [{ path: "", message: "expected a mapping", line: 0 }]);
      return;
    }
    button.disabled = true;
    note.textContent = "Submitting…";
    try {
      const created = await api("/api/v1/jobs", { method: "POST", body: parsed.value });
      note.textContent = "Job " + created.id + " submitted.";
      window.location.assign("/jobs/" + created.id);
    } catch (error) {
      note.textContent = "";
      const fields = (error.fields || []).map((f) => ({ path: f.path, message: f.message, line: lineOf(text, f.path) }));
      showErrors(text, error.message, fields.length ? fields : [{ path: "", message: error.message, line: 0 }]);
    } finally {
      button.disabled = false;
    }
  });
  textarea.addEventListener("input", () => { if (!box.hidden) textarea.removeAttribute("aria-invalid"); });
})();
