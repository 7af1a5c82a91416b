// A small OMS in JavaScript (Node.js 20, no packages): what docs/api.md asks of an OMS author.
//
// It dispatches a wave through the site service's API, lets the simulated picker confirm
// every line (the node's simulation control API stands in for people), and receives every
// confirmation twice over: through a signed webhook (Standard Webhooks, checked with
// crypto.createHmac) and through the event cursor (long-poll). Each is taken exactly once
// by event id. It prints a JSON summary and exits 0 when every order came back once on
// both ways, 1 otherwise.
//
// env: SITE_URL, SITE_TOKEN, CONTROL_URL (the node's), NODE, SLOTS, WAVE
import crypto from "node:crypto";
import http from "node:http";

const SITE = process.env.SITE_URL;
const TOKEN = process.env.SITE_TOKEN;
const CONTROL = process.env.CONTROL_URL;
const NODE = process.env.NODE;
const SLOTS = Number(process.env.SLOTS);
const WAVE = process.env.WAVE;
const auth = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };

async function api(method, path, body, key) {
  const headers = { ...auth };
  if (key) headers["idempotency-key"] = key;
  const res = await fetch(SITE + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}

// --- the webhook endpoint ---------------------------------------------------------------

let secret = null;
const byWebhook = new Map(); // event id -> event
let rejected = 0;
let duplicates = 0;

function verify(headers, raw) {
  const id = headers["webhook-id"];
  const ts = headers["webhook-timestamp"];
  const given = (headers["webhook-signature"] || "").split(" ");
  if (!id || !ts || Math.abs(Date.now() / 1000 - Number(ts)) > 300) return false;
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const mac = crypto.createHmac("sha256", key).update(`${id}.${ts}.`).update(raw).digest("base64");
  const expected = Buffer.from(`v1,${mac}`);
  return given.some((g) => g.length === expected.length && crypto.timingSafeEqual(Buffer.from(g), expected));
}

const received = []; // raw messages, to replay and tamper with afterwards
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const raw = Buffer.concat(chunks);
    if (!secret || !verify(req.headers, raw)) {
      rejected += 1;
      res.writeHead(401).end();
      return;
    }
    received.push({ headers: req.headers, raw });
    const message = JSON.parse(raw);
    const events = message.type === "events" ? message.data.events : [message.data];
    for (const event of events) {
      if (byWebhook.has(event.id)) duplicates += 1;
      else byWebhook.set(event.id, event);
    }
    res.writeHead(204).end();
  });
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const hookUrl = `http://127.0.0.1:${server.address().port}/zone-agent`;

// --- the wave ---------------------------------------------------------------------------

const hook = await api("POST", "/v1/webhooks", { url: hookUrl, names: ["picked"] }, `${WAVE}-hook`);
if (hook.status !== 201) throw new Error(`webhook: ${hook.status} ${JSON.stringify(hook.body)}`);
secret = hook.body.secret;

const catalogue = {};
const orders = [];
for (let i = 1; i <= SLOTS; i++) {
  const sku = `JS-${WAVE}-${i}`;
  catalogue[sku] = { location: `${NODE}-S${i}`, barcodes: [`590${String(i).padStart(10, "0")}`],
    description: `Ceramic espresso cup 90 ml with saucer, glazed white, set ${i}`.slice(0, 60) };
  orders.push({ order: `${WAVE}-J${i}`, channel: "shop", lines: [{ sku, qty: 1 + (i % 3) }] });
}
const wave = { wave: WAVE, catalogue, orders };
const first = await api("POST", "/v1/waves", wave, `wave-${WAVE}`);
const retried = await api("POST", "/v1/waves", wave, `wave-${WAVE}`); // a network retry
if (first.status !== 202 || retried.status !== 202 || retried.headers.get("idempotent-replayed") !== "true") {
  throw new Error(`wave: ${first.status} ${retried.status} ${JSON.stringify(first.body)}`);
}

// --- the picker -------------------------------------------------------------------------

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
async function slot(id) {
  const res = await fetch(`${CONTROL}/sim/shelf`);
  return (await res.json()).slots[id];
}
for (let i = 1; i <= SLOTS; i++) {
  const id = `${NODE}-S${i}`;
  const until = Date.now() + 30000;
  while (!(await slot(id)).on) {
    if (Date.now() > until) throw new Error(`${id} never lit`);
    await sleep(20);
  }
  await fetch(`${CONTROL}/sim/shelf/press`, { method: "POST",
    body: JSON.stringify({ slot: id, button: "confirm" }) });
  while ((await slot(id)).on) {
    if (Date.now() > until) throw new Error(`${id} stayed lit after the press`);
    await sleep(20);
  }
}

// --- the cursor -------------------------------------------------------------------------

const byCursor = new Map();
let after = 0;
const until = Date.now() + 60000;
while (byCursor.size < SLOTS && Date.now() < until) {
  const page = await api("GET", `/v1/events?after=${after}&wait=5&name=picked`);
  for (const event of page.body.events) byCursor.set(event.id, event);
  after = page.body.next;
}
while (byWebhook.size < SLOTS && Date.now() < until) await sleep(20);

// A replayed message (same webhook-id) is taken once; a tampered one is refused.
const copy = received[0];
const { "content-length": _, host: __, ...sent } = copy.headers;
const post = (headers, raw) => fetch(hookUrl, { method: "POST", headers, body: raw });
const replayed = await post(sent, copy.raw);
const tampered = await post(sent, Buffer.from(copy.raw.toString().replace('"qty":', '"qty": ')));

const ordersOf = (m) => [...m.values()].map((e) => e.body.order).sort();
const summary = {
  webhook: ordersOf(byWebhook),
  cursor: ordersOf(byCursor),
  sameIds: JSON.stringify([...byWebhook.keys()].sort()) === JSON.stringify([...byCursor.keys()].sort()),
  duplicatesDropped: duplicates,
  replayedStatus: replayed.status,
  tamperedStatus: tampered.status,
  rejected,
};
console.log(JSON.stringify(summary));
server.close();
const want = orders.map((o) => o.order).sort();
const ok = JSON.stringify(summary.webhook) === JSON.stringify(want) &&
  JSON.stringify(summary.cursor) === JSON.stringify(want) && summary.sameIds &&
  replayed.status === 204 && tampered.status === 401 && duplicates === 1;
process.exit(ok ? 0 : 1);
