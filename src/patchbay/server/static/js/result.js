// Rendering a tool call's answer: an MCP CallToolResult (text, images, audio, resource links, embedded
// resources, structuredContent, isError) or the hub's own HTTP error. Everything is inserted as text;
// images and audio only as data: URLs of a checked media type and base64 payload.

import { errorMessage } from "./api.js";
import { h, pretty } from "./dom.js";

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const MEDIA_TYPE = /^[a-z]+\/[a-z0-9.+-]+$/i;

function dataUrl(kind, mimeType, data) {
  if (typeof data !== "string" || typeof mimeType !== "string") return null;
  if (!MEDIA_TYPE.test(mimeType) || !mimeType.toLowerCase().startsWith(`${kind}/`)) return null;
  const clean = data.replace(/\s+/g, "");
  if (!BASE64.test(clean)) return null;
  return `data:${mimeType.toLowerCase()};base64,${clean}`;
}

function safeHref(uri) {
  try {
    const url = new URL(uri);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

function sameJson(text, value) {
  try {
    return JSON.stringify(JSON.parse(text)) === JSON.stringify(value);
  } catch {
    return false;
  }
}

function block(item, structured) {
  const type = item && typeof item === "object" ? item.type : undefined;
  if (type === "text") {
    const text = typeof item.text === "string" ? item.text : "";
    if (structured !== undefined && sameJson(text, structured)) return null; // shown as structured content
    return h("pre", { class: "out out-text" }, text);
  }
  if (type === "image") {
    const src = dataUrl("image", item.mimeType, item.data);
    if (!src) return h("p", { class: "muted" }, `An image that cannot be shown (${String(item.mimeType)}).`);
    return h("figure", { class: "out out-image" }, h("img", { src, alt: `Image returned by the tool (${item.mimeType})` }));
  }
  if (type === "audio") {
    const src = dataUrl("audio", item.mimeType, item.data);
    if (!src) return h("p", { class: "muted" }, `Audio that cannot be played (${String(item.mimeType)}).`);
    return h("audio", { class: "out out-audio", controls: true, src, "aria-label": `Audio returned by the tool (${item.mimeType})` });
  }
  if (type === "resource_link") {
    const href = safeHref(item.uri);
    const name = item.title || item.name || item.uri;
    return h(
      "div",
      { class: "out out-link" },
      h("span", { class: "chip" }, "link"),
      " ",
      href ? h("a", { href, rel: "noopener noreferrer", target: "_blank" }, String(name)) : h("code", {}, String(item.uri)),
      item.description ? h("p", { class: "hint" }, String(item.description)) : null,
      item.mimeType ? h("p", { class: "hint" }, String(item.mimeType)) : null,
    );
  }
  if (type === "resource") {
    const res = item.resource || {};
    const body =
      typeof res.text === "string"
        ? h("pre", { class: "out out-text" }, res.text)
        : typeof res.blob === "string"
          ? res.mimeType?.startsWith?.("image/") && dataUrl("image", res.mimeType, res.blob)
            ? h("img", { src: dataUrl("image", res.mimeType, res.blob), alt: `Resource ${res.uri}` })
            : h("p", { class: "muted" }, `Binary content, ${Math.floor((res.blob.length * 3) / 4)} bytes${res.mimeType ? ` (${res.mimeType})` : ""}.`)
          : null;
    return h(
      "div",
      { class: "out out-resource" },
      h("p", {}, h("span", { class: "chip" }, "resource"), " ", h("code", {}, String(res.uri ?? ""))),
      body,
    );
  }
  return h("pre", { class: "out out-json" }, pretty(item));
}

/**
 * Replace `container`'s content with the rendering of one call:
 * {ok, status, body} from apiResult(), or {networkError}; `ms` is the elapsed time.
 */
export function renderResult(container, { ok, status, body, networkError }, ms) {
  container.replaceChildren();
  const took = `${ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`}`;
  if (networkError || !ok) {
    const message = networkError ? `Could not reach patchbay: ${networkError}` : errorMessage(status, body);
    container.className = "result result-error";
    container.append(
      h("div", { class: "result-head" }, h("span", { class: "badge badge-error" }, networkError ? "Network error" : `HTTP ${status}`), h("span", { class: "muted" }, took)),
      h("p", { class: "error-text", role: "alert" }, message),
    );
    if (Array.isArray(body?.suggestions) && body.suggestions.length) {
      container.append(h("p", { class: "hint" }, `Did you mean: ${body.suggestions.join(", ")}?`));
    }
    return;
  }
  const result = body && typeof body === "object" ? body : {};
  const isError = result.isError === true;
  container.className = isError ? "result result-error" : "result result-ok";
  const structured = result.structuredContent;
  const content = Array.isArray(result.content) ? result.content : [];
  const head = h(
    "div",
    { class: "result-head" },
    h("span", { class: isError ? "badge badge-error" : "badge badge-ok" }, isError ? "Tool error" : "Result"),
    h("span", { class: "muted" }, took),
  );
  const blocks = content.map((item) => block(item, structured)).filter(Boolean);
  const parts = [head];
  if (isError) parts.push(h("div", { class: "error-blocks", role: "alert" }, blocks.length ? blocks : h("p", {}, "The tool reported an error.")));
  else parts.push(...blocks);
  if (structured !== undefined) {
    parts.push(h("div", { class: "structured" }, h("p", { class: "out-label" }, "Structured content"), h("pre", { class: "out out-json" }, pretty(structured))));
  }
  if (!isError && !blocks.length && structured === undefined) parts.push(h("p", { class: "muted" }, "The tool returned no content."));
  parts.push(h("details", { class: "raw" }, h("summary", {}, "Raw response"), h("pre", { class: "out out-json" }, pretty(body))));
  container.append(...parts);
}
