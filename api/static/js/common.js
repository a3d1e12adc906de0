// Helpers every status page shares: API calls with the session's CSRF token, building
// elements from text (never HTML), and formatting numbers, ages and durations.
"use strict";

window.Seqtrain = (function () {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";

  class ApiError extends Error {
    constructor(status, body) {
      const detail = body && body.error ? body.error : { message: "HTTP " + status, fields: [] };
      super(detail.message);
      this.status = status;
      this.code = detail.code;
      this.fields = detail.fields || [];
    }
  }

  // fetch() an /api/v1 path as the signed-in user; resolves to the parsed JSON body.
  async function api(path, options) {
    const opts = options || {};
    const init = { method: opts.method || "GET", credentials: "same-origin", headers: { Accept: "application/json" } };
    if (init.method !== "GET") init.headers["X-CSRF-Token"] = csrf;
    if (opts.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body);
    }
    const response = await fetch(path, init);
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (response.status === 401) {
      window.location.assign("/login");
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // el("td", {className: "num"}, "text", otherNode): text children become text nodes.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function number(value, digits) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    const d = digits === undefined ? 4 : digits;
    if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString("en");
    return Number(value).toPrecision(d).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function age(iso) {
    if (!iso) return "–";
    return duration((Date.now() - Date.parse(iso)) / 1000);
  }

  function time(iso) {
    if (!iso) return "–";
    return new Date(iso).toLocaleString("en-GB", { hour12: false });
  }

  function percent(fraction) {
    if (fraction === null || fraction === undefined) return "–";
    return Math.floor(fraction * 100) + "%";
  }

  function statusBadge(status) {
    return el("span", { className: "status status-" + status }, status);
  }

  function replaceChildren(node, children) {
    node.replaceChildren(...children);
  }

  return { api, ApiError, el, number, duration, age, time, percent, statusBadge, replaceChildren, csrf };
})();
