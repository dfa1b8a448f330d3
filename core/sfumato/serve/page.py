"""A one-file web page to try ``sfumato serve``: a form generated in the browser from the request's
JSON schema (``GET /v1/schema``), so every field and every registered scheduler, a third-party
plugin's included, appears with its own fields, defaults and descriptions. It submits a job,
follows its server-sent events (progress and previews) and shows the images.

The query string fills the form (``?prompt=a+red+circle&scheduler.type=euler&scheduler.steps=12``;
a sampler's ``type`` first, then its fields) and ``go=1`` submits it, so a link can share a request.
The body's ``data-status`` is the job's status, for scripts and tests."""

from __future__ import annotations

import html

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; }
label { display: block; margin: .4rem 0; } label span { display: inline-block; width: 9rem; }
input[type=text], input[type=number], select, textarea { width: 20rem; } textarea { height: 3rem; }
fieldset { margin: .5rem 0; } #images img, #preview { width: 128px; image-rendering: pixelated; margin: 2px; }
.error { color: #b00; white-space: pre-wrap; } small { color: #666; }
</style></head>
<body>
<h1>__TITLE__</h1>
<form id="form"><div id="fields">loading the schema...</div><button id="submit" type="submit">Generate</button></form>
<p id="status"></p><progress id="progress" value="0" max="1" hidden></progress>
<div><img id="preview" alt="preview" hidden></div><div id="images"></div><pre id="error" class="error"></pre>
<script>
"use strict";
let schema = null;
const resolve = (s) => (s && s.$ref) ? schema.$defs[s.$ref.split("/").pop()] : s;
// The non-null member of an Optional field's anyOf, else the schema itself.
const core = (s) => { s = resolve(s); const members = (s.anyOf || []).filter((m) => m.type !== "null");
  return members.length === 1 ? Object.assign({}, s, resolve(members[0]), {anyOf: undefined}) : s; };

function input(name, s) {
  s = core(s);
  const label = document.createElement("label"), title = document.createElement("span");
  title.textContent = name; label.appendChild(title);
  let el;
  if (s.oneOf && s.discriminator) { return variants(name, s); }
  if (s.enum) { el = document.createElement("select");
    for (const v of s.enum) { const o = document.createElement("option"); o.value = o.textContent = v; el.appendChild(o); }
    el.value = s.default ?? s.enum[0];
  } else if (s.type === "boolean") { el = document.createElement("input"); el.type = "checkbox"; el.checked = !!s.default;
  } else if (s.type === "integer" || s.type === "number") { el = document.createElement("input"); el.type = "number";
    el.step = s.type === "integer" ? "1" : "any"; if (s.default != null) el.placeholder = s.default;
  } else if (name === "prompt" || name === "negative") { el = document.createElement("textarea");
  } else { el = document.createElement("input"); el.type = "text";
    if (s.default != null) el.placeholder = typeof s.default === "string" ? s.default : JSON.stringify(s.default); }
  el.name = name; el.dataset.kind = s.type || (s.enum ? "enum" : "json"); el.dataset.default = JSON.stringify(s.default ?? null);
  label.appendChild(el);
  if (s.description) { const d = document.createElement("small"); d.textContent = " " + s.description; label.appendChild(d); }
  return label;
}

// A discriminated union (the scheduler): a select of its types, then the chosen type's fields.
function variants(name, s) {
  const box = document.createElement("fieldset"), legend = document.createElement("legend");
  legend.textContent = name; box.appendChild(legend);
  const select = document.createElement("select"); select.name = name + ".type"; select.dataset.union = name;
  const none = document.createElement("option"); none.value = ""; none.textContent = "(the spec's)"; select.appendChild(none);
  for (const type of Object.keys(s.discriminator.mapping)) {
    const o = document.createElement("option"); o.value = o.textContent = type; select.appendChild(o); }
  const fields = document.createElement("div");
  select.onchange = () => { fields.innerHTML = "";
    if (!select.value) return;
    const def = resolve({$ref: s.discriminator.mapping[select.value]});
    for (const [field, fs] of Object.entries(def.properties)) {
      if (field !== s.discriminator.propertyName) fields.appendChild(input(name + "." + field, fs)); } };
  box.appendChild(select); box.appendChild(fields);
  return box;
}

function value(el) {
  if (el.dataset.kind === "boolean") { const v = el.checked; return v === JSON.parse(el.dataset.default) ? undefined : v; }
  if (el.value === "") return undefined;
  if (el.dataset.kind === "integer" || el.dataset.kind === "number") return Number(el.value);
  if (el.dataset.kind === "json") { try { return JSON.parse(el.value); } catch (e) { return el.value; } }
  return el.value;
}

function body() {
  const out = {};
  for (const el of document.querySelectorAll("#fields [name]")) {
    const v = el.dataset.union ? (el.value || undefined) : value(el);
    if (v === undefined) continue;
    const path = el.name.split("."); let node = out;
    for (const key of path.slice(0, -1)) node = node[key] = node[key] || {};
    node[path[path.length - 1]] = v;
  }
  return out;
}

function show(job) {
  document.body.dataset.status = job.status;
  document.getElementById("status").textContent = `job ${job.id}: ${job.status}` +
    (job.steps ? `, step ${job.step} of ${job.steps}` : "") + `, ${job.images_done} of ${job.num_images} image(s)`;
  const bar = document.getElementById("progress"); bar.hidden = false;
  bar.max = job.steps || 1; bar.value = job.step;
  if (job.preview_png) { const p = document.getElementById("preview"); p.hidden = false; p.src = "data:image/png;base64," + job.preview_png; }
  if (job.error) document.getElementById("error").textContent = job.error;
  if (job.status === "done") { const box = document.getElementById("images");
    for (const image of job.images) { const img = document.createElement("img"); img.src = image.url;
      img.alt = "seed " + image.seed; img.title = "seed " + image.seed; img.className = "result"; box.appendChild(img); } }
}

document.getElementById("form").onsubmit = async (event) => {
  event.preventDefault();
  document.getElementById("error").textContent = ""; document.getElementById("images").innerHTML = "";
  const response = await fetch("/v1/jobs", {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(body())});
  const answer = await response.json();
  if (!response.ok) { const detail = answer.detail; document.body.dataset.status = "refused";
    document.getElementById("error").textContent = Array.isArray(detail)
      ? detail.map((d) => d.loc.filter((p) => p !== "body").join(".") + ": " + d.msg).join("\\n") : String(detail);
    return; }
  show(answer);
  const events = new EventSource(`/v1/jobs/${answer.id}/events`);
  const update = (e) => { const job = JSON.parse(e.data); show(job);
    if (["done", "failed", "cancelled"].includes(job.status)) events.close(); };
  for (const name of ["progress", "done", "failed", "cancelled"]) events.addEventListener(name, update);
};

fetch("/v1/schema").then((r) => r.json()).then((s) => {
  schema = s; const box = document.getElementById("fields"); box.innerHTML = "";
  for (const [name, fs] of Object.entries(s.properties)) box.appendChild(input(name, fs));
  const params = [...new URLSearchParams(location.search)];
  for (const [name, v] of params.sort(([a], [b]) => b.endsWith(".type") - a.endsWith(".type"))) {
    const el = document.querySelector(`#fields [name="${CSS.escape(name)}"]`);
    if (!el) continue;
    if (el.type === "checkbox") el.checked = v === "true"; else el.value = v;
    el.dispatchEvent(new Event("change"));
  }
  document.body.dataset.ready = "true";
  if (new URLSearchParams(location.search).get("go") === "1") document.getElementById("submit").click();
});
</script></body></html>
"""


def page_html(title: str) -> str:
    return PAGE.replace("__TITLE__", html.escape(title))
