// Tiny DOM helpers. Everything that comes from the API is inserted as text (textContent, attribute values
// set through properties), never parsed as HTML: tool descriptions and stderr come from untrusted servers.

/**
 * Create an element: h("button", {class: "primary", onclick: fn, "aria-label": "..."}, "text", child, …).
 * Attribute keys starting with "on" add event listeners; `dataset` takes an object; `hidden`, `disabled`,
 * `checked`, `value`, … are set as properties; anything else with setAttribute (never "style": the page's
 * Content-Security-Policy forbids inline styles, use classes). Children: strings (as text), nodes, arrays,
 * and null/undefined/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (PROPS.has(key)) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

const PROPS = new Set([
  "hidden", "disabled", "checked", "value", "selected", "required", "open", "multiple",
  "readOnly", "type", "name", "id", "htmlFor", "rows", "step", "min", "max", "placeholder", "src", "alt",
  "href", "title", "autocomplete", "spellcheck", "maxLength", "minLength", "controls", "indeterminate",
]);

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let counter = 0;
/** A unique id for label/aria wiring (names from the API never become ids). */
export function uid(prefix = "id") {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** A visually hidden span for screen readers. */
export function srOnly(text) {
  return h("span", { class: "sr-only" }, text);
}

/** "3 s ago", "5 min", "2 h 10 min", "3 d" for a duration in seconds. */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return m % 60 ? `${hr} h ${m % 60} min` : `${hr} h`;
  return `${Math.floor(hr / 24)} d`;
}

export function pretty(value) {
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}
