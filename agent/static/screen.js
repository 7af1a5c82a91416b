"use strict";
// What every station screen shares: the words (the node embeds its language's catalogue),
// el(), the header with the node's state, lamps drawn as the hardware shows them, lists
// fitted to their box, and the live bootstrap (the state embedded on first paint, then
// /api/stream). A page defines only its render(s) and calls screen(title, render).
const WORDS = JSON.parse((document.getElementById("words") || { textContent: "{}" }).textContent);

const LANG = document.documentElement.lang || "en";
// The plural form of a count: the browser's CLDR rules for the page's language (any
// language a site adds); without them, the rule agent/i18n.py writes out for en, de, pl.
const RULES = (() => { try { return new Intl.PluralRules(LANG); } catch (e) { return null; } })();
function plural(n) {
  if (RULES) return RULES.select(n);
  if (n !== Math.trunc(n)) return "other";
  const i = Math.abs(n);
  if (LANG.split("-")[0] !== "pl") return i === 1 ? "one" : "other";
  return i === 1 ? "one" : i % 10 >= 2 && i % 10 <= 4 && !(i % 100 >= 12 && i % 100 <= 14) ? "few" : "many";
}
// A parameter in words: a message is said, a list joined, a number written the language's way.
function fmt(v) {
  if (Array.isArray(v)) return v.map(fmt).join(", ");
  if (v && typeof v === "object") return say(v);
  if (typeof v === "number") return v.toLocaleString(LANG, { maximumFractionDigits: 1 });
  return String(v ?? "");
}
// The words for `key`, with {name} filled from `params`; a key counting `n` takes its plural
// form ("pack.items#few"); a key no catalogue has shows as its last part spaced out (never
// as "reason.wrong_item").
function t(key, params) {
  const p = params || {};
  let text = WORDS[key];
  if (text === undefined && typeof p.n === "number") text = WORDS[`${key}#${plural(p.n)}`] ?? WORDS[`${key}#other`];
  if (text === undefined) text = key.slice(key.lastIndexOf(".") + 1).replaceAll("_", " ");
  return text.replace(/\{(\w+)\}/g, (all, name) => (name in p ? fmt(p[name]) : all));
}
// A message a workflow sent ({id, params}) in the page's language.
const say = (m) => (m ? t(m.id, m.params) : "");
// A code (reason, disposition, flag, ...) in words: "reason.wrong_item" -> "wrong item".
const words = (kind, code) => (code ? t(`${kind}.${code}`) : "");

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}
function fill(id, ...children) {
  const e = document.getElementById(id);
  e.replaceChildren(...children);
  return e;
}

// A light as its slot shows it: the same Okabe-Ito colour and blink pattern, and its text
// as the display shows it ("donE", "Err", a quantity).
function lamp(light, cls) {
  const e = el("span", `lamp ${cls || ""}` + (light ? ` lit ${light.pattern} c-${light.colour}` : ""));
  e.textContent = light ? String(light.text ?? light.qty ?? "") || "\u00a0" : t("light.off");
  e.title = light ? words("colour", light.colour) : t("light.off");
  return e;
}

// Append `items` to `box` as long as the box shows them whole; the rest become one
// "+N more" line. The box must have a bounded height (a flex/grid cell with overflow hidden).
function fitList(box, items, moreKey) {
  box.replaceChildren(...items);
  box.dataset.total = items.length;
  box.dataset.shown = items.length;
  const over = () => box.scrollHeight > box.clientHeight + 1 || box.scrollWidth > box.clientWidth + 1;
  if (!items.length || !over()) return items.length;
  let lo = 0, hi = items.length - 1;  // the most items that fit together with the "more" line
  const show = (n) => {
    const more = el(box.tagName === "OL" || box.tagName === "UL" ? "li" : "div", "more");
    more.textContent = t(moreKey || "screen.more", { n: items.length - n });
    box.replaceChildren(...items.slice(0, n), more);
  };
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    show(mid);
    if (over()) hi = mid - 1; else lo = mid;
  }
  show(lo);
  box.dataset.shown = lo;
  return lo;
}

