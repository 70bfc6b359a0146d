
(function(){
"use strict";
var data = JSON.parse(document.getElementById("dsc-data").textContent);
var rows = data.rows, PAGE = 50, shown = PAGE;
var q = document.getElementById("q"), list = document.getElementById("rows"),
    count = document.getElementById("count"), more = document.getElementById("more");
var dims = ["split", "source", "label", "capability"], sel = {};
dims.forEach(function(d){
  sel[d] = document.getElementById("f-" + d);
  var vals = {};
  rows.forEach(function(r){ vals[r[d]] = 1; });
  Object.keys(vals).sort().forEach(function(v){
    var o = document.createElement("option"); o.value = v; o.textContent = v; sel[d].appendChild(o);
  });
});
function readState(){
  var p = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
  q.value = p.get("q") || "";
  dims.forEach(function(d){ sel[d].value = p.get(d) || ""; if (sel[d].value !== (p.get(d) || "")) sel[d].value = ""; });
}
function writeState(){
  var p = new URLSearchParams();
  if (q.value) p.set("q", q.value);
  dims.forEach(function(d){ if (sel[d].value) p.set(d, sel[d].value); });
  history.replaceState(null, "", "#" + p.toString());
}
function matches(r){
  for (var i = 0; i < dims.length; i++) { var v = sel[dims[i]].value; if (v && r[dims[i]] !== v) return false; }
  var s = q.value.toLowerCase();
  return !s || r.id.toLowerCase().indexOf(s) >= 0 || r.text.toLowerCase().indexOf(s) >= 0;
}
function inSpans(spans, a){  // spans sorted, non-overlapping
  for (var i = 0; i < spans.length; i++) { if (a < spans[i][0]) return false; if (a < spans[i][1]) return true; }
  return false;
}
function piece(text, a, b, cls, title){
  var e = document.createElement("span"); e.className = cls; e.textContent = text.slice(a, b);
  if (title) e.title = title; return e;
}
function drawText(r){
  var box = document.createElement("div"); box.className = "text";
  var cuts = {0: 1}; cuts[r.text.length] = 1;
  r.sup.concat(r.cond).forEach(function(s){ cuts[s[0]] = 1; cuts[s[1]] = 1; });
  var tok = r.tok, starts = null;
  if (tok) { starts = {}; for (var k = 0; k < tok.b.length; k += 2) { cuts[tok.b[k]] = 1; cuts[tok.b[k+1]] = 1; starts[tok.b[k]] = k / 2; } }
  var pts = Object.keys(cuts).map(Number).sort(function(x, y){ return x - y; });
  var t = -1, tEnd = -1;
  for (var i = 0; i + 1 < pts.length; i++) {
    var a = pts[i], b = pts[i+1], cls, title = null;
    if (tok && starts[a] !== undefined) { t = starts[a]; tEnd = tok.b[2*t+1]; }
    var inTok = tok && t >= 0 && a < tEnd;
    if (inTok) {
      cls = "tok t" + (t % 2) + (tok.s[t] === "1" ? " sup" : " ctx");
      title = "token " + t + " · id " + tok.ids[t] + (tok.s[t] === "1" ? " · supervised" : "");
    } else {
      cls = inSpans(r.sup, a) ? "sup" : "ctx";
    }
    if (inSpans(r.cond, a)) cls += " cond";
    box.appendChild(piece(r.text, a, b, cls, title));
  }
  return box;
}
function drawPair(r){  // a preference row: prompt, then the sides side by side from where they part
  var box = document.createElement("div"); box.className = "text";
  var pr = {text: r.pair.prompt, sup: [], cond: r.cond};
  var pt = document.createElement("div"); pt.className = "prompt";
  var cuts = {0: 1}; cuts[pr.text.length] = 1;
  pr.cond.forEach(function(s){ cuts[s[0]] = 1; cuts[s[1]] = 1; });
  var pts = Object.keys(cuts).map(Number).sort(function(x, y){ return x - y; });
  for (var i = 0; i + 1 < pts.length; i++) pt.appendChild(piece(pr.text, pts[i], pts[i+1], inSpans(pr.cond, pts[i]) ? "ctx cond" : "ctx"));
  box.appendChild(pt);
  var grid = document.createElement("div"); grid.className = "pair";
  r.pair.sides.forEach(function(s){
    var col = document.createElement("div"); col.className = "side";
    var h = document.createElement("div"); h.className = "side-name " + s.cls; h.textContent = s.name; col.appendChild(h);
    var t = document.createElement("div"); t.className = "side-text";
    if (s.part > 0) t.appendChild(piece(s.text, 0, s.part, "ctx"));
    if (s.part < s.text.length) t.appendChild(piece(s.text, s.part, s.text.length, s.cls + (r.pair.sides.length > 1 ? " parted" : "")));
    col.appendChild(t); grid.appendChild(col);
  });
  box.appendChild(grid);
  return box;
}
function drawRow(r){
  var div = document.createElement("div"); div.className = "row"; div.setAttribute("data-id", r.id);
  var head = document.createElement("div"); head.className = "head";
  var b = document.createElement("b"); b.textContent = r.id; head.appendChild(b);
  if (r.pair) {
    head.appendChild(document.createTextNode([" split " + r.split].concat(r.pair.facts).join(" · ")));
    div.appendChild(head); div.appendChild(drawPair(r));
    return div;
  }
  var facts = [" split " + r.split, "source " + r.source];
  if (r.label !== "(none)") facts.push("label " + r.label);
  if (r.capability !== "(none)") facts.push("capability " + r.capability);
  facts.push(r.sup_chars + "/" + r.chars + " chars supervised");
  if (r.tokens !== undefined) facts.push(r.sup_tokens + "/" + r.tokens + " tokens supervised");
  if (!r.tok && r.tokens !== undefined) facts.push("token boundaries not embedded");
  head.appendChild(document.createTextNode(facts.join(" · ")));
  div.appendChild(head); div.appendChild(drawText(r));
  return div;
}
function render(){
  var hits = rows.filter(matches);
  count.textContent = hits.length + " of " + rows.length + " sampled rows match";
  count.setAttribute("data-matches", String(hits.length));
  list.textContent = "";
  hits.slice(0, shown).forEach(function(r){ list.appendChild(drawRow(r)); });
  more.hidden = hits.length <= shown;
}
function changed(){ shown = PAGE; writeState(); render(); }
q.addEventListener("input", changed);
dims.forEach(function(d){ sel[d].addEventListener("change", changed); });
more.addEventListener("click", function(){ shown += PAGE; render(); });
window.addEventListener("hashchange", function(){ readState(); shown = PAGE; render(); });
readState(); render();
document.body.setAttribute("data-ready", "1");
})();
