// Live param controls generated from a pipeline's params JSON schema (GET /live/pipelines), not
// written per pipeline. No build step.
//
//   buildControls(form, schema, params, (name, value) => post({[name]: value}));
//
// Each top-level param gets one element with data-param="NAME" and data-kind:
//   checkbox  boolean                       select    enum / Literal
//   slider    number or integer (a range plus a number box; bounds from the schema, else around
//             the default: 0..2 for a default of 1)
//   number    an unbounded integer (a seed) with a "random" button
//   text      string (a textarea for prompts)
//   weighted  a value or weighted [value, weight] pairs (prompt, seed): rows with weight sliders
//   list      an array of integers (t_index_list): a slider per entry, + / − to add or remove
//   group     an object or a list of objects (ControlNets, IP-Adapter): their fields, nested
//   json      anything else, as JSON text
// A change sends the whole top-level value (a group sends its whole object or list).

"use strict";

function schemaRef(schema, root) {
  let s = schema || {};
  for (let i = 0; s.$ref && i < 10; i++) s = (root.$defs || {})[s.$ref.split("/").pop()] || {};
  return s;
}

// Resolve $ref and drop `null` from anyOf: {schema, nullable} with at most a list of branches.
function simplifySchema(schema, root) {
  let s = schemaRef(schema, root);
  let nullable = false;
  if (s.anyOf) {
    const branches = s.anyOf.map((b) => schemaRef(b, root)).filter((b) => {
      if (b.type === "null") { nullable = true; return false; }
      return true;
    });
    const merged = { ...s };
    delete merged.anyOf;
    s = branches.length === 1 ? { ...merged, ...branches[0] } : { ...merged, branches };
  }
  return { s, nullable };
}