// Whether the screen is too small for what it shows: a column, section or list is cut, or
// a list shows none of its rows.
const cut = (e) => e.scrollHeight > e.clientHeight + 1 || e.scrollWidth > e.clientWidth + 1;
function crowded(scope) {
  if (cut(scope)) return true;
  for (const e of scope.querySelectorAll(".col, section, .fit")) {
    if (!e.getClientRects().length) continue;
    if (cut(e) || (e.dataset.shown === "0" && e.dataset.total !== "0")) return true;
  }
  return false;
}
// Render; while a column is crowded, hide its optional sections ([data-drop], lowest
// first: what a worker can do without) and render again, so what stays is whole.
function settle(render, s) {
  const optional = [...document.querySelectorAll("[data-drop]")].sort((a, b) => a.dataset.drop - b.dataset.drop);
  for (const section of optional) section.hidden = false;
  render(s);
  for (const section of optional) {
    const column = section.closest(".col") || document.body;
    if (!crowded(column)) continue;  // its own column has room: it stays
    section.hidden = true;
    render(s);
  }
}

// The device problems a worker must know of, in words: "scanner: not connected". What
// the node says of a device (`says`, agent/workflows/health.py), never the driver's English.
const healthWords = (d) => (d.says && d.says.length ? d.says : [{ id: `health.${d.status}`, params: {} }]);
function faults(s) {
  const out = [];
  for (const [name, d] of Object.entries(s.devices || {})) {
    if (d.status === "fault" || d.status === "unavailable") out.push(t("device.problem", { device: name, what: healthWords(d) }));
    for (const [where, part] of Object.entries(d.parts || {})) {
      if (part.status === "fault" || part.status === "unavailable") {
        out.push(t("device.part", { device: name, part: where, what: healthWords(part) }));
      }
    }
  }
  return out;
}

let lost = false;
// The header (node, title, link state) and the state banner: the screen lost the node,
// the node is offline (it keeps working; confirmations wait in its store), or a device is
// down. The banner is one line, never a list that pushes the work off the screen.
function header(s, title) {
  document.title = title;
  fill("title", el("span", "", title), el("span", "node", `${s.site}/${s.node}`));
  const status = fill("status");
  // A congested link still confirms, only late: said beside "online", no banner.
  const congested = s.online && s.link === "congested";
  status.className = lost || !s.online || congested ? "offline" : "online";
  status.textContent = lost ? t("screen.lost") : !s.online ? t("screen.offline") : congested ? t("screen.congested") : t("screen.online");
  const banner = document.getElementById("banner");
  const down = faults(s);
  let state = "";
  let text = "";
  if (lost) { state = "lost"; text = t("banner.lost"); }
  else if (down.length) { state = "fault"; text = t("banner.fault", { what: down.slice(0, 2).join(" · ") + (down.length > 2 ? ` (+${down.length - 2})` : "") }); }
  else if (!s.online) { state = "offline"; text = t("banner.offline"); }
  banner.hidden = !state;
  banner.className = `banner state-${state}`;
  banner.dataset.state = state;
  banner.textContent = text;
}

// The station notice (what just happened, coloured by level) and the prompt (what to do
// next), both the workflow's messages said in the page's language.
function notice(wf) {
  const n = wf.notice || { level: "info" };
  const box = document.getElementById("notice");
  box.className = `level-${n.level}`;
  // The reason in the worker's words leads.
  const tag = t(`notice.${n.level}`) + (n.reason ? ` · ${words("reason", n.reason)}` : "");
  box.replaceChildren(el("span", "tag", tag), el("span", "text", say(n.message) || "\u00a0"));
  document.getElementById("prompt").textContent = say(wf.prompt_message);
}

// Refused scans: the reason in words, then what the station said.
function refusals(box, wf) {
  const items = (wf.refusals || []).map((r) => el("li", "", r.reason ? `${words("reason", r.reason)}: ${say(r.message)}` : say(r.message)));
  if (!items.length) items.push(el("li", "muted", t("screen.none")));
  fitList(box, items);
}

// Start the screen: render the embedded state now, then every state the node streams.
// EventSource reconnects by itself; until it does, the header says the screen lost the node.
let shown = null;
let draw = null;
let stream = null;
const redraw = () => { if (shown && draw) draw(shown); };
function screen(render) {
  draw = (s) => settle(render, s);
  const show = (s) => { shown = s; draw(s); };
  const embedded = document.getElementById("state");
  if (embedded) show(JSON.parse(embedded.textContent));
  else fetch("/api/state").then((r) => r.json()).then(show);
  stream = new EventSource("/api/stream");
  stream.onmessage = (e) => { lost = false; show(JSON.parse(e.data)); };
  stream.onerror = () => { lost = true; redraw(); };
  stream.onopen = () => { if (lost) { lost = false; redraw(); } };
  addEventListener("resize", redraw);  // the lists fit what the new size shows
}
