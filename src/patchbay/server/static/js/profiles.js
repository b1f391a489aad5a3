// The Profiles panel: every profile (GET /api/profiles) with its patterns and, on demand, its tools
// (GET /api/profiles/{name}); for an admin a form to create or edit one (PUT /api/profiles/{name}) and a
// Delete button (DELETE). The API's validation error is shown beside the form, never a blank failure.

import { api } from "./api.js";
import { h, replace, uid } from "./dom.js";

const $ = (id) => document.getElementById(id);
const list = $("profile-list");
const form = $("profile-form");
const error = $("profile-error");
const status = $("profile-status");

const lines = (text) => text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);

function profileCard(p) {
  const titleId = uid("profile");
  const tools = h("ul", { class: "profile-tools" });
  const details = h("details", { class: "profile-tools-box" }, h("summary", {}, `Tools (${p.tool_count})`), tools);
  details.addEventListener("toggle", async () => {
    if (!details.open) return;
    replace(tools, h("li", { class: "muted" }, "Loading…"));
    try {
      const full = await api(`profiles/${encodeURIComponent(p.name)}`);
      replace(tools, full.tool_names.length ? full.tool_names.map((n) => h("li", { class: "mono" }, n)) : h("li", { class: "muted" }, "No tools."));
    } catch (err) {
      replace(tools, h("li", { class: "form-error" }, err.message));
    }
  });
  const yes = h("button", { type: "button", class: "button small danger admin-only", onclick: () => remove() }, "Yes, delete");
  const no = h("button", { type: "button", class: "button small admin-only", onclick: () => confirming(false) }, "Keep it");
  const del = h("button", { type: "button", class: "button small danger-text admin-only", "aria-label": `Delete profile ${p.name}`, onclick: () => confirming(true) }, "Delete");
  const edit = h("button", { type: "button", class: "button small admin-only", "aria-label": `Edit profile ${p.name}`, onclick: () => fill(p) }, "Edit");
  const actions = h("div", { class: "actions" }, edit, del);
  const confirm = h("div", { class: "actions confirm", hidden: true }, h("span", { class: "confirm-text" }, `Delete profile ${p.name}?`), yes, no);

  function confirming(on) {
    actions.hidden = on;
    confirm.hidden = !on;
  }

  async function remove() {
    yes.disabled = true;
    try {
      await api(`profiles/${encodeURIComponent(p.name)}`, { method: "DELETE" });
      status.textContent = `Deleted profile ${p.name}.`;
    } catch (err) {
      status.textContent = `Could not delete ${p.name}: ${err.message}`;
    }
    await refreshProfiles();
  }

  const facts = [
    ["Servers", p.servers?.length ? p.servers.join(", ") : "any"],
    ["Tools", p.tools?.length ? p.tools.join(", ") : "any"],
    ["Discovery", p.discovery || "full"],
    ["Endpoint", `/mcp/${p.name}`],
  ];
  return h(
    "article",
    { class: "card profile-card", "aria-labelledby": titleId, dataset: { profile: p.name } },
    h("div", { class: "card-head" }, h("h3", { id: titleId, class: "card-title" }, p.name), h("span", { class: "badge" }, `${p.tool_count} tool${p.tool_count === 1 ? "" : "s"}`)),
    h("dl", { class: "facts" }, facts.map(([k, v]) => h("div", { class: "fact" }, h("dt", {}, k), h("dd", {}, v)))),
    p.unknown_servers?.length ? h("p", { class: "problems" }, `Not configured: ${p.unknown_servers.join(", ")}`) : null,
    details,
    actions,
    confirm,
  );
}

function fill(p) {
  form.elements.name.value = p.name;
  form.elements.servers.value = (p.servers || []).join("\n");
  form.elements.tools.value = (p.tools || []).join("\n");
  form.elements.discovery.value = p.discovery || "full";
  error.hidden = true;
  form.elements.name.focus();
}

export async function refreshProfiles() {
  const profiles = await api("profiles");
  list.removeAttribute("aria-busy");
  replace(list, profiles.length ? profiles.map(profileCard) : h("p", { class: "muted" }, "No profiles. Each one serves a subset of the tools at /mcp/<name>."));
}

async function save(event) {
  event.preventDefault();
  error.hidden = true;
  const name = form.elements.name.value.trim();
  const body = { discovery: form.elements.discovery.value };
  const servers = lines(form.elements.servers.value);
  const tools = lines(form.elements.tools.value);
  if (servers.length) body.servers = servers;
  if (tools.length) body.tools = tools;
  const submit = form.querySelector("button[type=submit]");
  submit.disabled = true;
  try {
    await api(`profiles/${encodeURIComponent(name)}`, { method: "PUT", body });
    status.textContent = `Saved profile ${name}.`;
    form.reset();
    await refreshProfiles();
  } catch (err) {
    error.textContent = err.message || `Could not save profile ${name}.`;
    error.hidden = false;
  } finally {
    submit.disabled = false;
  }
}

export function setupProfiles() {
  form.addEventListener("submit", save);
}
