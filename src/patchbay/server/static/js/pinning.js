// Tool-definition pinning in the dashboard (GET /api/tools/changes, POST /api/tools/{name}/approve): each
// changed tool with its diff (pinned → current), a badge on its row in the catalog ("changed"), and for an
// admin an Approve button that shows the diff before it approves. In block mode a changed tool is withheld
// from the catalog, so it is shown here only, as "withheld until approved". The diff is tool text from an
// untrusted server: it is inserted line by line as text, never as HTML.

import { api } from "./api.js";
import { h, replace } from "./dom.js";

const section = document.getElementById("changes-section");
const list = document.getElementById("changes-list");
const status = document.getElementById("changes-status");
const entries = new Map(); // exposed tool name → {el, showDiff()}
let changes = [];
let onApproved = () => {};

/** The unified diff as lines, each a span styled by its first character. */
export function diffView(text) {
  const kind = (line) =>
    line.startsWith("+++") || line.startsWith("---") ? "diff-file" : line.startsWith("@@") ? "diff-hunk" : line.startsWith("+") ? "diff-add" : line.startsWith("-") ? "diff-del" : "diff-same";
  return h(
    "pre",
    { class: "out diff", tabindex: "0" },
    text.split("\n").map((line) => h("span", { class: `diff-line ${kind(line)}` }, line, "\n")),
  );
}

function entry(change) {
  const diffBox = h("div", { class: "change-diff", hidden: true }, diffView(change.diff));
  const toggle = h("button", { type: "button", class: "button small", "aria-expanded": "false", onclick: () => showDiff(diffBox.hidden) }, "Show diff");
  const approve = h("button", { type: "button", class: "button small primary admin-only", onclick: () => ask() }, "Approve");
  const confirm = h("button", { type: "button", class: "button small primary admin-only", hidden: true, onclick: () => approveNow() }, "Approve this definition");
  const cancel = h("button", { type: "button", class: "button small admin-only", hidden: true, onclick: () => asking(false) }, "Cancel");
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const label = change.blocked ? "withheld until approved" : "changed";
  const el = h(
    "article",
    { class: "card change-card", dataset: { tool: change.name, blocked: String(change.blocked) }, "aria-label": `Changed tool ${change.name}` },
    h(
      "div",
      { class: "card-head" },
      h("h3", { class: "card-title" }, change.name),
      h("span", { class: `badge pin-badge ${change.blocked ? "pin-blocked" : "pin-changed"}` }, label),
    ),
    h("p", { class: "card-sub" }, `server ${change.server} · tool ${change.tool} · its definition differs from the one pinned`),
    diffBox,
    error,
    h("div", { class: "actions" }, toggle, approve, confirm, cancel),
  );

  function showDiff(on) {
    diffBox.hidden = !on;
    toggle.textContent = on ? "Hide diff" : "Show diff";
    toggle.setAttribute("aria-expanded", String(on));
  }

  function asking(on) {
    if (on) showDiff(true);
    approve.hidden = on;
    confirm.hidden = cancel.hidden = !on;
    (on ? confirm : approve).focus();
  }

  function ask() {
    asking(true);
  }

  async function approveNow() {
    confirm.disabled = cancel.disabled = true;
    error.hidden = true;
    try {
      await api(`tools/${encodeURIComponent(change.name)}/approve`, { method: "POST" });
      status.textContent = `Approved ${change.name}: its current definition is pinned.`;
      onApproved(change.name);
      await refreshChanges();
    } catch (err) {
      error.textContent = `Could not approve ${change.name}: ${err.message}`;
      error.hidden = false;
    } finally {
      confirm.disabled = cancel.disabled = false;
    }
  }

  return { el, showDiff };
}

/** Badges on the catalog's rows of changed (warn mode: still listed) tools; app.js calls it after each render. */
export function markTools() {
  const byName = new Map(changes.map((c) => [c.name, c]));
  for (const row of document.querySelectorAll("details.tool[data-tool]")) {
    const change = byName.get(row.dataset.tool);
    let mark = row.querySelector(".pin-mark");
    if (!change) {
      mark?.remove();
      continue;
    }
    if (!mark) {
      mark = h(
        "button",
        {
          type: "button",
          class: "badge pin-badge pin-changed pin-mark",
          title: "Its definition changed since it was pinned: show the diff",
          onclick: (event) => {
            event.preventDefault(); // a button in a <summary> would otherwise open the row
            event.stopPropagation();
            reveal(row.dataset.tool);
          },
        },
        "changed",
      );
      row.querySelector(".tool-line")?.append(mark);
    }
  }
}

/** Show one change's diff in the changes panel. */
export function reveal(name) {
  const found = entries.get(name);
  if (!found) return;
  found.showDiff(true);
  found.el.scrollIntoView({ block: "nearest" });
  found.el.querySelector("button")?.focus();
}

export async function refreshChanges() {
  const answer = await api("tools/changes");
  changes = answer.changes || [];
  section.hidden = !changes.length && !status.textContent;
  section.dataset.pinning = answer.pinning;
  const names = new Set(changes.map((c) => c.name));
  for (const [name, e] of entries) {
    if (!names.has(name)) {
      e.el.remove();
      entries.delete(name);
    }
  }
  for (const change of changes) {
    const key = change.name;
    const old = entries.get(key);
    if (old && old.digest === change.currentDigest) continue;
    const fresh = { ...entry(change), digest: change.currentDigest };
    if (old) old.el.replaceWith(fresh.el);
    else list.append(fresh.el);
    entries.set(key, fresh);
  }
  if (!changes.length) replace(list, h("p", { class: "muted" }, "No tool has changed since it was pinned."));
  else list.querySelector(":scope > p.muted")?.remove();
  markTools();
}

/** Start (app.js loads the changes with the rest): `approved(name)` is called after an approval (the app refreshes the catalog). */
export function setupPinning(approved) {
  onApproved = approved;
}
