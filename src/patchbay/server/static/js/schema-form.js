// A form generated from a tool's JSON Schema (its inputSchema): one labelled field per property.
// string → text input (textarea for long text), number/integer → number input, boolean → checkbox,
// enum → select, array of strings/numbers → one item per line, array of enum → checkboxes, anything else
// → a JSON textarea. Required fields are marked; defaults prefill the fields. readArguments() builds the
// arguments object (leaving out empty optional fields) or reports the first bad field.

import { h, pretty, srOnly, uid } from "./dom.js";

/** Resolve local $refs, Optional[X] (anyOf X|null) and ["x","null"] types into one plain schema. */
export function normalize(schema, root, depth = 0) {
  if (!schema || typeof schema !== "object" || Array.isArray(schema)) return {};
  let s = schema;
  if (typeof s.$ref === "string" && s.$ref.startsWith("#/") && depth < 10) {
    const target = s.$ref
      .slice(2)
      .split("/")
      .reduce((node, key) => (node && typeof node === "object" ? node[key.replace(/~1/g, "/").replace(/~0/g, "~")] : undefined), root);
    const { $ref, ...rest } = s;
    return normalize({ ...(target || {}), ...rest }, root, depth + 1);
  }
  const alternatives = Array.isArray(s.anyOf) ? s.anyOf : Array.isArray(s.oneOf) ? s.oneOf : null;
  if (alternatives && depth < 10) {
    const { anyOf, oneOf, ...rest } = s;
    const options = alternatives.map((a) => normalize(a, root, depth + 1));
    const nonNull = options.filter((a) => a.type !== "null");
    const nullable = nonNull.length < options.length;
    if (nonNull.length === 1) return { ...nonNull[0], ...rest, nullable };
    if (nonNull.length && nonNull.every((a) => a.type === "number" || a.type === "integer")) {
      return { ...rest, type: "number", nullable };
    }
    return { ...rest, nullable };
  }
  if (Array.isArray(s.type)) {
    const types = s.type.filter((t) => t !== "null");
    return { ...s, type: types.length === 1 ? types[0] : undefined, nullable: types.length < s.type.length };
  }
  return s;
}

function isScalar(v) {
  return v === null || ["string", "number", "boolean"].includes(typeof v);
}

/** Which widget a (normalized) property schema gets. */
export function widgetFor(s, root) {
  if (Array.isArray(s.enum) && s.enum.length && s.enum.every(isScalar)) return "enum";
  if ("const" in s && isScalar(s.const)) return "enum";
  if (s.type === "string") return "string";
  if (s.type === "integer" || s.type === "number") return "number";
  if (s.type === "boolean") return "boolean";
  if (s.type === "array" && s.items && !Array.isArray(s.items)) {
    const items = normalize(s.items, root);
    if (Array.isArray(items.enum) && items.enum.length && items.enum.every((v) => typeof v === "string")) {
      return "multi";
    }
    if (["string", "number", "integer"].includes(items.type) && !items.enum) return "list";
  }
  return "json";
}

function typeLabel(s, widget, root) {
  if (widget === "enum") return "one of";
  if (widget === "list" || widget === "multi") return `list of ${normalize(s.items, root).type || "values"}`;
  if (widget === "json") return s.type || "JSON";
  return s.type;
}

function constraints(s) {
  const parts = [];
  const lo = s.minimum ?? s.exclusiveMinimum;
  const hi = s.maximum ?? s.exclusiveMaximum;
  if (lo !== undefined && hi !== undefined) parts.push(`${lo} to ${hi}`);
  else if (lo !== undefined) parts.push(`at least ${lo}`);
  else if (hi !== undefined) parts.push(`at most ${hi}`);
  if (s.minLength !== undefined && s.minLength > 1) parts.push(`${s.minLength}+ characters`);
  if (s.maxLength !== undefined) parts.push(`up to ${s.maxLength} characters`);
  if (s.format) parts.push(`format: ${s.format}`);
  if (s.default !== undefined) parts.push(`default: ${typeof s.default === "string" ? s.default : JSON.stringify(s.default)}`);
  return parts.join(" · ");
}

class FieldError extends Error {
  constructor(control, message) {
    super(message);
    this.control = control;
  }
}