function controlKind(schema, root, value) {
  const { s } = simplifySchema(schema, root);
  if (s.branches) {
    const scalar = s.branches.find((b) => ["string", "integer", "number"].includes(b.type));
    const pairs = s.branches.find((b) => b.type === "array" && b.items && (b.items.prefixItems || b.items.type === "array"));
    if (scalar && pairs) return "weighted";
    return "json";
  }
  if (s.enum || s.const !== undefined) return "select";
  if (s.type === "boolean") return "checkbox";
  if (s.type === "integer" && s.minimum === undefined && s.maximum === undefined) return "number";
  if (s.type === "number" || s.type === "integer") return "slider";
  if (s.type === "string") return "text";
  if (s.type === "array") {
    const items = schemaRef(s.items, root);
    if (items.type === "integer") return "list";
    if (items.type === "object" && items.properties) return "group";
    return "json";
  }
  if (s.type === "object" && s.properties) return "group";
  return "json";
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "dataset") Object.assign(e.dataset, v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function throttled(fn, ms = 200) {
  let last = 0, timer = null;
  return (...args) => {
    clearTimeout(timer);
    const wait = last + ms - Date.now();
    if (wait <= 0) { last = Date.now(); fn(...args); } else timer = setTimeout(() => { last = Date.now(); fn(...args); }, wait);
  };
}

// A range and a number box that stay together; `onChange(number)` while dragging (throttled).
function sliderControl(name, s, value, onChange, { min, max } = {}) {
  const integer = s.type === "integer";
  const base = typeof value === "number" ? value : typeof s.default === "number" ? s.default : 1;
  const lo = min ?? s.minimum ?? s.exclusiveMinimum ?? Math.min(0, base);
  const hi = max ?? s.maximum ?? s.exclusiveMaximum ?? Math.max(integer ? 10 : 1, Math.ceil(2 * Math.abs(base)), lo + 1);
  const step = integer ? s.multipleOf || 1 : (hi - lo) / 200;
  const range = el("input", { type: "range", min: lo, max: hi, step, value: value ?? base, dataset: { slider: name } });
  const box = el("input", { type: "number", name, step: integer ? step : "any", value: value ?? "", className: "num" });
  const send = throttled(() => onChange(integer ? parseInt(box.value, 10) : Number(box.value)));
  range.oninput = () => { box.value = range.value; send(); };
  box.onchange = () => { range.value = box.value; onChange(integer ? parseInt(box.value, 10) : Number(box.value)); };
  return el("span", { className: "slider" }, range, box);
}

function scalarControl(name, s, value, onChange) {
  if (s.type === "string") {
    const long = /prompt/.test(name);
    const input = long ? el("textarea", { name, rows: 2, value: value ?? "" }) : el("input", { type: "text", name, value: value ?? "" });
    input.onchange = () => onChange(input.value);
    return input;
  }
  if (s.type === "integer" && s.minimum === undefined && s.maximum === undefined) {
    const input = el("input", { type: "number", name, step: 1, value: value ?? "" });
    input.onchange = () => onChange(parseInt(input.value, 10));
    const dice = el("button", { type: "button", textContent: "random", title: "a random value" });
    dice.onclick = () => { input.value = Math.floor(Math.random() * 2 ** 31); input.onchange(); };
    return el("span", {}, input, " ", dice);
  }
  return sliderControl(name, s, value, onChange);
}

// A value, or weighted [value, weight] pairs: one row per entry, each with a weight slider.
function weightedControl(name, s, value, onChange) {
  const scalar = s.branches.find((b) => ["string", "integer", "number"].includes(b.type));
  const box = el("div", { className: "weighted" });
  let rows = Array.isArray(value) ? value.map((p) => [...p]) : [[value ?? scalar.default ?? "", 1]];
  const emit = () => onChange(rows.length === 1 && !Array.isArray(value) && rows[0][1] === 1 ? rows[0][0] : rows.map((r) => [r[0], r[1]]));
  const render = () => {
    box.innerHTML = "";
    rows.forEach((row, i) => {
      const field = scalarControl(i === 0 ? name : `${name}.${i}`, scalar, row[0], (v) => { row[0] = v; emit(); });
      const weight = sliderControl(`${name}.weight.${i}`, { type: "number" }, row[1], (w) => { row[1] = w; emit(); }, { min: 0, max: 1 });
      const remove = el("button", { type: "button", textContent: "−", title: "remove" });
      remove.onclick = () => { rows.splice(i, 1); value = rows; render(); emit(); };
      box.append(el("div", { className: "row" }, field, rows.length > 1 ? el("span", {}, " weight ", weight, remove) : null));
    });
    const add = el("button", { type: "button", textContent: `+ blend another ${name}` });
    add.onclick = () => { rows.push([scalar.type === "string" ? "" : 0, 0.5]); value = rows; render(); };
    box.append(add);
  };
  render();
  return box;
}

// An array of integers: a slider per entry (t_index_list: 0..num_inference_steps).
function listControl(name, s, value, onChange, params, root) {
  const items = schemaRef(s.items, root);
  const max = items.maximum ?? (typeof params.num_inference_steps === "number" ? params.num_inference_steps : 50);
  let list = Array.isArray(value) ? [...value] : [];
  const box = el("div", { className: "list" });
  const render = () => {
    box.innerHTML = "";
    list.forEach((v, i) => box.append(sliderControl(`${name}.${i}`, { type: "integer" }, v, (n) => { list[i] = n; onChange([...list]); }, { min: items.minimum ?? 0, max })));
    const add = el("button", { type: "button", textContent: "+" });
    add.onclick = () => { list.push(list.length ? list[list.length - 1] : 0); render(); onChange([...list]); };
    const remove = el("button", { type: "button", textContent: "−" });
    remove.onclick = () => { if (list.length > 1) { list.pop(); render(); onChange([...list]); } };
    box.append(el("span", {}, add, remove));
  };
  render();
  return box;
}

function jsonControl(name, value, onChange) {
  const input = el("textarea", { name, rows: 2, value: value === undefined ? "" : JSON.stringify(value), dataset: { json: "1" } });
  input.onchange = () => {
    try { onChange(input.value.trim() === "" ? null : JSON.parse(input.value)); input.classList.remove("bad"); }
    catch (e) { input.classList.add("bad"); input.title = String(e); }
  };
  return input;
}

// One param's control; `onChange(value)` gets its whole new value.
function paramControl(name, schema, value, onChange, params, root) {
  const { s } = simplifySchema(schema, root);
  if (value === undefined && s.default !== undefined) value = s.default;  // a field the value leaves out
  const kind = controlKind(schema, root, value);
  let control;
  if (kind === "checkbox") {
    control = el("input", { type: "checkbox", name, checked: !!value });
    control.onchange = () => onChange(control.checked);
  } else if (kind === "select") {
    const options = s.enum || [s.const];
    control = el("select", { name }, ...options.map((o) => el("option", { value: o, textContent: o, selected: o === value })));
    control.onchange = () => onChange(control.value);
  } else if (kind === "slider" || kind === "number" || kind === "text") {
    control = scalarControl(name, s, value, onChange);
  } else if (kind === "weighted") {
    control = weightedControl(name, s, value, onChange);
  } else if (kind === "list") {
    control = listControl(name, s, value, onChange, params, root);
  } else if (kind === "group") {
    control = groupControl(name, s, value, onChange, root);
  } else {
    control = jsonControl(name, value, onChange);
  }
  const label = el("label", { className: "param", title: s.description || "", dataset: { param: name, kind } }, el("span", { className: "name", textContent: s.title || name }), control);
  return label;
}

// An object's fields, or a list of objects (one fieldset each); sends the whole object or list.
function groupControl(name, s, value, onChange, root) {
  const box = el("div", { className: "group" });
  if (s.type === "array") {
    const items = schemaRef(s.items, root);
    const list = Array.isArray(value) ? value.map((v) => ({ ...v })) : [];
    if (!list.length) box.append(el("span", { className: "muted", textContent: "none (set at start with the params)" }));
    list.forEach((item, i) => {
      const fs = el("fieldset", {}, el("legend", { textContent: item.model_id || `${name} ${i + 1}` }));
      for (const [key, sub] of Object.entries(items.properties || {})) {
        fs.append(paramControl(`${name}.${i}.${key}`, sub, item[key], (v) => { item[key] = v; onChange(list.map((x) => ({ ...x }))); }, item, root));
      }
      box.append(fs);
    });
    return box;
  }
  const obj = value && typeof value === "object" ? { ...value } : {};
  const fs = el("fieldset", {});
  for (const [key, sub] of Object.entries(s.properties || {})) {
    fs.append(paramControl(`${name}.${key}`, sub, obj[key], (v) => { obj[key] = v; onChange({ ...obj }); }, obj, root));
  }
  box.append(fs);
  return box;
}

// Fill `form` with a control per top-level param; objects and free-form values go under "More".
function buildControls(form, schema, params, send) {
  form.innerHTML = "";
  const more = el("details", {}, el("summary", { textContent: "More params" }));
  for (const [name, sub] of Object.entries(schema.properties || {})) {
    const control = paramControl(name, sub, params[name], (value) => send(name, value), params, schema);
    const kind = control.dataset.kind;
    const primary = kind !== "json" && !(kind === "group" && !Array.isArray(params[name])) && !(kind === "text" && !/prompt/.test(name));
    (primary ? form : more).append(control);
  }
  if (more.children.length > 1) form.append(more);
  return form;
}
