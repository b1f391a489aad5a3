// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so we read the
// stream ourselves (ReadableStream + TextDecoder) and parse it per the HTML spec's event-stream format.

import { apiFetch } from "./api.js";

/**
 * An incremental text/event-stream parser. feed() takes decoded text in chunks of any size (a line, or a
 * CRLF, may be split across chunks); onEvent gets {type, data, id} for every dispatched event.
 */
export function createParser(onEvent) {
  let buffer = "";
  let type = "";
  let data = [];
  let lastId = "";

  function line(text) {
    if (text === "") {
      if (data.length) onEvent({ type: type || "message", data: data.join("\n"), id: lastId });
      type = "";
      data = [];
      return;
    }
    if (text.startsWith(":")) return; // a comment (keep-alive ping)
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
    else if (field === "id" && !value.includes("\0")) lastId = value;
  }

  return {
    feed(chunk) {
      buffer += chunk;
      for (;;) {
        const match = /\r\n|\r|\n/.exec(buffer);
        if (!match) break;
        // A lone CR at the very end may be the first half of a CRLF: wait for the next chunk.
        if (match[0] === "\r" && match.index === buffer.length - 1) break;
        const text = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        line(text);
      }
    },
    end() {
      buffer = "";
      type = "";
      data = [];
    },
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Read /api/events forever, reconnecting with backoff (0.5 s doubling up to 15 s, with jitter).
 * onStatus("connecting" | "live" | "reconnecting"); onOpen() each time a stream opens (refresh then: what
 * happened while disconnected was missed); onEvent({type, data}) with data parsed as JSON.
 * A stream silent for longer than `stallMs` (the server pings every 15 s) is dropped and reopened.
 * Returns {close()}.
 */
export function streamEvents({ onEvent, onOpen, onStatus, stallMs = 40000, path = "events" }) {
  let closed = false;
  let controller = null;
  let attempt = 0;

  async function once() {
    controller = new AbortController();
    let timer = null;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(), stallMs);
    };
    try {
      const res = await apiFetch(path, { headers: { Accept: "text/event-stream" }, signal: controller.signal });
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      attempt = 0;
      onStatus("live");
      arm();
      onOpen();
      const parser = createParser((ev) => {
        let payload = null;
        try {
          payload = JSON.parse(ev.data);
        } catch {
          payload = { raw: ev.data };
        }
        onEvent({ type: ev.type, data: payload });
      });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        parser.feed(value);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  (async () => {
    onStatus("connecting");
    while (!closed) {
      try {
        await once();
      } catch (err) {
        if (closed) return;
      }
      if (closed) return;
      onStatus("reconnecting");
      const delay = Math.min(15000, 500 * 2 ** attempt);
      attempt = Math.min(attempt + 1, 6);
      await sleep(delay * (0.75 + Math.random() * 0.5));
    }
  })();

  return {
    close() {
      closed = true;
      controller?.abort();
    },
  };
}
