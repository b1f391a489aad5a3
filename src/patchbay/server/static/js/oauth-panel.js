// The "OAuth clients" panel: clients of the built-in authorization server (auth.server) and the grants
// approved for them on the consent page, each revocable. A module of its own (not part of app.js) so the
// rest of the dashboard can change without touching it. Hidden when the hub has no auth.server (404).

import { ApiError, api } from "./api.js";
import { duration, h, replace, uid } from "./dom.js";

const section = document.getElementById("oauth-section");
const list = document.getElementById("oauth-list");
const status = document.getElementById("oauth-status");

function ago(epoch) {
  return typeof epoch === "number" ? `${duration(Date.now() / 1000 - epoch)} ago` : "never";
}

async function revoke(path, what, button) {
  button.disabled = true;
  try {
    await api(path, { method: "DELETE" });
    status.textContent = `${what} revoked.`;
  } catch (err) {
    status.textContent = `Could not revoke ${what}: ${err.message}`;
  }
  await load();
}

function grantRow(grant) {
  const button = h(
    "button",
    {
      type: "button",
      class: "button small danger-text admin-only",
      dataset: { grant: grant.id },
      onclick: (event) => revoke(`oauth/grants/${encodeURIComponent(grant.id)}`, `grant ${grant.id}`, event.currentTarget),
    },
    "Revoke",
  );
  return h(
    "li",
    { class: "oauth-grant", dataset: { grant: grant.id } },
    h("span", { class: "oauth-grant-text" }, `${grant.role}${grant.profile ? ` · profile ${grant.profile}` : ""}`,
      ` · approved by ${grant.approved_by} ${ago(grant.created_at)} · last used ${ago(grant.last_used_at)}`),
    button,
  );
}

function clientCard(client, grants) {
  const titleId = uid("oauth-client");
  const forget = h(
    "button",
    {
      type: "button",
      class: "button small danger-text admin-only",
      onclick: (event) =>
        revoke(`oauth/clients/${encodeURIComponent(client.client_id)}`, `client ${client.client_name || client.client_id}`, event.currentTarget),
    },
    "Forget client",
  );
  const redirects = client.redirect_uris.map((u) => {
    try {
      return new URL(u).host;
    } catch {
      return u;
    }
  });
  return h(
    "article",
    { class: "card oauth-card", "aria-labelledby": titleId, dataset: { client: client.client_id, state: grants.length ? "ready" : "" } },
    h("div", { class: "card-head" }, h("h3", { id: titleId, class: "card-title" }, client.client_name || "unnamed client"), forget),
    h("p", { class: "card-sub" }, `${client.kind === "metadata_document" ? "metadata document" : "registered"} · returns to ${redirects.join(", ") || "-"} · ${client.client_id}`),
    grants.length
      ? h("ul", { class: "oauth-grants" }, grants.map(grantRow))
      : h("p", { class: "muted" }, "No grant: not approved on the consent page (or revoked)."),
  );
}

async function load() {
  let clients;
  let grants;
  try {
    [clients, grants] = await Promise.all([api("oauth/clients"), api("oauth/grants")]);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      section.hidden = true; // no built-in authorization server on this hub
      return;
    }
    section.hidden = false;
    replace(list, h("p", { class: "muted" }, `OAuth clients unavailable: ${err.message}`));
    return;
  }
  section.hidden = false;
  list.setAttribute("aria-busy", "false");
  if (!clients.length) {
    replace(list, h("p", { class: "muted placeholder" }, "No client has connected yet. Add this hub as a connector in Claude.ai or ChatGPT."));
    return;
  }
  replace(list, clients.map((c) => clientCard(c, grants.filter((g) => g.client_id === c.client_id))));
}

if (section && list) {
  document.getElementById("oauth-refresh")?.addEventListener("click", () => load());
  load();
}
