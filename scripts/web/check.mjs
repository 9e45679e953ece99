// Checks the local web page (node/src/web) in jsdom against a fake API: the
// status and the list render, hostile titles and payloads stay text, every
// request carries the token, a refused token brings the login back, and the
// publish form sends the draft the API expects, for every kind of facts.
// Run by scripts/web-check.sh.
// Usage: node check.mjs <path of node/src/web>
import { JSDOM } from "jsdom";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";

const web = process.argv[2];
const html = readFileSync(join(web, "index.html"), "utf8");
const script = readFileSync(join(web, "app.js"), "utf8");

const hostile = "<img src=x onerror=alert(1)><script>alert(2)</script>";
// A right-to-left override that would show "evil.com/gpj.exe" reversed.
const disguised = "https://example.org/\u202Eexe.jpg";
const status = {
  peer_id: "12D3KooWexamplepeer", member: "3a55cdfbd340374fdebf", network: "448f", registry_version: 2, registry_forks: 1,
  bulletins: 2, connected_peers: ["a", "b"], listen: [], equivocations: 0, pending_gossip: 1, syncing: 0,
  last_sync: { peer: "12D3KooWpeer0001", at_ms: 1795702134141, new_bulletins: 3, error: null }, behind: 0,
  own_chain: { numbered_up_to: 4, checked: false, claims: [{ peer: "12D3KooWpeer0001", up_to: 9 }] },
  tree: { pushes_to: 2, announces_to: 1, receives_from: 2, duplicates: 17, grafted: 0, frames_dropped: 3, held_back: 5 },
};
const bulletin = (id, title) => ({
  id, member: "3a55", member_name: hostile, signer: "5ef9", seq: 1, prev: null,
  created: "2026-11-26T14:08:54.141Z", created_ms: 1, kind: { type: "outreach" }, tlp: "AMBER",
  severity: "high", title, references: [{ type: "cve", value: "CVE-2026-12345" }], supersedes: null,
  expires: null, audience: [], content_type: "text/plain", payload_bytes: 5, payload: hostile,
});

function page(respond, token) {
  const dom = new JSDOM(html, { runScripts: "outside-only", url: "http://127.0.0.1:7801/" });
  const w = dom.window;
  // As a token kept from earlier in this tab.
  w.sessionStorage.setItem("herald-token", token);
  const calls = [];
  w.fetch = async (path, options) => {
    calls.push({ path, options });
    const [code, body, headers, stream] = respond(path, options);
    return {
      status: code,
      ok: code < 300,
      json: async () => body,
      headers: new Map(Object.entries(headers || {})),
      body: stream,
    };
  };
  w.confirm = () => true;
  // jsdom lays nothing out, so it has no scrolling.
  w.Element.prototype.scrollIntoView = () => {};
  w.TextEncoder = TextEncoder;
  w.TextDecoder = TextDecoder;
  // The page's periodic refresh, run when a check says so.
  const ticks = [];
  w.setInterval = (tick) => { ticks.push(tick); return ticks.length; };
  w.clearInterval = () => {};
  w.eval(script);
  const tick = () => ticks[ticks.length - 1]();
  return { w, d: w.document, calls, tick };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 50));

