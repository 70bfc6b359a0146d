// Runs a `dsc report` page's own script under node with a minimal DOM (enough for the row
// browser), then prints the drawn preference rows as JSON: id, prompt text, and each side's name
// and [class, text] spans. Used by tests/ops/test_preference_views.py where chromium is absent.
"use strict";
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const data = html.match(/<script type="application\/json" id="dsc-data">([\s\S]*?)<\/script>/)[1];
const script = html.match(/<script>([\s\S]*?)<\/script><\/body>/)[1];
function El(tag) { this.tag = tag; this.children = []; this.attrs = {}; this.className = ""; this._text = "";
  this.hidden = false; this.value = ""; }
El.prototype.appendChild = function (c) { this.children.push(c); return c; };
El.prototype.setAttribute = function (k, v) { this.attrs[k] = v; };
El.prototype.addEventListener = function () {};
Object.defineProperty(El.prototype, "textContent", {
  get() { return this._text + this.children.map((c) => c.textContent).join(""); },
  set(v) { this._text = v; this.children = []; },
});
const els = {};
const dataEl = new El("script"); dataEl._text = data; els["dsc-data"] = dataEl;
global.document = {
  getElementById(id) { return els[id] || (els[id] = new El("div")); },
  createElement(t) { return new El(t); },
  createTextNode(t) { const e = new El("#text"); e._text = t; return e; },
  body: new El("body"),
};
global.location = { hash: "", search: "" };
global.history = { replaceState() {} };
global.window = { addEventListener() {} };
new Function(script)();
const find = (e, cls) => e.className.split(" ").includes(cls) ? e : e.children.map((c) => find(c, cls)).find(Boolean);
const rows = els["rows"].children.map((row) => {
  const text = find(row, "text");
  const sides = find(text, "pair").children.map((side) => ({
    name: find(side, "side-name").textContent,
    spans: find(side, "side-text").children.map((s) => [s.className, s.textContent]),
  }));
  return { id: row.attrs["data-id"], prompt: find(text, "prompt").textContent, sides };
});
process.stdout.write(JSON.stringify({ ready: document.body.attrs["data-ready"], rows }));
