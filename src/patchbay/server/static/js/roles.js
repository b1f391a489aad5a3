// The caller's role (GET /api/whoami): management controls are for admins only. Every such control carries
// the class "admin-only"; the stylesheet hides them unless <html data-role="admin">, so a control created
// later (a new server card, a profile) is hidden too, and nothing shows before the role is known. The API
// refuses a non-admin anyway (403); this only spares a viewer buttons that cannot work.

import { api } from "./api.js";

export const me = { name: null, role: null, profile: null, kind: null };

/** Ask who we are and mark the page with the role; a hub that cannot say leaves the page read-only. */
export async function loadRole() {
  try {
    Object.assign(me, await api("whoami"));
  } catch {
    me.role = "viewer";
  }
  document.documentElement.dataset.role = me.role || "viewer";
  const who = document.getElementById("whoami");
  if (who) {
    who.textContent = `${me.name} · ${me.role}${me.profile ? ` · profile ${me.profile}` : ""}`;
    who.hidden = false;
  }
  return me;
}

export const isAdmin = () => me.role === "admin";