// Signed in: status, list, details.
{
  const { w, d, calls } = page((path) => {
    if (path === "/v1/status") return [200, status];
    if (path.startsWith("/v1/bulletins?")) return [200, [bulletin("aa", hostile), bulletin("bb", disguised)]];
    if (path.startsWith("/v1/bulletins/")) {
      return [200, { ...bulletin("aa", hostile), answers: { superseded_by: ["cc"], withdrawn_by: [], follow_ups: ["dd", "ee"], complete: true } }];
    }
    return [404, { error: "no such route" }];
  }, "tok");
  d.dispatchEvent(new w.Event("DOMContentLoaded"));
  await settle();
  assert.equal(d.getElementById("login").hidden, true);
  assert.equal(d.getElementById("s-peers").textContent, "2");
  assert.match(d.getElementById("s-registry").textContent, /^2 \(FORKED: another approved update is known for 1 version/);
  assert.equal(d.getElementById("s-tree").textContent,
    "sends to 2 peers in full and 1 by id; 2 send to it in full (17 duplicates, 0 grafted, 3 frames dropped, 5 held back by limits)");
  assert.equal(
    d.getElementById("s-own-chain").textContent,
    "numbered up to 4, not yet checked with peers; peers list it up to 9: publishing waits for the catch-up",
  );
  const rows = d.querySelectorAll("#bulletins tbody tr");
  assert.equal(rows.length, 2);
  assert.equal(rows[0].cells[5].textContent, hostile);
  assert.equal(rows[1].cells[5].textContent, "https://example.org/[U+202E]exe.jpg", "bidi controls are shown, not obeyed");
  rows[0].dispatchEvent(new w.Event("click"));
  await settle();
  assert.equal(d.getElementById("detail").hidden, false);
  assert.equal(d.getElementById("d-payload").textContent, hostile);
  const facts = d.getElementById("d-facts").textContent;
  assert.ok(facts.includes("Superseded bycc") && facts.includes("Follow-upsdd, ee") && !facts.includes("WITHDRAWN"), facts);
  assert.equal(d.querySelectorAll("img, main script").length, 0, "hostile markup stays text");
  assert.ok(calls.every((c) => c.options.headers.Authorization === "Bearer tok"), "every request carries the token");
  // The search box narrows the list through the API.
  d.getElementById("f-text").value = " log4j ";
  d.getElementById("f-text").dispatchEvent(new w.Event("change"));
  await settle();
  assert.ok(calls.some((c) => c.path.startsWith("/v1/bulletins?") && c.path.includes("text=log4j")), "searched");
  assert.equal(d.getElementById("list-note").textContent, "", "a search that read everything says nothing more");
  assert.ok(!calls.some((c) => c.path.includes("arrived_since")), "newest made first by default");
  // Latest to arrive first: by the index of arrivals.
  d.getElementById("f-order").value = "arrived";
  d.getElementById("f-order").dispatchEvent(new w.Event("change"));
  await settle();
  assert.ok(calls.some((c) => c.path.startsWith("/v1/bulletins?") && c.path.includes("arrived_since=0")), "by arrival");
  assert.ok(!calls.some((c) => c.path.startsWith("/v1/watch?") && c.path.includes("arrived_since")), "the feed lists nothing");
  const last = () => calls.filter((c) => c.path.startsWith("/v1/bulletins?")).pop().path;
  assert.ok(last().includes("text=log4j") && last().includes("limit="), "with the other filters: " + last());
  assert.ok(d.getElementById("list-note").textContent.startsWith("Latest to arrive first"), "says so");
  // And back.
  d.getElementById("f-order").value = "made";
  d.getElementById("f-order").dispatchEvent(new w.Event("change"));
  await settle();
  assert.ok(!last().includes("arrived_since"), "by creation again: " + last());
  assert.equal(d.getElementById("list-note").textContent, "");
  w.close();
}

// A search that stopped before the oldest bulletins says so.
{
  const { w, d } = page((path) => {
    if (path === "/v1/status") return [200, status];
    if (path.startsWith("/v1/bulletins?")) {
      return [200, [bulletin("aa", "first")], path.includes("text=") ? { "herald-search": "incomplete" } : {}];
    }
    return [404, { error: "no such route" }];
  }, "tok");
  d.dispatchEvent(new w.Event("DOMContentLoaded"));
  await settle();
  assert.equal(d.getElementById("list-note").textContent, "");
  d.getElementById("f-text").value = "log4j";
  d.getElementById("f-text").dispatchEvent(new w.Event("change"));
  await settle();
  assert.match(d.getElementById("list-note").textContent, /newest 100,000 bulletins/);
  w.close();
}

// A live feed: the list is refreshed when it reports a new bulletin, not
// every few seconds, and a feed that ends gives way to a new one.
function liveFeed(signal) {
  const chunks = [];
  let wake = null;
  signal.addEventListener("abort", () => { if (wake) wake(); });
  const reader = {
    // As a browser's: an aborted request's reads fail.
    read: async () => {
      while (chunks.length === 0 && !signal.aborted) await new Promise((resolve) => { wake = resolve; });
      if (signal.aborted) throw Object.assign(new Error("aborted"), { name: "AbortError" });
      const chunk = chunks.shift();
      return chunk === null ? { done: true } : { done: false, value: new TextEncoder().encode(chunk) };
    },
  };
  const push = (chunk) => {
    chunks.push(chunk);
    if (wake) { wake(); wake = null; }
  };
  return { push, stream: { getReader: () => reader } };
}
{
  const feeds = [];
  const { w, d, calls, tick } = page((path, options) => {
    if (path === "/v1/status") return [200, status];
    if (path.startsWith("/v1/bulletins?")) return [200, [bulletin("aa", "first")]];
    if (path.startsWith("/v1/watch?")) {
      const feed = liveFeed(options.signal);
      feeds.push(feed);
      return [200, null, {}, feed.stream];
    }
    return [404, { error: "no such route" }];
  }, "tok");
  const lists = () => calls.filter((c) => c.path.startsWith("/v1/bulletins?")).length;
  // jsdom fires DOMContentLoaded itself: once, as a browser does.
  await settle();
  assert.equal(feeds.length, 1, "a feed is open");
  assert.match(d.getElementById("s-live").textContent, /^live/);
  assert.ok(calls.every((c) => c.options.headers.Authorization === "Bearer tok"), "the feed carries the token too");
  const listed = lists();
  // A status refresh while the feed is open leaves the list alone.
  tick();
  await settle();
  assert.equal(lists(), listed);
  // A new bulletin, split across two chunks: one list refresh, soon.
  const line = JSON.stringify(bulletin("bb", "second")) + "\n";
  feeds[0].push(line.slice(0, 10));
  feeds[0].push(line.slice(10));
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(lists(), listed + 1);
  // New filters open a new feed with them.
  d.getElementById("f-kind").value = "advisory";
  d.getElementById("f-kind").dispatchEvent(new w.Event("change"));
  await settle();
  assert.equal(feeds.length, 2);
  assert.ok(calls.filter((c) => c.path.startsWith("/v1/watch?")).pop().path.includes("kind=advisory"));
  // The feed it replaced is let go: what it would still say changes nothing.
  const afterChange = lists();
  feeds[0].push(line);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(lists(), afterChange);
  // Many lines at once: one refresh.
  for (let i = 0; i < 20; i++) feeds[1].push(line);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(lists(), afterChange + 1);
  // A feed that ends (the line that ends it) gives way to polling, then to a new feed.
  feeds[1].push(JSON.stringify({ error: "fell behind", fell_behind: true }) + "\n");
  await settle();
  assert.match(d.getElementById("s-live").textContent, /^refreshed every few seconds/);
  // A search, then a tick: the new feed's opening lists what came meanwhile, search or not.
  d.getElementById("f-text").value = "log4j";
  const before = lists();
  tick();
  await settle();
  assert.equal(lists(), before + 1, "listed as the new feed opens");
  assert.equal(feeds.length, 3, "and a new feed opened");
  assert.ok(calls.filter((c) => c.path.startsWith("/v1/watch?")).pop().path.includes("text=log4j"));
  tick();
  await settle();
  assert.equal(lists(), before + 1, "not again while it is open");
  w.close();
}

// A refused token brings the login back and forgets the token.
{
  const { w, d } = page(() => [401, { error: "token" }], "stale");
  d.dispatchEvent(new w.Event("DOMContentLoaded"));
  await settle();
  assert.equal(d.getElementById("login").hidden, false);
  assert.match(d.getElementById("login-error").textContent, /api\.token/);
  assert.equal(w.sessionStorage.getItem("herald-token"), null);
  w.close();
}

// Publishing sends the draft the API expects and shows the new id.
{
  let posted = null;
  const paths = [];
  const { w, d } = page((path, options) => {
    if (options.method === "POST") {
      posted = JSON.parse(options.body);
      paths.push(path);
      return [201, { id: "c0ffee", seq: 7 }];
    }
    if (path === "/v1/status") return [200, status];
    return [200, []];
  }, "tok");
  d.dispatchEvent(new w.Event("DOMContentLoaded"));
  await settle();
  d.getElementById("p-kind").value = "software-update";
  d.getElementById("p-kind").dispatchEvent(new w.Event("change"));
  assert.equal(d.getElementById("p-stage-label").hidden, false);
  d.getElementById("p-stage").value = "released";
  d.getElementById("p-tlp").value = "AMBER+STRICT";
  d.getElementById("p-title").value = "  Patch released  ";
  d.getElementById("p-cves").value = "CVE-2026-1, , CVE-2026-2";
  d.getElementById("p-body").value = "ü";
  d.getElementById("publish-form").dispatchEvent(new w.Event("submit", { cancelable: true }));
  await settle();
  assert.deepEqual(posted, {
    kind: { type: "software-update", stage: "released" },
    tlp: "AMBER+STRICT",
    severity: "medium",
    title: "Patch released",
    references: [{ type: "cve", value: "CVE-2026-1" }, { type: "cve", value: "CVE-2026-2" }],
    payload: { content_type: "text/markdown", bytes: "c3bc" },
  });
  assert.match(d.getElementById("p-result").textContent, /c0ffee/);
  // The operator's word that the key never published goes with that one publication.
  d.getElementById("p-title").value = "First of a new key";
  d.getElementById("p-new-chain").checked = true;
  d.getElementById("publish-form").dispatchEvent(new w.Event("submit", { cancelable: true }));
  await settle();
  assert.deepEqual(paths, ["/v1/bulletins", "/v1/bulletins?new_chain=true"]);
  assert.equal(d.getElementById("p-new-chain").checked, false);
  w.close();
}

// The kinds with structured facts: incident metrics (and a malformed counter,
// which sends nothing), and a follow-up opened from a bulletin's details.
{
  const posted = [];
  const { w, d } = page((path, options) => {
    if (options.method === "POST") {
      posted.push(JSON.parse(options.body));
      return [201, { id: "c0ffee", seq: 8 }];
    }
    if (path === "/v1/status") return [200, status];
    if (path.startsWith("/v1/bulletins?")) return [200, [bulletin("aa", "first")]];
    if (path.startsWith("/v1/bulletins/")) return [200, bulletin("aa", "first")];
    return [404, { error: "no such route" }];
  }, "tok");
  d.dispatchEvent(new w.Event("DOMContentLoaded"));
  await settle();
  const submit = () => d.getElementById("publish-form").dispatchEvent(new w.Event("submit", { cancelable: true }));
  d.getElementById("p-kind").value = "incident-metrics";
  d.getElementById("p-kind").dispatchEvent(new w.Event("change"));
  assert.equal(d.getElementById("p-counts-label").hidden, false);
  assert.equal(d.getElementById("p-stage-label").hidden, true);
  d.getElementById("p-title").value = "Weekly figures";
  d.getElementById("p-period").value = "168";
  d.getElementById("p-counts").value = "phishing-reports = 42\n\n ransomware cases=3 \n";
  const before = Date.now();
  submit();
  await settle();
  assert.equal(posted.length, 1);
  const kind = posted[0].kind;
  assert.equal(kind.type, "incident-metrics");
  assert.deepEqual(kind.counts, [{ name: "phishing-reports", value: 42 }, { name: "ransomware cases", value: 3 }]);
  assert.equal(kind.period_end - kind.period_start, 168 * 3600 * 1000);
  assert.ok(kind.period_end >= before && kind.period_end <= Date.now());

  d.getElementById("p-title").value = "Bad figures";
  d.getElementById("p-counts").value = "phishing-reports = many";
  submit();
  await settle();
  assert.equal(posted.length, 1, "a malformed counter sends nothing");
  assert.match(d.getElementById("p-result").textContent, /name = whole number/);

  d.querySelectorAll("#bulletins tbody tr")[0].dispatchEvent(new w.Event("click"));
  await settle();
  d.getElementById("d-follow-up").dispatchEvent(new w.Event("click"));
  assert.equal(d.getElementById("p-kind").value, "follow-up");
  assert.equal(d.getElementById("p-on").value, "aa");
  assert.equal(d.getElementById("p-on-label").hidden, false);
  assert.equal(d.getElementById("p-counts-label").hidden, true);
  d.getElementById("p-action").value = "request-information";
  d.getElementById("p-title").value = "More details, please";
  submit();
  await settle();
  assert.equal(posted.length, 2);
  assert.deepEqual(posted[1].kind, { type: "follow-up", on: "aa", action: "request-information" });

  d.getElementById("d-withdraw").dispatchEvent(new w.Event("click"));
  d.getElementById("p-title").value = "Withdrawn";
  submit();
  await settle();
  assert.equal(posted.length, 2, "a withdrawal needs a reason");
  assert.match(d.getElementById("p-result").textContent, /why/);
  d.getElementById("p-reason").value = "sent in error";
  submit();
  await settle();
  assert.deepEqual(posted[2].kind, { type: "withdrawal", of: "aa", reason: "sent in error" });
  w.close();
}

console.log("web page checks passed");
