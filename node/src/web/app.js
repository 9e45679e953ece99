// Herald's local web page: asks for the node's API token (kept in this tab's
// sessionStorage), then shows the node's status (refreshed every few seconds)
// and the bulletins it holds (refreshed as each new one arrives, through the
// node's live feed), and publishes from a form. Every value from
// the node, and so from other members, is put in the page as text, never as
// markup.
"use strict";

const REFRESH_MS = 3000;
let token = sessionStorage.getItem("herald-token");
let timer = null;

function $(id) { return document.getElementById(id); }

// Controls that reorder how text is displayed (bidirectional overrides and
// isolates) could make another member's text show something else than it
// says, such as a disguised address: they are shown as their code points.
const BIDI = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;

function text(el, value) {
  el.textContent = value === null || value === undefined
    ? ""
    : String(value).replace(BIDI, (c) => "[U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0") + "]");
}

// The answer's JSON body and its headers.
async function request(path, body) {
  const options = { headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401) {
    throw Object.assign(new Error("the token was refused: paste the current one from api.token"), { unauthorized: true });
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) { throw new Error(answer.error || ("HTTP " + response.status)); }
  return { answer, headers: response.headers };
}

async function api(path, body) {
  return (await request(path, body)).answer;
}

function showLogin(message) {
  clearInterval(timer);
  timer = null;
  $("main").hidden = true;
  $("login").hidden = false;
  text($("login-error"), message || "");
  $("token").focus();
}

function kindName(kind) { return kind && kind.type ? kind.type : ""; }

async function refreshStatus() {
  const s = await api("/v1/status");
  text($("node"), "member " + s.member.slice(0, 10) + " · peer " + s.peer_id.slice(-8));
  text($("s-network"), s.network);
  text($("s-registry"), s.registry_version + (s.registry_forks
    ? " (FORKED: another approved update is known for " + s.registry_forks +
      " version(s); the members' nodes may hold different registries)"
    : "") + (s.registry_forks_settled
    ? " (forks settled at " + s.registry_forks_settled +
      " version(s): this branch holds a change that needs the threshold from there)"
    : ""));
  text($("s-bulletins"), s.bulletins);
  text($("s-peers"), s.connected_peers.length);
  const t = s.tree;
  text($("s-tree"), "sends to " + t.pushes_to + " peers in full and " + t.announces_to + " by id; " +
    t.receives_from + " send to it in full (" + t.duplicates + " duplicates, " + t.grafted + " grafted, " +
    t.frames_dropped + " frames dropped, " + t.held_back + " held back by limits)");
  text($("s-pending"), s.pending_gossip);
  const sync = s.last_sync;
  text($("s-sync"), sync
    ? new Date(sync.at_ms).toISOString().replace("T", " ").slice(0, 19) + " with " + sync.peer.slice(-8) +
      ": " + (sync.error ? "failed: " + sync.error
        : sync.new_bulletins + " new" + (s.behind ? ", still " + s.behind + " behind" : ""))
    : "none yet");
  text($("s-equivocations"), s.equivocations);
  const own = s.own_chain;
  const claimed = own.claims.reduce((max, c) => Math.max(max, c.up_to), 0);
  text($("s-own-chain"), "numbered up to " + own.numbered_up_to +
    (own.checked ? "" : ", not yet checked with peers") +
    (claimed > own.numbered_up_to
      ? "; peers list it up to " + claimed + ": publishing waits for the catch-up"
      : ""));
}

// The list's filters as query parameters.
function filters() {
  const params = new URLSearchParams();
  if ($("f-kind").value) { params.set("kind", $("f-kind").value); }
  if ($("f-severity").value) { params.set("min_severity", $("f-severity").value); }
  if ($("f-text").value.trim()) { params.set("text", $("f-text").value.trim()); }
  return params;
}

async function refreshList() {
  const params = filters();
  params.set("limit", $("f-limit").value);
  // By when they came to this node, whenever made (a member back from a
  // partition brings old bulletins that are new here).
  if ($("f-order").value === "arrived") { params.set("arrived_since", "0"); }
  const { answer: bulletins, headers } = await request("/v1/bulletins?" + params);
  // A search that stopped before the oldest bulletins says so.
  const byArrival = $("f-order").value === "arrived";
  text($("list-note"), headers.get("herald-search") === "incomplete"
    ? (byArrival
      ? "Only the latest 100,000 bulletins of this kind and severity to arrive were searched: choose a kind or a severity, or search older ones with herald list --text --arrived-since."
      : "Only the newest 100,000 bulletins of this kind and severity were searched: choose a kind or a severity, or search older ones with herald list --text --since.")
    : (byArrival ? "Latest to arrive first (the Created column is when each was made)." : ""));
  const rows = bulletins.map((b) => {
    const tr = document.createElement("tr");
    const cells = [
      [b.created.replace("T", " ").slice(0, 19), "nowrap"],
      [b.member_name || (b.member || "").slice(0, 10), ""],
      [kindName(b.kind), "nowrap"],
      [b.tlp, "nowrap tlp-" + b.tlp],
      [b.severity, "sev-" + b.severity],
      [b.title, ""],
    ];
    for (const [value, cls] of cells) {
      const td = document.createElement("td");
      td.className = cls;
      text(td, value);
      tr.appendChild(td);
    }
    tr.addEventListener("click", () => showDetail(b.id).catch(failed));
    return tr;
  });
  $("bulletins").tBodies[0].replaceChildren(...rows);
}

