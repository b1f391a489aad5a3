// The patchbay dashboard: servers and agents with their state, the tool catalog with a "try it" form per
// tool, all kept live from /api/events. Plain ES modules, no build step. Every string that comes from the
// API (and so from upstream servers) is inserted as text.

import { createActivity } from "./activity.js";
import { ApiError, api, apiResult, getToken, setToken, setTokenPrompt } from "./api.js";
import { duration, h, pretty, replace, uid } from "./dom.js";
import { markTools, refreshChanges, setupPinning } from "./pinning.js";
import { refreshProfiles, setupProfiles } from "./profiles.js";
import { renderResult } from "./result.js";
import { loadRole } from "./roles.js";
import { buildSchemaFields, parseJsonObject, report } from "./schema-form.js";
import { streamEvents } from "./sse.js";

const $ = (id) => document.getElementById(id);

const state = {
  servers: [], // ServerView objects, config order
  agents: [],
  tools: [], // MCP Tool objects
  toolServer: new Map(), // tool name → server or agent name
  loaded: { servers: false, agents: false, tools: false },
};

// --- notifications ----------------------------------------------------------------------------------------

function notify(message, kind = "info") {
  const region = $("toasts");
  const toast = h(
    "div",
    { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : null },
    h("p", {}, message),
    h("button", { type: "button", class: "button ghost small", onclick: () => toast.remove() }, "Dismiss"),
  );
  region.append(toast);
  while (region.children.length > 4) region.firstElementChild.remove();
  setTimeout(() => toast.remove(), kind === "error" ? 12000 : 6000);
}

function failure(err) {
  if (err instanceof ApiError) return err.message;
  return `Could not reach patchbay (${err?.message || err}).`;
}

// --- refreshing -------------------------------------------------------------------------------------------

/** A debounced, serialised refresher: calls coalesce, and a refresh never overlaps the previous one. */
function refresher(fn, delay = 60) {
  let timer = null;
  let running = false;
  let again = false;
  async function run() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await fn();
    } catch (err) {
      if (err instanceof ApiError) notify(failure(err), "error");
    } finally {
      running = false;
      if (again) {
        again = false;
        kick(0);
      }
    }
  }
  function kick(ms = delay) {
    clearTimeout(timer);
    timer = setTimeout(run, ms);
  }
  return kick;
}

const refreshServers = refresher(async () => {
  state.servers = await api("servers");
  state.loaded.servers = true;
  renderServers();
  renderSummary();
});

const refreshAgents = refresher(async () => {
  state.agents = await api("agents");
  state.loaded.agents = true;
  renderAgents();
  renderSummary();
});

const refreshTools = refresher(async () => {
  const tools = await api("tools?format=mcp");
  // Which server each tool comes from: exact, per server; else the name's prefix.
  const owners = new Map();
  const sources = state.servers.filter((s) => s.tool_count > 0).map((s) => s.name);
  const lists = await Promise.all(
    sources.map((name) => api(`tools?format=mcp&server=${encodeURIComponent(name)}`).catch(() => [])),
  );
  sources.forEach((name, i) => lists[i].forEach((t) => owners.set(t.name, name)));
  for (const t of tools) {
    if (!owners.has(t.name) && t.name.includes("__")) owners.set(t.name, t.name.split("__")[0]);
  }
  state.tools = tools;
  state.toolServer = owners;
  state.loaded.tools = true;
  renderTools();
  renderSummary();
});

// In cluster mode (patchbay serve --cluster): how many replicas run the same config, and who holds what.
const refreshCluster = refresher(async () => {
  const box = $("cluster-stat");
  let c;
  try {
    c = await api("cluster");
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) return void (box.hidden = true); // admins only
    throw err;
  }
  box.hidden = !c.enabled;
  if (!c.enabled) return;
  const healthy = c.replicas.filter((r) => r.healthy).length;
  $("stat-cluster").textContent = c.redis.ok ? `${healthy} / ${c.replicas.length}` : "Redis down";
  const lines = c.replicas.map(
    (r) => `${r.id === c.replica ? "▸ " : ""}${r.id} (${r.address}): config v${r.configVersion}; agents: ${r.agents.join(", ") || "none"}`,
  );
  if (!c.redis.ok) lines.push(`Redis ${c.redis.url} is unreachable: ${c.redis.error}`);
  box.title = lines.join("\n");
});

