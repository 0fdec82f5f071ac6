// The queue page of mailwright's admin listener: plain JavaScript, no build step.
// Everything shown comes from /api/v1/ (docs/operations.md); text from the network
// (addresses, replies, headers) is only ever set as textContent, never as HTML.
"use strict";

const TOKEN_KEY = "mailwright-token";  // sessionStorage: gone when the browser session ends
const REFRESH_MS = 2000;
const REPLIES_REFRESH_MS = 15000;

const view = {
  filters: { state: "", domain: "" },
  nextCursor: null,
  detailId: null,
  explanations: new Map(),  // "451 4.4.1" -> Promise of the explain data
  timers: [],
};

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { method, headers });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || response.statusText);
  }
  return body;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function age(seconds) {
  const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  const parts = [];
  for (const [name, size] of units) {
    if (seconds >= size || (name === "s" && parts.length === 0)) {
      parts.push(Math.floor(seconds / size) + name);
      seconds %= size;
    }
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}

// ------------------------------------------------------------ the token

function askToken(message) {
  for (const timer of view.timers) clearInterval(timer);
  view.timers = [];
  $("main").hidden = true;
  $("token-form").hidden = false;
  $("token-error").hidden = !message;
  $("token-error").textContent = message || "";
  $("token").focus();
}

async function useToken(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  await start();
}

// ------------------------------------------------------------ explanations

function explanationOf(reply) {
  const key = reply.enhanced ? `${reply.code} ${reply.enhanced}` : String(reply.code);
  if (!view.explanations.has(key)) {
    view.explanations.set(key, api("GET", "/api/v1/explain/" + encodeURIComponent(key)));
  }
  return view.explanations.get(key);
}

function showExplanation(data) {
  $("explain-title").textContent = `${data.label}: ${data.summary || data.class.name}`;
  const body = $("explain-body");
  body.replaceChildren();
  // The enhanced code is the more precise: its words first, the basic code's after.
  const enhanced = data.enhanced || {};
  const basic = data.basic || {};
  const facts = [
    ["Class", `${data.class.name}: ${data.class.meaning}`],
    ["Meaning", enhanced.description || basic.description],
    ["Enhanced code", enhanced.text && `${enhanced.code}: ${enhanced.text}`],
    ["When", enhanced.when || basic.when],
    ["What to do", enhanced.fix || basic.fix || data.advice || data.class.retry],
    ["Reference", [basic.rfc, enhanced.rfc].filter(Boolean).join("; ")],
  ];
  for (const [name, value] of facts) {
    if (!value) continue;
    body.append(element("dt", name), element("dd", value));
  }
  $("explain").hidden = false;
}

// A reply as code, text and its explanation in place: the summary beside it, the
// whole reference on hover (title) and on click (the panel).
function replyElement(reply) {
  const box = element("span", null, "reply");
  if (!reply) {
    box.textContent = "none yet";
    return box;
  }
  const label = reply.enhanced ? `${reply.code} ${reply.enhanced}` : String(reply.code);
  const code = element("button", label, "reply-code link");
  code.type = "button";
  const explanation = element("span", "", "explanation");
  box.append(code, " ", element("span", reply.text, "reply-text"), explanation);
  explanationOf(reply)
    .then((data) => {
      explanation.textContent = data.summary || data.class.meaning;
      code.title = `${data.class.name}. ${data.summary || ""} ${data.advice || ""}`.trim();
      code.addEventListener("click", () => showExplanation(data));
    })
    .catch(() => {
      explanation.textContent = "";
    });
  return box;
}

// ------------------------------------------------------------ the queue

function queuePath(cursor) {
  const query = new URLSearchParams();
  if (view.filters.state) query.set("state", view.filters.state);
  if (view.filters.domain) query.set("domain", view.filters.domain);
  if (cursor) query.set("cursor", cursor);
  const text = query.toString();
  return "/api/v1/queue" + (text ? "?" + text : "");
}

function actionButtons(message) {
  const cell = element("td", null, "actions");
  const states = new Set(message.recipients.map((r) => r.state));
  const actions = [["retry", "Retry"], ["hold", "Hold"], ["release", "Release"], ["delete", "Delete"]];
  for (const [action, label] of actions) {
    if (action === "release" && !states.has("held")) continue;
    if (action === "hold" && !states.has("queued") && !states.has("deferred")) continue;
    const button = element("button", label, "action-" + action);
    button.type = "button";
    button.addEventListener("click", () => act(message.id, action));
    cell.append(button, " ");
  }
  return cell;
}

function messageRows(message) {
  const rows = [];
  message.recipients.forEach((rcpt, index) => {
    const row = document.createElement("tr");
    row.dataset.id = message.id;
    row.dataset.recipient = rcpt.address;
    if (index === 0) {
      const idCell = element("td");
      const open = element("button", message.id, "link id");
      open.type = "button";
      open.addEventListener("click", () => openDetail(message.id));
      idCell.append(open);
      row.append(
        idCell,
        element("td", age(message.age), "age"),
        element("td", message.sender || "<>", "sender"),
      );
    } else {
      row.append(element("td"), element("td"), element("td"));
    }
    const replyCell = element("td", null, "last-reply");
    replyCell.append(replyElement(rcpt.last_reply));
    row.append(
      element("td", rcpt.address, "recipient"),
      element("td", rcpt.state, "state state-" + rcpt.state),
      element("td", rcpt.attempts, "attempts"),
      replyCell,
    );
    row.append(index === 0 ? actionButtons(message) : element("td"));
    rows.push(row);
  });
  return rows;
}

async function loadQueue() {
  const page = await api("GET", queuePath(null));
  const body = $("queue").tBodies[0];
  body.replaceChildren(...page.messages.flatMap(messageRows));
  $("queue-empty").hidden = page.messages.length > 0;
  view.nextCursor = page.next_cursor;
  $("more").hidden = !page.next_cursor;
}

async function loadMore() {
  const page = await api("GET", queuePath(view.nextCursor));
  $("queue").tBodies[0].append(...page.messages.flatMap(messageRows));
  view.nextCursor = page.next_cursor;
  $("more").hidden = !page.next_cursor;
}

const CONFIRM = {
  retry: (id) => `Try delivering ${id} again now?`,
  hold: (id) => `Hold ${id}? It will not be delivered, nor expire, until released.`,
  release: (id) => `Release ${id} back to its delivery schedule?`,
  delete: (id) => `Delete ${id}? It is removed for good and the sender gets no bounce.`,
};

async function act(id, action) {
  if (!window.confirm(CONFIRM[action](id))) return;
  try {
    if (action === "delete") {
      await api("DELETE", `/api/v1/queue/${encodeURIComponent(id)}`);
      if (view.detailId === id) closeDetail();
    } else {
      await api("POST", `/api/v1/queue/${encodeURIComponent(id)}/${action}`);
    }
    setStatus(`${action}: ${id} done`);
  } catch (error) {
    handle(error);
  }
  await refresh();
}

async function retryDomain() {
  const domain = $("filter-domain").value.trim();
  if (!domain) {
    setStatus("Enter a destination domain first", true);
    return;
  }
  if (!window.confirm(`Try all deferred mail to ${domain} again now?`)) return;
  try {
    const answer = await api("POST", "/api/v1/queue/retry?domain=" + encodeURIComponent(domain));
    setStatus(`${answer.recipients} recipient(s) to ${domain} due now`);
  } catch (error) {
    handle(error);
  }
  await refresh();
}

// ------------------------------------------------------------ one message

function closeDetail() {
  view.detailId = null;
  $("detail").hidden = true;
}

async function openDetail(id) {
  view.detailId = id;
  await loadDetail();
}

async function loadDetail() {
  const id = view.detailId;
  if (!id) return;
  let message;
  try {
    message = await api("GET", `/api/v1/queue/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error.status === 404) {
      closeDetail();
      return;
    }
    throw error;
  }
  $("detail-id").textContent = message.id;
  const facts = $("detail-facts");
  facts.replaceChildren();
  const shown = [
    ["Sender", message.sender || "<> (a bounce)"],
    ["Arrived", `${message.arrived} (${age(message.age)} ago)`],
    ["Size", `${message.size} octets`],
  ];
  for (const rcpt of message.recipients) {
    shown.push(["Recipient", `${rcpt.address}: ${rcpt.state}, ${rcpt.attempts} attempt(s)`]);
  }
  for (const [name, value] of shown) facts.append(element("dt", name), element("dd", value));
  const history = $("history").tBodies[0];
  history.replaceChildren(
    ...message.history.map((attempt) => {
      const row = document.createElement("tr");
      const reply = element("td", null, "history-reply");
      reply.append(replyElement(attempt.reply));
      row.append(
        element("td", attempt.time),
        element("td", attempt.recipient),
        element("td", attempt.relay || "(none reached)"),
        reply,
      );
      return row;
    }),
  );
  $("detail-headers").textContent = message.headers;
  $("detail").hidden = false;
}

// ------------------------------------------------------------ replies of the hour

async function loadReplies() {
  const answer = await api("GET", "/api/v1/replies");
  const body = $("replies").tBodies[0];
  const codes = Object.keys(answer.replies).sort();
  body.replaceChildren(
    ...codes.map((code) => {
      const row = document.createElement("tr");
      row.dataset.code = code;
      const meaning = element("td");
      meaning.append(replyElement({ code: Number(code), enhanced: null, text: "" }));
      row.append(element("td", code, "code"), element("td", answer.replies[code], "count"), meaning);
      return row;
    }),
  );
}

// ------------------------------------------------------------ the loop

function handle(error) {
  if (error instanceof ApiError && error.status === 401) {
    const hadToken = Boolean(sessionStorage.getItem(TOKEN_KEY));
    sessionStorage.removeItem(TOKEN_KEY);
    askToken(hadToken ? "That token was refused." : "");
    return;
  }
  setStatus(String(error.message || error), true);
}

async function refresh() {
  try {
    await loadQueue();
    await loadDetail();
    setStatus("updated " + new Date().toLocaleTimeString());
  } catch (error) {
    handle(error);
  }
}

async function refreshReplies() {
  try {
    await loadReplies();
  } catch (error) {
    handle(error);
  }
}

async function start() {
  try {
    await loadQueue();
  } catch (error) {
    handle(error);
    return;
  }
  $("token-form").hidden = true;
  $("main").hidden = false;
  await refreshReplies();
  setStatus("updated " + new Date().toLocaleTimeString());
  view.timers.push(setInterval(refresh, REFRESH_MS));
  view.timers.push(setInterval(refreshReplies, REPLIES_REFRESH_MS));
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", useToken);
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    view.filters = { state: $("filter-state").value, domain: $("filter-domain").value.trim() };
    refresh();
  });
  $("retry-domain").addEventListener("click", retryDomain);
  $("more").addEventListener("click", () => loadMore().catch(handle));
  $("explain-close").addEventListener("click", () => {
    $("explain").hidden = true;
  });
  start();
});