// The bulletins held that supersede, withdraw or follow up on the one shown.
function answerFacts(answers) {
  if (!answers) return [];
  const facts = [];
  if (answers.superseded_by.length) facts.push(["Superseded by", answers.superseded_by.join(", ")]);
  if (answers.withdrawn_by.length) facts.push(["WITHDRAWN by", answers.withdrawn_by.join(", ")]);
  if (answers.follow_ups.length) facts.push(["Follow-ups", answers.follow_ups.join(", ")]);
  if (!answers.complete) facts.push(["Answers", "the first 10,000 only"]);
  return facts;
}

async function showDetail(id) {
  const b = await api("/v1/bulletins/" + encodeURIComponent(id));
  text($("d-title"), b.title);
  const facts = [
    ["Id", b.id],
    ["Member", (b.member_name ? b.member_name + " · " : "") + (b.member || "unknown")],
    ["Signing key, number", b.signer + " · " + b.seq],
    ["Follows", b.prev || "nothing (first of its chain)"],
    ["Created", b.created],
    ["Kind", JSON.stringify(b.kind)],
    ["TLP, severity", b.tlp + " · " + b.severity],
    ["References", b.references.map((r) => r.value).join(", ") || "none"],
    ["Supersedes", b.supersedes || "nothing"],
    ...answerFacts(b.answers),
    ["Expires", b.expires || "never"],
    ["Audience", b.audience.length ? b.audience.join(", ") : "all members"],
    ["Content", b.content_type + ", " + b.payload_bytes + " bytes"],
  ];
  const items = [];
  for (const [name, value] of facts) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    text(dt, name);
    text(dd, value);
    items.push(dt, dd);
  }
  $("d-facts").replaceChildren(...items);
  text($("d-payload"), b.payload === null || b.payload === undefined
    ? "(no content)"
    : (b.payload_encoding === "hex" ? "(not text; hex)\n" : "") + b.payload);
  $("detail").dataset.id = b.id;
  $("detail").hidden = false;
  $("detail").scrollIntoView({ behavior: "smooth" });
}

// The form's kind, with the facts that kind carries. Throws, with what to
// fix, if a fact is missing or malformed.
function draftKind() {
  const type = $("p-kind").value;
  switch (type) {
    case "vulnerability-advisory": return { type, status: $("p-status").value };
    case "software-update": return { type, stage: $("p-stage").value };
    case "incident-report": return { type, phase: $("p-phase").value };
    case "incident-metrics": {
      const end = Date.now();
      const start = end - Number($("p-period").value) * 3600 * 1000;
      return { type, period_start: start, period_end: end, counts: parseCounts($("p-counts").value) };
    }
    case "follow-up": return { type, on: bulletinId("p-on", "the bulletin followed up"), action: $("p-action").value };
    case "withdrawal": {
      const reason = $("p-reason").value.trim();
      if (reason === "") { throw new Error("say why the bulletin is withdrawn"); }
      return { type, of: bulletinId("p-of", "the bulletin withdrawn"), reason };
    }
    default: return { type };
  }
}

// "name = count" lines; blank lines are skipped.
function parseCounts(textValue) {
  const counts = [];
  for (const line of textValue.split("\n")) {
    if (line.trim() === "") { continue; }
    const match = /^\s*([^=]+?)\s*=\s*(\d+)\s*$/.exec(line);
    if (!match || !Number.isSafeInteger(Number(match[2]))) {
      throw new Error("counter line \"" + line.trim() + "\" is not: name = whole number");
    }
    counts.push({ name: match[1], value: Number(match[2]) });
  }
  if (counts.length === 0) { throw new Error("give at least one counter, as: name = count"); }
  return counts;
}

function bulletinId(field, what) {
  const id = $(field).value.trim();
  if (id === "") { throw new Error("give the id of " + what + " (open it in the list and copy its id)"); }
  return id;
}

const KIND_FACTS = {
  "vulnerability-advisory": ["p-status-label"],
  "software-update": ["p-stage-label"],
  "incident-report": ["p-phase-label"],
  "incident-metrics": ["p-period-label", "p-counts-label"],
  "follow-up": ["p-on-label", "p-action-label"],
  "withdrawal": ["p-of-label", "p-reason-label"],
};

function showKindFacts() {
  const shown = KIND_FACTS[$("p-kind").value] || [];
  for (const ids of Object.values(KIND_FACTS)) {
    for (const id of ids) { $(id).hidden = !shown.includes(id); }
  }
}