/** One field: {element, read() → {present, value}} (read throws FieldError). */
function buildField(name, rawSchema, required, root) {
  const s = normalize(rawSchema, root);
  const widget = widgetFor(s, root);
  const id = uid("f");
  const hintId = `${id}-hint`;
  const description = typeof s.description === "string" ? s.description : "";
  const limits = constraints(s);
  const hint =
    description || limits
      ? h("p", { class: "hint", id: hintId }, description, limits ? h("span", { class: "limits" }, limits) : null)
      : null;
  const describedBy = hint ? hintId : null;
  const label = (forId) =>
    h(
      forId ? "label" : "legend",
      forId ? { for: forId, class: "field-label" } : { class: "field-label" },
      h("code", {}, name),
      required ? [h("span", { class: "req", "aria-hidden": "true", title: "required" }, "*"), srOnly(" (required)")] : null,
      h("span", { class: "type" }, typeLabel(s, widget, root)),
    );
  const hasDefault = s.default !== undefined;

  if (widget === "boolean" && (required || hasDefault)) {
    const box = h("input", { type: "checkbox", id, checked: s.default === true, "aria-describedby": describedBy });
    const element = h("div", { class: "field field-check" }, h("div", { class: "check-row" }, box, label(id)), hint);
    return { element, read: () => ({ present: true, value: box.checked }) };
  }

  if (widget === "enum" || widget === "boolean") {
    const values = widget === "boolean" ? [true, false] : "const" in s && !s.enum ? [s.const] : s.enum;
    const select = h("select", { id, required, "aria-describedby": describedBy });
    const needsBlank = !required || !hasDefault;
    if (needsBlank) select.append(h("option", { value: "" }, required ? "Choose…" : "— not set —"));
    values.forEach((v, i) => {
      const option = h("option", { value: String(i) }, typeof v === "string" ? v : JSON.stringify(v));
      if (hasDefault && JSON.stringify(v) === JSON.stringify(s.default)) option.selected = true;
      select.append(option);
    });
    const element = h("div", { class: "field" }, label(id), select, hint);
    return {
      element,
      read() {
        if (select.value === "") {
          if (required) throw new FieldError(select, "Choose a value.");
          return { present: false };
        }
        return { present: true, value: values[Number(select.value)] };
      },
    };
  }

  if (widget === "string") {
    const long = s.maxLength === undefined ? !s.format && !s.pattern : s.maxLength > 200;
    const control = long
      ? h("textarea", { id, rows: 3, spellcheck: false, "aria-describedby": describedBy })
      : h("input", { type: "text", id, spellcheck: false, autocomplete: "off", "aria-describedby": describedBy });
    if (s.maxLength !== undefined) control.maxLength = s.maxLength;
    if (required) control.required = true;
    if (typeof s.default === "string") control.value = s.default;
    if (Array.isArray(s.examples) && typeof s.examples[0] === "string") control.placeholder = s.examples[0];
    const element = h("div", { class: "field" }, label(id), control, hint);
    return {
      element,
      read() {
        const value = control.value;
        if (value === "" && !required) return { present: false };
        return { present: true, value };
      },
    };
  }

  if (widget === "number") {
    const integer = s.type === "integer";
    const input = h("input", {
      type: "number",
      id,
      step: integer ? "1" : "any",
      inputmode: integer ? "numeric" : "decimal",
      required,
      "aria-describedby": describedBy,
    });
    if (typeof s.minimum === "number") input.min = String(s.minimum);
    if (typeof s.maximum === "number") input.max = String(s.maximum);
    if (typeof s.default === "number") input.value = String(s.default);
    const element = h("div", { class: "field" }, label(id), input, hint);
    return {
      element,
      read() {
        if (input.value === "") {
          if (input.validity.badInput) throw new FieldError(input, "Enter a number.");
          if (required) throw new FieldError(input, "Enter a number.");
          return { present: false };
        }
        const value = Number(input.value);
        if (!Number.isFinite(value)) throw new FieldError(input, "Enter a number.");
        if (integer && !Number.isInteger(value)) throw new FieldError(input, "Enter a whole number.");
        return { present: true, value };
      },
    };
  }

  if (widget === "multi") {
    const items = normalize(s.items, root);
    const chosen = Array.isArray(s.default) ? s.default : [];
    const boxes = items.enum.map((v) => {
      const boxId = uid("c");
      const box = h("input", { type: "checkbox", id: boxId, checked: chosen.includes(v) });
      return { v, box, el: h("div", { class: "check-row" }, box, h("label", { for: boxId }, v)) };
    });
    const element = h(
      "fieldset",
      { class: "field field-group", "aria-describedby": describedBy },
      label(null),
      h("div", { class: "check-grid" }, boxes.map((b) => b.el)),
      hint,
    );
    return {
      element,
      read() {
        const value = boxes.filter((b) => b.box.checked).map((b) => b.v);
        if (!value.length && !required) return { present: false };
        return { present: true, value };
      },
    };
  }

  if (widget === "list") {
    const items = normalize(s.items, root);
    const numeric = items.type === "number" || items.type === "integer";
    const area = h("textarea", {
      id,
      rows: 3,
      spellcheck: false,
      placeholder: "One item per line",
      "aria-describedby": describedBy,
    });
    if (Array.isArray(s.default)) area.value = s.default.join("\n");
    const element = h("div", { class: "field" }, label(id), area, h("p", { class: "hint" }, "One item per line."), hint);
    return {
      element,
      read() {
        const lines = area.value.split(/\r?\n/).filter((line) => line.trim() !== "");
        if (!lines.length && !required) return { present: false };
        if (!numeric) return { present: true, value: lines };
        const value = lines.map(Number);
        if (value.some((n) => !Number.isFinite(n))) throw new FieldError(area, "Every line must be a number.");
        if (items.type === "integer" && value.some((n) => !Number.isInteger(n))) {
          throw new FieldError(area, "Every line must be a whole number.");
        }
        return { present: true, value };
      },
    };
  }

  // JSON fallback: objects, nested arrays, unions, untyped.
  const area = h("textarea", {
    id,
    rows: 4,
    spellcheck: false,
    class: "mono",
    placeholder: s.type === "array" ? "[ ]" : s.type === "object" ? "{ }" : "JSON value",
    "aria-describedby": describedBy,
  });
  if (hasDefault) area.value = pretty(s.default);
  const element = h("div", { class: "field" }, label(id), area, h("p", { class: "hint" }, "A JSON value."), hint);
  return {
    element,
    read() {
      if (area.value.trim() === "") {
        if (required) throw new FieldError(area, "Enter a JSON value.");
        return { present: false };
      }
      try {
        return { present: true, value: JSON.parse(area.value) };
      } catch (err) {
        throw new FieldError(area, `Not valid JSON: ${err.message}`);
      }
    },
  };
}