const refreshPins = refresher(refreshChanges);
const refreshProfileList = refresher(refreshProfiles);

function refreshAll() {
  refreshPins(0);
  refreshProfileList(0);
  refreshServers(0);
  refreshAgents(0);
  refreshTools(0);
  refreshCluster(0);
}

// --- summary ----------------------------------------------------------------------------------------------

function renderSummary() {
  const enabled = state.servers.filter((s) => s.enabled);
  const ready = enabled.filter((s) => s.state === "ready").length;
  if (state.loaded.servers) $("stat-servers").textContent = `${ready} / ${enabled.length}`;
  if (state.loaded.tools) $("stat-tools").textContent = String(state.tools.length);
  if (state.loaded.agents) {
    const connected = state.agents.filter((a) => a.state === "connected").length;
    $("stat-agents").textContent = `${connected} / ${state.agents.length}`;
  }
  const calls = [...state.servers, ...state.agents].reduce((n, s) => n + (s.calls_in_flight || 0), 0);
  if (state.loaded.servers) $("stat-calls").textContent = String(calls);
}

// --- servers ----------------------------------------------------------------------------------------------

const STATE_LABEL = {
  ready: "ready",
  starting: "starting",
  backoff: "retrying",
  failed: "failed",
  needs_auth: "needs sign-in",
  disabled: "disabled",
  stopped: "stopped",
  connected: "connected",
  disconnected: "disconnected",
};

function badge(stateName) {
  return h("span", { class: `badge state state-${stateName}`, dataset: { state: stateName } }, STATE_LABEL[stateName] || stateName);
}