// Opens the form as a follow-up on, or a withdrawal of, the bulletin shown.
function answerShown(kind, field) {
  $("p-kind").value = kind;
  $(field).value = $("detail").dataset.id || "";
  showKindFacts();
  $("publish").open = true;
  $("publish").scrollIntoView({ behavior: "smooth" });
  $("p-title").focus();
}

function hex(text) {
  return Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function publish(event) {
  event.preventDefault();
  const result = $("p-result");
  const cves = $("p-cves").value.split(",").map((c) => c.trim()).filter((c) => c !== "");
  let kind;
  try {
    kind = draftKind();
  } catch (error) {
    result.className = "error";
    text(result, "Not published: " + error.message);
    return;
  }
  const draft = {
    kind,
    tlp: $("p-tlp").value,
    severity: $("p-severity").value,
    title: $("p-title").value.trim(),
    references: cves.map((value) => ({ type: "cve", value })),
    payload: { content_type: "text/markdown", bytes: hex($("p-body").value) },
  };
  const newChain = $("p-new-chain").checked;
  const question = "Sign and publish \"" + draft.title + "\" in your organisation's name, to every member? It cannot be taken back, only withdrawn by a later bulletin." +
    (newChain ? " You say this node holds its key's whole chain, or the key has never published: if not, this signs one of its numbers a second time." : "");
  if (!window.confirm(question)) {
    return;
  }
  result.className = "";
  text(result, "Publishing...");
  try {
    const published = await api(newChain ? "/v1/bulletins?new_chain=true" : "/v1/bulletins", draft);
    $("p-new-chain").checked = false;
    result.className = "ok";
    text(result, "Published " + published.id + " (number " + published.seq + " of this node's chain): on disk, and on its way to the other members.");
    for (const id of ["p-title", "p-cves", "p-body", "p-counts", "p-on", "p-of", "p-reason"]) {
      $(id).value = "";
    }
    refreshList().catch(failed);
  } catch (error) {
    if (error.unauthorized) { failed(error); return; }
    result.className = "error";
    text(result, "Not published: " + error.message);
  }
}

function failed(error) {
  if (error.unauthorized) {
    sessionStorage.removeItem("herald-token");
    showLogin(error.message);
  } else {
    text($("error"), "The node did not answer: " + error.message + " (is herald run still running?)");
  }
}

// The live feed (GET /v1/watch, with the list's filters): the held bulletins
// change only as new ones arrive, so while it is open the list is refreshed
// when it reports one that passes the filters, and not every few seconds.
let feed = null;
let listSoon = null;

async function follow() {
  if (feed) feed.abort();
  const controller = new AbortController();
  feed = controller;
  try {
    const response = await fetch("/v1/watch?" + filters(), {
      headers: { Authorization: "Bearer " + token },
      signal: controller.signal,
    });
    if (response.status === 401) {
      throw Object.assign(new Error("the token was refused: paste the current one from api.token"), { unauthorized: true });
    }
    if (!response.ok || !response.body) return;
    text($("s-live"), "live: each new bulletin shows as it arrives");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, end).trim();
        buffered = buffered.slice(end + 1);
        // A bulletin (a line with an id) refreshes the list; the line that
        // ends a feed ends it.
        if (line && JSON.parse(line).id === undefined) return;
        // At most one list refresh each 200 ms, however fast they come.
        if (line && listSoon === null) {
          listSoon = setTimeout(() => {
            listSoon = null;
            refreshList().catch(failed);
          }, 200);
        }
      }
    }
  } catch (error) {
    if (error.unauthorized) failed(error);
    // Otherwise (aborted for new filters, the node stopped, a line that does
    // not parse) the list is refreshed every few seconds until a new feed opens.
  } finally {
    // Whatever ended it, its connection is let go.
    controller.abort();
    if (feed === controller) {
      feed = null;
      text($("s-live"), "refreshed every few seconds (no live feed from the node)");
    }
  }
}

// One refresh at a time: a slow answer is not asked for again before it comes.
let refreshing = false;

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    await refreshStatus();
    if (!feed) {
      // What came while no feed was open is listed as a new one opens (a
      // search too: it reads much of the store, so it runs when asked, as a
      // feed opens, or when the feed reports a new match).
      follow();
      await refreshList();
    }
    text($("error"), "");
  } catch (error) {
    failed(error);
  } finally {
    refreshing = false;
  }
}

function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    sessionStorage.setItem("herald-token", token);
    start();
  });
  // The order changes the list only; the live feed stays as it is.
  $("f-order").addEventListener("change", () => refreshList().catch(failed));
  for (const id of ["f-kind", "f-severity", "f-limit", "f-text"]) {
    $(id).addEventListener("change", () => {
      refreshList().catch(failed);
      follow();
    });
  }
  $("d-close").addEventListener("click", () => { $("detail").hidden = true; });
  $("d-follow-up").addEventListener("click", () => answerShown("follow-up", "p-on"));
  $("d-withdraw").addEventListener("click", () => answerShown("withdrawal", "p-of"));
  $("p-kind").addEventListener("change", showKindFacts);
  $("publish-form").addEventListener("submit", publish);
  showKindFacts();
  if (token) { start(); } else { showLogin(); }
});