/**
 * The fields for an inputSchema: {element, readArguments({quiet}) → object | null (invalid: reported on
 * the field, unless quiet: then the field is left out)}.
 * A schema that is not an object with properties gets one JSON textarea for the whole arguments.
 */
export function buildSchemaFields(inputSchema) {
  const root = inputSchema && typeof inputSchema === "object" ? inputSchema : {};
  const schema = normalize(root, root);
  const properties = schema.properties && typeof schema.properties === "object" ? schema.properties : null;
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);

  if (!properties) {
    if (schema.type === "object" || !schema.type) {
      if (!schema.type && Object.keys(schema).some((k) => !["title", "description", "$schema"].includes(k))) {
        return rawArguments(schema);
      }
      return {
        element: h("p", { class: "muted no-args" }, "This tool takes no arguments."),
        readArguments: () => ({}),
      };
    }
    return rawArguments(schema);
  }

  const names = Object.keys(properties);
  // Required fields first, then the rest, each in schema order.
  names.sort((a, b) => Number(required.has(b)) - Number(required.has(a)));
  const fields = names.map((name) => ({ name, ...buildField(name, properties[name], required.has(name), root) }));
  const element = h("div", { class: "fields" }, fields.map((f) => f.element));
  if (!fields.length) element.append(h("p", { class: "muted no-args" }, "This tool takes no arguments."));
  return {
    element,
    readArguments({ quiet = false } = {}) {
      const args = {};
      for (const field of fields) {
        let result;
        try {
          result = field.read();
        } catch (err) {
          if (!(err instanceof FieldError)) throw err;
          if (quiet) continue; // best effort (switching to the JSON view): leave the bad field out
          report(err.control, err.message);
          return null;
        }
        if (result.present) args[field.name] = result.value;
      }
      return args;
    },
  };
}

function rawArguments(schema) {
  const id = uid("f");
  const area = h("textarea", { id, rows: 6, class: "mono", spellcheck: false }, "{}");
  area.value = "{}";
  return {
    element: h(
      "div",
      { class: "field" },
      h("label", { for: id, class: "field-label" }, "Arguments ", h("span", { class: "type" }, "JSON object")),
      area,
    ),
    readArguments() {
      return parseJsonObject(area);
    },
  };
}

/** Parse a textarea as a JSON object, reporting problems on it; null if invalid. */
export function parseJsonObject(area) {
  let value;
  try {
    value = JSON.parse(area.value.trim() || "{}");
  } catch (err) {
    report(area, `Not valid JSON: ${err.message}`);
    return null;
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    report(area, "The arguments must be a JSON object, like {\"name\": \"value\"}.");
    return null;
  }
  return value;
}

/** Show a validation message on a control (native bubble + :invalid styling), cleared on the next edit. */
export function report(control, message) {
  control.setCustomValidity(message);
  control.reportValidity();
  control.focus();
  control.addEventListener("input", () => control.setCustomValidity(""), { once: true });
  control.addEventListener("change", () => control.setCustomValidity(""), { once: true });
}