function commandLine(spec) {
  if (!spec) return "";
  if (spec.url) return spec.url;
  const quote = (a) => (/^[\w@%+=:,./${}-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  return [spec.command, ...(spec.args || [])].filter((x) => x !== undefined && x !== null).map(String).map(quote).join(" ");
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

const serverCards = new Map(); // name → card controller

function createServerCard(name) {
  const titleId = uid("srv");
  const ui = { confirming: false, busy: false, status: null };
  const badgeSlot = h("span", { class: "badge-slot" });
  const subtitle = h("p", { class: "card-sub" });
  const facts = h("dl", { class: "facts" });
  const command = h("code", { class: "cmd" });
  const envLine = h("p", { class: "cmd-env", hidden: true });
  const commandBox = h("div", { class: "cmd-box" }, command, envLine);
  const errorBox = h("div", { class: "card-error", hidden: true });
  const problems = h("ul", { class: "problems", hidden: true });
  const stderrPre = h("pre", { class: "stderr", tabindex: "0" });
  const stderrSummary = h("summary", {}, "stderr");
  const stderr = h("details", { class: "stderr-box", hidden: true }, stderrSummary, stderrPre);

  const toggle = h("button", { type: "button", class: "button small admin-only", onclick: () => act(ui.status?.enabled ? "disable" : "enable") }, "Disable");
  const restart = h("button", { type: "button", class: "button small admin-only", onclick: () => act("restart") }, "Restart");
  const remove = h("button", { type: "button", class: "button small danger-text admin-only", onclick: () => confirmRemove(true) }, "Remove");
  // Shown in needs_auth: the flow runs through the hub's own /oauth/callback; the card turns ready by SSE.
  const signIn = h("button", { type: "button", class: "button small primary admin-only", hidden: true, onclick: () => startSignIn() }, "Sign in");
  const actions = h("div", { class: "actions" }, signIn, toggle, restart, remove);
  const confirmYes = h("button", { type: "button", class: "button small danger", onclick: () => act("remove") }, "Yes, remove");
  const confirmNo = h("button", { type: "button", class: "button small", onclick: () => confirmRemove(false) }, "Keep it");
  const confirm = h(
    "div",
    { class: "actions confirm", hidden: true, role: "group", "aria-label": `Confirm removal of ${name}` },
    h("span", { class: "confirm-text" }, `Remove ${name} from the config?`),
    confirmYes,
    confirmNo,
  );

  const el = h(
    "article",
    { class: "card server-card", "aria-labelledby": titleId, dataset: { server: name } },
    h("div", { class: "card-head" }, h("h3", { id: titleId, class: "card-title" }, name), badgeSlot),
    subtitle,
    facts,
    commandBox,
    errorBox,
    problems,
    stderr,
    actions,
    confirm,
  );

  async function startSignIn() {
    const tab = window.open("", "_blank"); // opened now, inside the click, so no popup blocker stops it
    try {
      const { url } = await api(`servers/${encodeURIComponent(name)}/auth`, { method: "POST" });
      if (!url) {
        if (tab) tab.close();
        notify(`${name}: token fetched (client credentials).`);
      } else if (tab) {
        tab.location.href = url;
        notify(`Sign in to ${name} in the new tab; this page updates when it is done.`);
      } else {
        window.location.href = url;
      }
    } catch (err) {
      if (tab) tab.close();
      notify(`Could not start signing in to ${name}: ${failure(err)}`, "error");
    }
  }

  function confirmRemove(on) {
    ui.confirming = on;
    actions.hidden = on;
    confirm.hidden = !on;
    (on ? confirmNo : remove).focus();
  }

  async function act(action) {
    if (ui.busy) return;
    ui.busy = true;
    el.setAttribute("aria-busy", "true");
    for (const b of [toggle, restart, remove, confirmYes, confirmNo]) b.disabled = true;
    const verb = { enable: "Enabling", disable: "Disabling", restart: "Restarting", remove: "Removing" }[action];
    replace(badgeSlot, h("span", { class: "badge state state-busy" }, `${verb}…`));
    try {
      if (action === "remove") {
        await api(`servers/${encodeURIComponent(name)}`, { method: "DELETE" });
        notify(`Removed ${name}.`);
      } else {
        const status = await api(`servers/${encodeURIComponent(name)}/${action}`, { method: "POST" });
        const done = { enable: "enabled", disable: "disabled", restart: "restarted" }[action];
        notify(`${name} ${done}: ${STATE_LABEL[status.state] || status.state}${status.last_error ? ` (${status.last_error})` : ""}.`, status.state === "failed" ? "error" : "info");
        update(status);
      }
    } catch (err) {
      notify(`Could not ${action} ${name}: ${failure(err)}`, "error");
    } finally {
      ui.busy = false;
      el.removeAttribute("aria-busy");
      for (const b of [toggle, restart, remove, confirmYes, confirmNo]) b.disabled = false;
      if (ui.confirming && action === "remove") confirmRemove(false);
      if (ui.status) update(ui.status);
      refreshServers();
    }
  }

  function setState(stateName) {
    if (!stateName) return;
    el.dataset.state = stateName;
    replace(badgeSlot, badge(stateName));
  }

  function update(s) {
    ui.status = s;
    if (!ui.busy) setState(s.state);
    const info = s.server_info || {};
    const bits = [];
    if (info.name) bits.push(`${info.title || info.name}${info.version ? ` ${info.version}` : ""}`);
    bits.push(s.transport);
    if (s.pid) bits.push(`pid ${s.pid}`);
    subtitle.textContent = bits.join(" · ");

    const uptime =
      s.state === "ready" && s.ready_since ? duration(Date.now() / 1000 - s.ready_since) : s.state === "backoff" && s.retry_at ? `retry in ${duration(s.retry_at - Date.now() / 1000)}` : "—";
    replace(
      facts,
      h("div", { class: "fact" }, fact("Protocol", s.protocol_version || "—")),
      h("div", { class: "fact" }, fact("Tools", String(s.tool_count))),
      h("div", { class: "fact" }, fact("Restarts", String(s.restarts))),
      h("div", { class: "fact" }, fact(s.state === "backoff" ? "Next" : "Up", uptime)),
    );
    setText(command, commandLine(s.spec));
    const secrets = s.spec?.url ? ["headers", s.spec?.headers] : ["env", s.spec?.env]; // values are redacted
    const keys = Object.keys(secrets[1] || {});
    envLine.hidden = !keys.length;
    setText(envLine, keys.length ? `${secrets[0]}: ${keys.join(", ")}` : "");

    errorBox.hidden = !s.last_error;
    const errorLabel = s.state === "needs_auth" ? "Sign-in needed" : "Last error";
    if (s.last_error && (errorBox.dataset.error !== s.last_error || errorBox.dataset.label !== errorLabel)) {
      errorBox.dataset.error = s.last_error;
      errorBox.dataset.label = errorLabel;
      replace(errorBox, h("span", { class: "card-error-label" }, errorLabel), " ", s.last_error);
    }

    const notes = [...(s.problems || []), ...(s.conflicts || []).map((c) => `conflict: ${c}`)];
    problems.hidden = !notes.length;
    replace(problems, notes.map((p) => h("li", {}, p)));

    const tail = s.stderr_tail || [];
    stderr.hidden = !tail.length;
    setText(stderrSummary, `stderr (last ${tail.length} line${tail.length === 1 ? "" : "s"})`);
    setText(stderrPre, tail.join("\n")); // unchanged text is left alone, so a selection in it survives

    toggle.textContent = s.enabled ? "Disable" : "Enable";
    toggle.setAttribute("aria-label", `${s.enabled ? "Disable" : "Enable"} ${name}`);
    signIn.hidden = s.state !== "needs_auth";
    signIn.setAttribute("aria-label", `Sign in to ${name}`);
    restart.setAttribute("aria-label", `Restart ${name}`);
    restart.disabled = ui.busy || !s.enabled;
    remove.setAttribute("aria-label", `Remove ${name}`);
  }

  return { el, update, setState: (st) => !ui.busy && setState(st) };
}

function renderServers() {
  const list = $("server-list");
  list.removeAttribute("aria-busy");
  const names = new Set(state.servers.map((s) => s.name));
  for (const [name, card] of serverCards) {
    if (!names.has(name)) {
      card.el.remove();
      serverCards.delete(name);
    }
  }
  list.querySelector(".placeholder")?.remove();
  let previous = null;
  for (const s of state.servers) {
    let card = serverCards.get(s.name);
    if (!card) {
      card = createServerCard(s.name);
      serverCards.set(s.name, card);
    }
    card.update(s);
    const expected = previous ? previous.nextElementSibling : list.firstElementChild;
    if (expected !== card.el) (previous ? previous.after(card.el) : list.prepend(card.el));
    previous = card.el;
  }
  let empty = list.querySelector(".empty");
  if (!state.servers.length && !empty) {
    empty = h("div", { class: "empty" }, h("p", {}, "No servers yet."), h("p", { class: "muted" }, "Add one with the button above, or list them in the config file."));
    list.append(empty);
  } else if (state.servers.length && empty) {
    empty.remove();
  }
}

// --- agents -----------------------------------------------------------------------------------------------

function renderAgents() {
  const list = $("agent-list");
  if (!state.agents.length) {
    replace(list, h("p", { class: "muted empty-line" }, "No remote agents. Machines running ", h("code", {}, "patchbay agent"), " appear here once accepted (POST /api/agents)."));
    return;
  }
  replace(
    list,
    state.agents.map((a) => {
      const titleId = uid("agent");
      const since = a.connected_since ? duration(Date.now() / 1000 - a.connected_since) : "—";
      return h(
        "article",
        { class: "card agent-card", "aria-labelledby": titleId, dataset: { agent: a.name, state: a.state } },
        h("div", { class: "card-head" }, h("h3", { id: titleId, class: "card-title" }, a.name), badge(a.state)),
        h("p", { class: "card-sub" }, [a.server_info?.name, a.address].filter(Boolean).join(" · ") || "remote agent"),
        h(
          "dl",
          { class: "facts" },
          h("div", { class: "fact" }, fact("Protocol", a.protocol_version || "—")),
          h("div", { class: "fact" }, fact("Tools", String(a.tool_count))),
          h("div", { class: "fact" }, fact("Connections", String(a.connections))),
          h("div", { class: "fact" }, fact("Up", a.state === "connected" ? since : "—")),
        ),
        a.last_error ? h("div", { class: "card-error" }, h("span", { class: "card-error-label" }, "Last error"), " ", a.last_error) : null,
      );
    }),
  );
}

// --- tools ------------------------------------------------------------------------------------------------

const toolRows = new Map(); // name → row controller

const ANNOTATIONS = [
  ["readOnlyHint", true, "read-only"],
  ["destructiveHint", true, "destructive"],
  ["idempotentHint", true, "idempotent"],
  ["openWorldHint", true, "open world"],
];

function createToolRow(tool) {
  const row = { tool, json: JSON.stringify(tool), server: "", built: false, search: "" };
  const bodyEl = h("div", { class: "tool-body" });
  const nameEl = h("span", { class: "tool-name" });
  const titleEl = h("span", { class: "tool-title" });
  const serverEl = h("span", { class: "chip server-chip" });
  const descEl = h("span", { class: "tool-desc" });
  const summary = h("summary", { class: "tool-summary" }, h("span", { class: "tool-line" }, nameEl, titleEl, serverEl), descEl);
  const el = h("details", { class: "tool", dataset: { tool: tool.name } }, summary, bodyEl);
  el.addEventListener("toggle", () => {
    if (el.open && !row.built) build();
  });

  function fill() {
    const t = row.tool;
    nameEl.textContent = t.name;
    titleEl.textContent = t.title && t.title !== t.name ? t.title : "";
    titleEl.hidden = !titleEl.textContent;
    serverEl.textContent = row.server;
    serverEl.hidden = !row.server;
    descEl.textContent = t.description || "No description.";
    row.search = [t.name, t.title, t.description, row.server].filter(Boolean).join(" ").toLowerCase();
  }

  function build() {
    row.built = true;
    replace(bodyEl, toolBody(row.tool, row.server));
  }

  row.el = el;
  row.update = (t, server) => {
    const json = JSON.stringify(t);
    const changed = json !== row.json;
    row.tool = t;
    row.json = json;
    row.server = server;
    fill();
    if (changed && row.built) {
      row.built = false;
      bodyEl.replaceChildren();
      if (el.open) build();
    }
  };
  row.server = state.toolServer.get(tool.name) || "";
  fill();
  return row;
}

function toolBody(tool, server) {
  const chips = [];
  if (server) chips.push(h("span", { class: "chip" }, `server: ${server}`));
  const ann = tool.annotations || {};
  for (const [key, value, label] of ANNOTATIONS) if (ann[key] === value) chips.push(h("span", { class: `chip ann-${label.replace(" ", "-")}` }, label));
  if (tool.outputSchema) chips.push(h("span", { class: "chip" }, "structured output"));

  const fields = buildSchemaFields(tool.inputSchema);
  const formFields = h("fieldset", { class: "plain form-fields" }, h("legend", { class: "sr-only" }, "Arguments"), fields.element);
  const jsonId = uid("json");
  const jsonArea = h("textarea", { id: jsonId, class: "mono", rows: 6, spellcheck: false });
  const jsonPanel = h(
    "fieldset",
    { class: "plain json-fields", hidden: true, disabled: true },
    h("legend", { class: "sr-only" }, "Arguments as JSON"),
    h("div", { class: "field" }, h("label", { for: jsonId, class: "field-label" }, "Arguments ", h("span", { class: "type" }, "JSON object")), jsonArea),
  );
  const modeName = uid("mode");
  const formRadio = h("input", { type: "radio", name: modeName, id: `${modeName}-form`, value: "form", checked: true });
  const jsonRadio = h("input", { type: "radio", name: modeName, id: `${modeName}-json`, value: "json" });
  const modes = h(
    "fieldset",
    { class: "segmented small" },
    h("legend", { class: "sr-only" }, "Edit the arguments as"),
    formRadio,
    h("label", { for: formRadio.id }, "Form"),
    jsonRadio,
    h("label", { for: jsonRadio.id }, "JSON"),
  );
  const setMode = (mode) => {
    const json = mode === "json";
    if (json) {
      jsonArea.value = pretty(fields.readArguments({ quiet: true }) || {});
    }
    formFields.hidden = formFields.disabled = json;
    jsonPanel.hidden = jsonPanel.disabled = !json;
  };
  formRadio.addEventListener("change", () => setMode("form"));
  jsonRadio.addEventListener("change", () => setMode("json"));

  const timeoutId = uid("timeout");
  const timeout = h("input", { type: "number", id: timeoutId, min: "0.1", step: "any", inputmode: "decimal", class: "timeout-input", placeholder: "default" });
  const call = h("button", { type: "submit", class: "button primary" }, "Call tool");
  const result = h("div", { class: "result", hidden: true, "aria-live": "polite" });

  const form = h(
    "form",
    { class: "try-form", "aria-label": `Try ${tool.name}` },
    h("div", { class: "try-head" }, h("h4", {}, "Try it"), modes),
    formFields,
    jsonPanel,
    h(
      "div",
      { class: "try-actions" },
      h("div", { class: "timeout" }, h("label", { for: timeoutId }, "Timeout (s)"), timeout),
      call,
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const args = jsonRadio.checked ? parseJsonObject(jsonArea) : fields.readArguments();
    if (!args) return;
    const body = { arguments: args };
    if (timeout.value !== "") {
      const seconds = Number(timeout.value);
      if (!(seconds > 0)) return report(timeout, "A positive number of seconds.");
      body.timeout = seconds;
    }
    call.disabled = true;
    call.textContent = "Calling…";
    result.hidden = false;
    result.setAttribute("aria-busy", "true");
    result.className = "result result-pending";
    replace(result, h("p", { class: "muted" }, `Calling ${tool.name}…`));
    const started = performance.now();
    let answer;
    try {
      answer = await apiResult(`tools/${encodeURIComponent(tool.name)}/call`, { method: "POST", body });
    } catch (err) {
      answer = { networkError: err?.message || String(err) };
    }
    renderResult(result, answer, performance.now() - started);
    result.removeAttribute("aria-busy");
    call.disabled = false;
    call.textContent = "Call tool";
  });

  return [
    tool.description ? h("p", { class: "tool-description" }, tool.description) : null,
    chips.length ? h("div", { class: "chips" }, chips) : null,
    form,
    result,
    h("details", { class: "schema" }, h("summary", {}, "Input schema"), h("pre", { class: "out out-json" }, pretty(tool.inputSchema ?? {}))),
    tool.outputSchema ? h("details", { class: "schema" }, h("summary", {}, "Output schema"), h("pre", { class: "out out-json" }, pretty(tool.outputSchema))) : null,
  ];
}

function renderTools() {
  const list = $("tool-list");
  list.removeAttribute("aria-busy");
  list.querySelector(".placeholder")?.remove();
  const names = new Set(state.tools.map((t) => t.name));
  for (const [name, row] of toolRows) {
    if (!names.has(name)) {
      row.el.remove();
      toolRows.delete(name);
    }
  }
  let previous = null;
  for (const tool of state.tools) {
    let row = toolRows.get(tool.name);
    if (!row) {
      row = createToolRow(tool);
      toolRows.set(tool.name, row);
    }
    row.update(tool, state.toolServer.get(tool.name) || "");
    const expected = previous ? previous.nextElementSibling : list.firstElementChild;
    if (expected !== row.el) (previous ? previous.after(row.el) : list.prepend(row.el));
    previous = row.el;
  }
  markTools();
  applySearch();
}

function applySearch() {
  const query = $("tool-search").value.trim().toLowerCase();
  const words = query.split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const row of toolRows.values()) {
    const match = words.every((w) => row.search.includes(w));
    row.el.hidden = !match;
    if (match) shown += 1;
  }
  const total = toolRows.size;
  $("tool-count").textContent = query ? `${shown} of ${total} tools` : `${total} tool${total === 1 ? "" : "s"}`;
  const list = $("tool-list");
  let empty = list.querySelector(".empty");
  const message = !total ? "No tools: no server is ready yet." : !shown ? `No tool matches “${$("tool-search").value.trim()}”.` : null;
  if (message) {
    if (!empty) {
      empty = h("div", { class: "empty" });
      list.append(empty);
    }
    replace(empty, h("p", {}, message));
  } else {
    empty?.remove();
  }
}

// --- adding a server --------------------------------------------------------------------------------------

function lines(text) {
  return text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
}

function pairs(text, separator, what, control) {
  const out = {};
  for (const line of lines(text)) {
    const at = line.indexOf(separator);
    if (at <= 0) {
      report(control, `Each line must be ${what}: “${line}” is not.`);
      return null;
    }
    out[line.slice(0, at).trim()] = line.slice(at + separator.length).trim();
  }
  return out;
}

function setupAddDialog() {
  const dialog = $("add-dialog");
  const form = $("add-form");
  const error = $("add-error");
  const submit = $("add-submit");
  const panels = [...form.querySelectorAll(".kind-panel")];
  const kind = () => form.querySelector('input[name="kind"]:checked').value;
  const showKind = () => {
    for (const p of panels) p.hidden = p.disabled = p.dataset.kind !== kind();
  };
  form.querySelectorAll('input[name="kind"]').forEach((r) => r.addEventListener("change", showKind));
  form.querySelectorAll("[data-close]").forEach((b) => b.addEventListener("click", () => dialog.close()));
  $("add-server").addEventListener("click", () => {
    error.hidden = true;
    dialog.showModal();
    $("add-name").focus();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const name = $("add-name").value.trim();
    let spec;
    if (kind() === "command") {
      const env = pairs($("add-env").value, "=", "NAME=value", $("add-env"));
      if (!env) return;
      spec = { command: $("add-command").value.trim() };
      const args = lines($("add-args").value);
      if (args.length) spec.args = args;
      if (Object.keys(env).length) spec.env = env;
    } else if (kind() === "url") {
      const headers = pairs($("add-headers").value, ":", "Name: value", $("add-headers"));
      if (!headers) return;
      spec = { url: $("add-url").value.trim() };
      if (Object.keys(headers).length) spec.headers = headers;
    } else {
      spec = parseJsonObject($("add-json"));
      if (!spec) return;
    }
    submit.disabled = true;
    submit.textContent = "Adding…";
    form.setAttribute("aria-busy", "true");
    try {
      const status = await api("servers", { method: "POST", body: { name, spec } });
      dialog.close();
      form.reset();
      showKind();
      const failed = status.state === "failed" || status.state === "backoff";
      notify(
        `Added ${name}: ${STATE_LABEL[status.state] || status.state}${status.last_error ? ` (${status.last_error})` : ""}.`,
        failed ? "error" : "info",
      );
      await new Promise((resolve) => setTimeout(resolve, 0));
      refreshServers(0);
      refreshTools();
    } catch (err) {
      error.textContent = failure(err);
      error.hidden = false;
    } finally {
      submit.disabled = false;
      submit.textContent = "Add server";
      form.removeAttribute("aria-busy");
    }
  });
}

// --- the token ----------------------------------------------------------------------------------------

function setupToken() {
  const dialog = $("token-dialog");
  const form = $("token-form");
  const input = $("token-input");
  const reason = $("token-reason");
  const forget = $("forget-token");
  const defaultReason = [...reason.childNodes].map((n) => n.cloneNode(true));
  let resolve = null;
  dialog.addEventListener("cancel", (e) => e.preventDefault()); // nothing to show without it
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    dialog.close();
    input.value = "";
    forget.hidden = false;
    resolve?.(token);
    resolve = null;
  });
  setTokenPrompt(
    (why) =>
      new Promise((res) => {
        resolve = res;
        if (why === "rejected") reason.textContent = "That token was not accepted. Check it and try again.";
        else reason.replaceChildren(...defaultReason.map((n) => n.cloneNode(true)));
        reason.classList.toggle("form-error", why === "rejected");
        setConnection("locked");
        if (!dialog.open) dialog.showModal();
        input.focus();
      }),
  );
  forget.hidden = !getToken();
  forget.addEventListener("click", () => {
    setToken("");
    location.reload();
  });
}

