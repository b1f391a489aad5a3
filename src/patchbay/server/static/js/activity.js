// The Activity view: calls in flight, the most recent calls, and per server the latency (p50/p95) and
// error rate of the last 15 minutes as small hand-drawn SVG charts. Fed live by the call events of
// /api/events?calls=true (call_started / call_finished, never arguments), and seeded from the audit log
// when the token may read it (admins). Everything from the API is inserted as text.

import { api } from "./api.js";
import { h, replace } from "./dom.js";

const WINDOW_MS = 15 * 60 * 1000;
const BUCKETS = 15; // one per minute
const RECENT = 50; // rows in the table
const SVG = "http://www.w3.org/2000/svg";
const W = 300;
const H = 84;
const LAT_H = 56; // the latency lines' band; the error bars go below it

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c);
  return el;
}

/** "0.4 ms", "12 ms", "2.1 s". */
export function ms(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value < 10) return `${value.toFixed(1)} ms`;
  if (value < 1000) return `${Math.round(value)} ms`;
  return `${(value / 1000).toFixed(1)} s`;
}

function quantile(sorted, q) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

const isError = (outcome) => outcome !== "ok";

function clock(t) {
  return new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** Per-minute buckets of one server's calls: [{p50, p95, calls, errors}], oldest first. */
export function buckets(calls, now) {
  const out = Array.from({ length: BUCKETS }, () => ({ durations: [], calls: 0, errors: 0 }));
  const start = now - WINDOW_MS;
  for (const c of calls) {
    if (c.end <= start || c.end > now) continue;
    const i = Math.min(BUCKETS - 1, Math.floor((c.end - start) / (WINDOW_MS / BUCKETS)));
    out[i].calls += 1;
    out[i].durations.push(c.duration_ms);
    if (isError(c.outcome)) out[i].errors += 1;
  }
  return out.map((b) => {
    const sorted = b.durations.sort((a, z) => a - z);
    return { p50: quantile(sorted, 0.5), p95: quantile(sorted, 0.95), calls: b.calls, errors: b.errors };
  });
}

function line(points, cls) {
  const drawn = points.filter((p) => p.y !== null);
  if (!drawn.length) return null;
  if (drawn.length === 1) return svg("circle", { class: cls, cx: drawn[0].x, cy: drawn[0].y, r: 2.5 });
  let d = "";
  let open = false;
  for (const p of points) {
    if (p.y === null) {
      open = false;
      continue;
    }
    d += `${open ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)} `;
    open = true;
  }
  return svg("path", { class: cls, d: d.trim() });
}

/** One server's chart: p50 and p95 latency lines over 15 one-minute buckets, error-rate bars below. */
function chart(server, series) {
  const max = Math.max(1, ...series.map((b) => b.p95 || 0));
  const step = W / BUCKETS;
  const y = (v) => (v === null ? null : 4 + (LAT_H - 8) * (1 - v / max));
  const p50 = series.map((b, i) => ({ x: i * step + step / 2, y: y(b.p50) }));
  const p95 = series.map((b, i) => ({ x: i * step + step / 2, y: y(b.p95) }));
  const bars = series.map((b, i) => {
    if (!b.calls) return null;
    const rate = b.errors / b.calls;
    const bh = Math.max(rate > 0 ? 3 : 1, rate * (H - LAT_H - 4));
    return svg("rect", {
      class: rate > 0 ? "bar bar-error" : "bar",
      x: (i * step + 1).toFixed(1),
      y: (H - bh).toFixed(1),
      width: (step - 2).toFixed(1),
      height: bh.toFixed(1),
      "data-rate": rate.toFixed(3),
    });
  });
  const total = series.reduce((n, b) => n + b.calls, 0);
  const errors = series.reduce((n, b) => n + b.errors, 0);
  const label = `${server}: ${total} calls in 15 min, max p95 ${ms(max === 1 && !total ? null : max)}, ${errors} errors`;
  return svg(
    "svg",
    { class: "activity-chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, preserveAspectRatio: "none" },
    svg("title", {}, document.createTextNode(label)),
    svg("line", { class: "axis", x1: 0, y1: LAT_H, x2: W, y2: LAT_H }),
    total ? svg("text", { class: "scale", x: 2, y: 10 }, document.createTextNode(ms(max))) : null,
    svg("text", { class: "scale", x: 2, y: LAT_H + 10 }, document.createTextNode("−15 min")),
    svg("text", { class: "scale", x: W - 2, y: LAT_H + 10, "text-anchor": "end" }, document.createTextNode("now")),
    line(p95, "p95"),
    line(p50, "p50"),
    ...bars,
  );
}

export function createActivity(root, { onError } = {}) {
  const inflight = new Map(); // id → {tool, server, identity, client, start}
  let calls = []; // finished: {id, tool, server, identity, client, end, duration_ms, outcome}
  let timer = null;
  let ticker = null;
  let seeded = false;

  async function seed(liveSince) {
    let records;
    try {
      records = await api("audit?event=tool_call&since=15m&limit=5000");
    } catch {
      return; // not an admin, or the log is off: the view fills from the live events alone
    }
    const before = records
      .map((r) => ({
        tool: r.tool,
        server: r.server,
        identity: r.identity,
        client: r.client?.name || null,
        end: Date.parse(r.time),
        duration_ms: r.duration_ms,
        outcome: r.outcome,
      }))
      .filter((c) => c.end < liveSince); // later ones came (or come) as live events
    calls = [...before, ...calls].sort((a, z) => a.end - z.end);
    schedule();
  }

  const flightList = h("ul", { class: "activity-inflight", "aria-label": "Calls in flight" });
  const flightCount = h("span", { class: "activity-count", id: "activity-inflight-count" }, "0");
  const rows = h("tbody", {});
  const table = h(
    "table",
    { class: "activity-table", "aria-label": "Recent calls" },
    h("thead", {}, h("tr", {}, ["Time", "Tool", "Caller", "Duration", "Outcome"].map((t) => h("th", { scope: "col" }, t)))),
    rows,
  );
  const empty = h("p", { class: "muted empty-line activity-empty" }, "No calls yet. Calls appear here as they happen.");
  const charts = h("div", { class: "activity-servers" });
  const errorsBadge = h("span", { class: "badge activity-errors", hidden: true });
  replace(
    root,
    h("div", { class: "activity-head" }, h("h3", { class: "subhead" }, "In flight ", flightCount), errorsBadge),
    flightList,
    h("h3", { class: "subhead" }, "Per server, last 15 minutes ", h("span", { class: "legend" }, h("span", { class: "key key-p50" }, "p50"), h("span", { class: "key key-p95" }, "p95"), h("span", { class: "key key-err" }, "error rate"))),
    charts,
    h("h3", { class: "subhead" }, "Recent calls"),
    empty,
    h("div", { class: "table-wrap" }, table),
  );

  function schedule() {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      render();
    }, 150);
  }

  function prune(now) {
    const cutoff = now - WINDOW_MS;
    if (calls.length && calls[0].end < cutoff) calls = calls.filter((c) => c.end >= cutoff);
  }

  function renderInflight(now) {
    flightCount.textContent = String(inflight.size);
    const items = [...inflight.values()].sort((a, z) => a.start - z.start).slice(0, 20);
    replace(
      flightList,
      items.length
        ? items.map((c) =>
            h("li", { class: "activity-call", dataset: { tool: c.tool } }, h("code", {}, c.tool), h("span", { class: "muted" }, ` ${caller(c)} · ${ms(now - c.start)}`)),
          )
        : h("li", { class: "muted" }, "Nothing in flight."),
    );
    if (inflight.size && !ticker) ticker = setInterval(() => renderInflight(Date.now()), 500);
    if (!inflight.size && ticker) {
      clearInterval(ticker);
      ticker = null;
    }
  }

  function caller(c) {
    return c.client ? `${c.identity} (${c.client})` : c.identity;
  }

  function render() {
    const now = Date.now();
    prune(now);
    renderInflight(now);
    const recent = calls.slice(-RECENT).reverse();
    empty.hidden = recent.length > 0;
    table.hidden = !recent.length;
    replace(
      rows,
      recent.map((c) =>
        h(
          "tr",
          { class: isError(c.outcome) ? "call-row call-error" : "call-row", dataset: { outcome: c.outcome, tool: c.tool } },
          h("td", { class: "mono muted" }, clock(c.end)),
          h("td", {}, h("code", {}, c.tool), c.server ? h("span", { class: "muted" }, ` ${c.server}`) : null),
          h("td", {}, caller(c)),
          h("td", { class: "num" }, ms(c.duration_ms)),
          h("td", {}, h("span", { class: `badge ${isError(c.outcome) ? "badge-error" : "badge-ok"}` }, c.outcome)),
        ),
      ),
    );
    const errors = calls.filter((c) => isError(c.outcome)).length;
    errorsBadge.hidden = !errors;
    errorsBadge.textContent = `${errors} error${errors === 1 ? "" : "s"} in 15 min`;
    errorsBadge.className = `badge activity-errors ${errors ? "badge-error" : ""}`;
    const byServer = new Map();
    for (const c of calls) {
      const key = c.server || "(no server)";
      if (!byServer.has(key)) byServer.set(key, []);
      byServer.get(key).push(c);
    }
    replace(
      charts,
      [...byServer.keys()].sort().map((server) => {
        const list = byServer.get(server);
        const sorted = list.map((c) => c.duration_ms).sort((a, z) => a - z);
        const errs = list.filter((c) => isError(c.outcome)).length;
        const rate = list.length ? Math.round((100 * errs) / list.length) : 0;
        return h(
          "figure",
          { class: `activity-server${errs ? " has-errors" : ""}`, dataset: { server } },
          h(
            "figcaption",
            {},
            h("code", {}, server),
            h("span", { class: "muted" }, ` ${list.length} calls · p50 ${ms(quantile(sorted, 0.5))} · p95 ${ms(quantile(sorted, 0.95))} · `),
            h("span", { class: errs ? "error-rate has-errors" : "error-rate" }, `${rate}% errors`),
          ),
          chart(server, buckets(list, now)),
        );
      }),
    );
    if (!byServer.size) replace(charts, h("p", { class: "muted empty-line" }, "Charts appear with the first calls."));
  }

  function finished(c) {
    calls.push(c);
    if (calls.length > 20000) calls = calls.slice(-10000);
  }

  return {
    onEvent(type, data) {
      if (type === "call_started") {
        inflight.set(data.id, { ...data, start: data.time * 1000 });
      } else if (type === "call_finished") {
        inflight.delete(data.id);
        finished({ ...data, end: data.time * 1000 });
        if (isError(data.outcome) && onError) onError(data);
      }
      schedule();
    },
    /** The stream (re)opened: what was in flight may have ended meanwhile. The first time, the last
     *  15 minutes before it come from the audit log, if this token may read it (admins). */
    opened() {
      inflight.clear();
      schedule();
      if (!seeded) {
        seeded = true;
        seed(Date.now());
      }
    },
    render,
  };
}