// --- live updates -------------------------------------------------------------------------------------

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  locked: "Token required",
};

function setConnection(status) {
  const el = $("connection");
  el.dataset.state = status;
  $("connection-text").textContent = CONNECTION_TEXT[status] || status;
}

const ANNOUNCED = new Set(["ready", "failed", "disabled", "backoff", "needs_auth"]);

let activity = null; // the Activity view (activity.js), fed by the call events

function onEvent({ type, data }) {
  switch (type) {
    case "call_started":
    case "call_finished":
      activity?.onEvent(type, data);
      break;
    case "server_state":
      serverCards.get(data.server)?.setState(data.state);
      if (ANNOUNCED.has(data.state) && data.previous !== data.state) {
        const why = data.error ? `: ${data.error}` : "";
        notify(`${data.server} is ${STATE_LABEL[data.state] || data.state}${why}`, data.state === "failed" ? "error" : "info");
      }
      refreshServers();
      break;
    case "catalog":
      refreshServers();
      refreshTools();
      refreshProfileList(); // tool counts
      break;
    case "tool_changed":
      notify(`${data.tool} changed since it was pinned${data.blocked ? " and is withheld until approved" : ""}.`, "error");
      refreshPins(0);
      refreshServers();
      refreshTools();
      break;
    case "tool_approved":
      refreshPins(0);
      refreshServers();
      refreshTools();
      break;
    case "profiles":
      refreshProfileList(0);
      break;
    case "config":
      refreshServers();
      if (data.action?.startsWith("agent_")) refreshAgents();
      break;
    case "agent":
      refreshAgents();
      refreshTools();
      break;
    case "config_reload":
      if (data.ok === false) notify(`The config file was not applied: ${data.error || "invalid"}`, "error");
      else if (data.added?.length || data.removed?.length || data.changed?.length) notify("Config file reloaded.");
      refreshAll();
      break;
    default: // events_dropped, or a type this page does not know: start over
      refreshAll();
  }
}

// --- start --------------------------------------------------------------------------------------------

function start() {
  setupToken();
  setupAddDialog();
  const search = $("tool-search");
  search.addEventListener("input", applySearch);
  document.addEventListener("keydown", (e) => {
    const typing = e.target instanceof HTMLElement && e.target.closest("input, textarea, select, [contenteditable]");
    if (e.key === "/" && !typing && !document.querySelector("dialog[open]")) {
      e.preventDefault();
      search.focus();
    }
  });
  // Stderr tails, uptimes and calls in flight have no events: poll them gently while the page is seen.
  setInterval(() => {
    if (document.visibilityState === "visible") {
      refreshServers();
      refreshAgents();
      refreshCluster();
    }
  }, 10000);
  setupPinning(() => refreshTools(0));
  setupProfiles();
  refreshAll();
  activity = createActivity($("activity"));
  const opened = () => {
    loadRole(); // the token may have changed (a 401 asked for another one)
    refreshAll();
    activity.opened();
  };
  streamEvents({ onEvent, onOpen: opened, onStatus: setConnection, path: "events?calls=true" });
}

start();
