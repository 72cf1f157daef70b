// Flywheel Playground: a Slack-like page over the local Slack stand-in (see ../PROTOCOL.md).
// Plain DOM, no framework. Message content only ever becomes text nodes (markdown.js).

import { renderText, renderMrkdwn, renderPlain, emojiFor, decodeEntities } from "./markdown.js";

const API = "/playground/api";
const QUICK_REACTIONS = ["+1", "-1", "no_entry_sign"];
const MORE_REACTIONS = ["tada", "eyes", "white_check_mark", "heart", "rocket", "pray", "joy", "thinking_face"];
const REACTION_LABELS = {
  "+1": "Good answer (thumbs up)", "-1": "Bad answer (thumbs down)", no_entry_sign: "Keep out of training data (no entry)",
};
const GROUP_SECONDS = 5 * 60;

// -- state ------------------------------------------------------------------------------------

const S = {
  loaded: false,
  me: "U_YOU",
  bot: "UBOT",
  team: "T_PLAY",
  names: { U_YOU: "you", UBOT: "flywheel", USLACKBOT: "Slackbot" },
  channels: [
    { id: "C_GENERAL", name: "general", is_im: false },
    { id: "C_RANDOM", name: "random", is_im: false },
    { id: "D_BOT", name: "flywheel", is_im: true },
  ],
  messages: new Map(), // channel -> Map(ts -> message)
  prompts: [],
  brokenCommands: [], // commands of prompt files that do not load: sent all the same, the bot says why
  model: { name: "", offline: false },
  home: null,
  shortcuts: [],
  view: { kind: "channel", id: "C_GENERAL" },
  thread: null, // {channel, ts}
  unread: new Set(),
  dismissed: new Set(), // ephemeral messages you dismissed: "channel:ts"
  feedback: new Map(), // "channel:ts" -> "up" | "down" | null: a click on its way (else the message's your_feedback)
  modal: null, // the open view
  sentAt: new Map(), // "channel:ts" of messages you sent -> Date.now(), to open their thread on reply
  lastSend: null, // {channel, at}: your latest top-level message on its way
  lastCommand: null, // {channel, at}: your latest slash command, whose request the bot shows in the channel
  panes: new Map(), // thread_ts -> assistant thread {channel, thread_ts, context_channel, title, status, prompts}
  pane: null, // the assistant pane's thread {channel, ts}, once opened
  paneOpen: false,
};

const idOf = (x, fallback) => (typeof x === "string" ? x : (x && (x.id || x.user_id)) || fallback);
const nameOf = (id, label) => label || S.names[id] || id;
const key = (channel, ts) => `${channel}:${ts}`;

function cmpTs(a, b) {
  const [ai, af = ""] = String(a).split(".");
  const [bi, bf = ""] = String(b).split(".");
  if (ai.length !== bi.length) return ai.length - bi.length;
  if (ai !== bi) return ai < bi ? -1 : 1;
  const fa = af.padEnd(6, "0");
  const fb = bf.padEnd(6, "0");
  return fa === fb ? 0 : fa < fb ? -1 : 1;
}

const isReply = (m) => m.thread_ts && m.thread_ts !== m.ts;
const isBot = (m) => m.user === S.bot || m.bot_id === "BBOT" || (m.bot_id && !m.user);
const channelById = (id) => S.channels.find((c) => c.id === id);
const channelMsgs = (id) => {
  if (!S.messages.has(id)) S.messages.set(id, new Map());
  return S.messages.get(id);
};
const visible = (channel, m) => !(m.ephemeral && S.dismissed.has(key(channel, m.ts)));

function topLevel(channel) {
  return [...channelMsgs(channel).values()].filter((m) => !isReply(m) && visible(channel, m)).sort((a, b) => cmpTs(a.ts, b.ts));
}
function replies(channel, ts) {
  return [...channelMsgs(channel).values()]
    .filter((m) => isReply(m) && m.thread_ts === ts && visible(channel, m))
    .sort((a, b) => cmpTs(a.ts, b.ts));
}
function replyInfo(channel, m) {
  const rs = replies(channel, m.ts).filter((r) => !r.ephemeral);
  const count = Math.max(Number(m.reply_count) || 0, rs.length);
  return { count, replies: rs };
}

function setState(st) {
  S.me = idOf(st.me, S.me);
  S.bot = idOf(st.bot, S.bot);
  S.team = idOf(st.team, S.team);
  if (st.me && st.me.name) S.names[S.me] = st.me.name;
  if (st.bot && st.bot.name) S.names[S.bot] = st.bot.name;
  S.channels = Array.isArray(st.channels) && st.channels.length ? st.channels : S.channels;
  S.messages = new Map();
  for (const [channel, list] of Object.entries(st.messages || {})) {
    const map = channelMsgs(channel);
    for (const m of list || []) map.set(m.ts, { ...m, channel });
  }
  S.prompts = st.prompts || [];
  S.brokenCommands = st.broken_commands || [];
  S.model = st.model || S.model;
  S.home = st.home || null;
  S.shortcuts = (st.shortcuts || []).filter((x) => x.type === "message");
  S.panes = new Map((st.assistant_threads || []).map((p) => [p.thread_ts, p]));
  if (S.pane && !S.panes.has(S.pane.ts)) S.pane = null;
  S.loaded = true;
  if (S.view.kind === "channel" && S.channels.length && !channelById(S.view.id)) S.view = { kind: "channel", id: S.channels[0].id };
}

// -- DOM helpers ----------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c != null && c !== false) node.append(c);
  return node;
}
const $ = (sel, root = document) => root.querySelector(sel);

function tsDate(ts) {
  return new Date(parseFloat(ts) * 1000);
}
function timeText(ts) {
  return tsDate(ts).toLocaleTimeString(undefined, { hour: "numeric", minute: "2-digit" });
}
function fullTime(ts) {
  return tsDate(ts).toLocaleString(undefined, { weekday: "long", month: "long", day: "numeric", hour: "numeric", minute: "2-digit", second: "2-digit" });
}
function dayLabel(d) {
  const now = new Date();
  const y = new Date(now.getTime() - 86400000);
  const same = (a, b) => a.toDateString() === b.toDateString();
  if (same(d, now)) return "Today";
  if (same(d, y)) return "Yesterday";
  return d.toLocaleDateString(undefined, { weekday: "long", month: "long", day: "numeric" });
}

const textCtx = {
  get me() {
    return S.me;
  },
  userName: (id, label) => nameOf(id, label),
  channelName: (id) => channelById(id)?.name,
  onChannel: (id) => openChannel(id),
};

// -- HTTP -------------------------------------------------------------------------------------

async function api(path, body, method = "POST") {
  let resp;
  try {
    resp = await fetch(API + path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    showBanner(`Can't reach the playground server (${err.message}). Is \`flywheel dev\` still running?`);
    throw err;
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok || (data && data.ok === false)) {
    const why = (data && (data.error || data.message)) || `HTTP ${resp.status}`;
    showBanner(`${method} ${path} failed: ${why}`);
    const err = new Error(why);
    err.data = data;
    throw err;
  }
  return data || {};
}

// -- the socket -------------------------------------------------------------------------------

let socket = null;
let backoff = 500;
let queued = null; // frames received while the state is being fetched

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/playground/ws`;
  let ws;
  try {
    ws = new WebSocket(url);
  } catch {
    scheduleReconnect();
    return;
  }
  socket = ws;
  ws.addEventListener("open", async () => {
    backoff = 500;
    setConnection(true);
    queued = [];
    await loadState();
    const frames = queued;
    queued = null;
    renderAll();
    for (const f of frames) applyFrame(f);
  });
  ws.addEventListener("message", (ev) => {
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (queued) queued.push(frame);
    else applyFrame(frame);
  });
  ws.addEventListener("close", () => {
    if (socket !== ws) return;
    socket = null;
    setConnection(false);
    scheduleReconnect();
  });
  ws.addEventListener("error", () => {});
}

let stateGen = 0;
async function loadState() {
  const gen = ++stateGen;
  try {
    const st = await api("/state", undefined, "GET");
    if (gen === stateGen) setState(st);
  } catch {
    /* banner shown */
  }
}

function scheduleReconnect() {
  const wait = backoff + Math.random() * 250;
  backoff = Math.min(backoff * 2, 10000);
  setTimeout(connect, wait);
}

function applyFrame(f) {
  switch (f.type) {
    case "message":
      if (f.message) upsertMessage(f.channel || f.message.channel, f.message);
      break;
    case "message_deleted":
      deleteMessage(f.channel, f.ts);
      break;
    case "view":
      openModal(f.view);
      break;
    case "view_closed":
      if (S.modal && (!f.view_id || S.modal.id === f.view_id)) closeModal(false);
      break;
    case "home":
      S.home = f.view;
      if (S.view.kind === "home") renderHome();
      break;
    case "assistant_thread":
      if (f.thread) {
        S.panes.set(f.thread.thread_ts, f.thread);
        if (S.paneOpen && S.pane && S.pane.ts === f.thread.thread_ts) renderPaneChrome();
      }
      break;
    case "prompts":
      S.brokenCommands = f.broken_commands || [];
      promptsChanged(f.prompts || []);
      break;
    case "reset":
      S.messages = new Map();
      S.dismissed.clear();
      S.panes = new Map();
      S.pane = null;
      closePane(false);
      closeThread(false);
      renderAll();
      loadState().then(renderAll);
      break;
    case "error":
      showBanner(f.message || "Something went wrong delivering to the bot.");
      break;
    default:
      break;
  }
}

// -- messages in and out ----------------------------------------------------------------------

function upsertMessage(channel, msg) {
  const map = channelMsgs(channel);
  const existed = map.has(msg.ts);
  const m = { ...msg, channel };
  map.set(m.ts, m);
  const parentTs = isReply(m) ? m.thread_ts : null;

  if (!existed && m.user === S.me && !parentTs && S.lastSend && S.lastSend.channel === channel && Date.now() - S.lastSend.at < 10000) {
    S.sentAt.set(key(channel, m.ts), Date.now());
  }
  // A slash command's request, which the bot shows in the channel: its thread is where the answer goes.
  const cmd = S.lastCommand;
  if (!existed && !parentTs && isBot(m) && !m.ephemeral && cmd && cmd.channel === channel && Date.now() - cmd.at < 10000 && (m.text || "").includes(`<@${S.me}>`)) {
    S.lastCommand = null;
    S.sentAt.set(key(channel, m.ts), Date.now());
  }
  S.feedback.delete(key(channel, m.ts)); // the stand-in's word on the pressed feedback button
  const inPane = S.panes.has(parentTs || m.ts); // the assistant pane's threads are read in the pane
  if (!existed && !(S.view.kind === "channel" && S.view.id === channel) && !m.ephemeral && m.user !== S.me && !inPane) {
    S.unread.add(channel);
    renderSidebar();
  }
  // Open the thread of a message you just sent when the bot starts answering in it.
  if (!existed && parentTs && isBot(m) && !S.thread && S.view.kind === "channel" && S.view.id === channel) {
    const sent = S.sentAt.get(key(channel, parentTs));
    if (sent && Date.now() - sent < 60000) {
      S.sentAt.delete(key(channel, parentTs));
      openThread(channel, parentTs, { focus: false });
    }
  }
  if (S.view.kind === "channel" && S.view.id === channel) {
    if (parentTs) {
      const parent = map.get(parentTs);
      if (parent) refreshMessage(mainList(), channel, parent);
    } else if (existed) {
      refreshMessage(mainList(), channel, m);
    } else {
      addTopLevel(channel, m);
    }
  }
  if (S.thread && S.thread.channel === channel) {
    if (m.ts === S.thread.ts) refreshMessage(threadList(), channel, m, true);
    else if (parentTs === S.thread.ts) {
      if (existed) refreshMessage(threadList(), channel, m, true);
      else addReply(channel, m);
    }
  }
  if (S.paneOpen && S.pane && S.pane.channel === channel && parentTs === S.pane.ts) paneMessage(channel, m, existed);
}

function deleteMessage(channel, ts) {
  const map = channelMsgs(channel);
  const m = map.get(ts);
  map.delete(ts);
  if (S.thread && S.thread.channel === channel && S.thread.ts === ts) closeThread();
  if (S.view.kind === "channel" && S.view.id === channel) renderMessages();
  if (S.thread && S.thread.channel === channel && m && m.thread_ts === S.thread.ts) renderThread();
  if (S.paneOpen && S.pane && S.pane.channel === channel && m && m.thread_ts === S.pane.ts) renderPane();
}

async function send(channel, text, threadTs) {
  const body = { channel, text };
  if (threadTs) body.thread_ts = threadTs;
  else if (text.startsWith("/")) S.lastCommand = { channel, at: Date.now() };
  else S.lastSend = { channel, at: Date.now() };
  const res = await api("/messages", body);
  if (res.ts) {
    S.sentAt.set(key(channel, res.ts), Date.now());
    if (!threadTs) {
      // Be sure the message shows even if its frame races the response.
      const list = mainList();
      if (list) requestAnimationFrame(() => scrollToBottom(list));
    }
  }
  return res;
}

// -- layout -----------------------------------------------------------------------------------

const mainList = () => $('[data-testid="messages"]');
const threadList = () => $('[data-testid="thread-messages"]');

function renderAll() {
  renderSidebar();
  renderHeader();
  if (S.view.kind === "home") renderHome();
  else renderMessages();
  if (S.thread) renderThread();
  if (S.paneOpen) renderPane();
}

function renderSidebar() {
  const nav = $("#channel-list");
  const dms = $("#dm-list");
  const homeBtn = $("#nav-home");
  nav.replaceChildren();
  dms.replaceChildren();
  for (const c of S.channels) {
    const current = S.view.kind === "channel" && S.view.id === c.id;
    const unread = S.unread.has(c.id);
    const label = c.is_im ? nameOf(S.bot) : c.name;
    const btn = h(
      "button",
      {
        type: "button",
        class: `nav-item${current ? " current" : ""}${unread ? " unread" : ""}`,
        "data-testid": `channel-${c.id}`,
        "aria-current": current ? "page" : null,
        onclick: () => openChannel(c.id),
      },
      c.is_im
        ? h("span", { class: "nav-avatar", "aria-hidden": "true" }, initial(label), h("span", { class: "presence" }))
        : h("span", { class: "nav-hash", "aria-hidden": "true" }, "#"),
      h("span", { class: "nav-label" }, label),
      c.is_im ? h("span", { class: "app-tag", "aria-hidden": "true" }, "APP") : null,
      c.is_im || unread ? h("span", { class: "sr-only" }, `${c.is_im ? " (app, direct message)" : ""}${unread ? ", unread" : ""}`) : null,
    );
    (c.is_im ? dms : nav).append(h("li", null, btn));
  }
  const homeCurrent = S.view.kind === "home";
  homeBtn.classList.toggle("current", homeCurrent);
  if (homeCurrent) homeBtn.setAttribute("aria-current", "page");
  else homeBtn.removeAttribute("aria-current");
}

function renderHeader() {
  const title = $("#channel-title");
  const sub = $("#channel-sub");
  title.replaceChildren();
  if (S.view.kind === "home") {
    title.append(h("span", { class: "title-icon", "aria-hidden": "true" }, "🏠"), `${nameOf(S.bot)} · Home`);
    sub.textContent = "The bot's App Home tab: how each prompt is doing.";
  } else {
    const c = channelById(S.view.id);
    if (c && c.is_im) {
      title.append(h("span", { class: "avatar avatar-bot avatar-sm", "aria-hidden": "true" }, initial(nameOf(S.bot))), nameOf(S.bot));
      sub.textContent = "Direct message · no @ needed, the bot answers everything here";
    } else {
      title.append(h("span", { class: "title-icon", "aria-hidden": "true" }, "#"), c ? c.name : S.view.id);
      sub.textContent = "Mention @flywheel or use a /command · the bot answers in a thread";
    }
  }
  const ta = $('[data-testid="composer"]');
  if (S.view.kind === "channel") {
    const c = channelById(S.view.id);
    ta.placeholder = c ? (c.is_im ? `Message ${nameOf(S.bot)}` : `Message #${c.name}`) : "Message";
    ta.setAttribute("aria-label", ta.placeholder);
  }
  document.title = `${S.view.kind === "home" ? "Home" : title.textContent} · Flywheel Playground`;
  renderModel();
}

function renderModel() {
  const box = $("#model-pill");
  box.replaceChildren();
  if (!S.loaded) {
    box.className = "model-pill";
    box.title = "";
    box.append(h("span", { class: "dot pending", "aria-hidden": "true" }), "Connecting…");
    return;
  }
  const name = S.model.name || "unknown model";
  if (S.model.offline) {
    box.className = "model-pill offline";
    box.title = "No model is configured, so a built-in offline echo model answers. To use a real model, set OPENAI_API_KEY (or OPENAI_BASE_URL for a local Ollama or vLLM server) and restart `flywheel dev`.";
    box.append(h("span", { class: "dot", "aria-hidden": "true" }), `Model: ${name} (offline)`);
  } else {
    box.className = "model-pill";
    box.title = `Answers come from ${name}.`;
    box.append(h("span", { class: "dot", "aria-hidden": "true" }), `Model: ${name}`);
  }
}

function openChannel(id) {
  S.view = { kind: "channel", id };
  S.unread.delete(id);
  if (S.thread && S.thread.channel !== id) closeThread(false);
  location.hash = `#/${id}`;
  $("#home-pane").hidden = true;
  $("#channel-pane").hidden = false;
  renderSidebar();
  renderHeader();
  renderMessages();
  paneContextChanged();
  requestAnimationFrame(() => $('[data-testid="composer"]').focus({ preventScroll: true }));
}

async function openHome() {
  S.view = { kind: "home" };
  closeThread(false);
  location.hash = "#/home";
  $("#home-pane").hidden = false;
  $("#channel-pane").hidden = true;
  renderSidebar();
  renderHeader();
  renderHome();
  paneContextChanged();
  try {
    await api("/home", {});
  } catch {
    /* banner shown */
  }
}

// -- the message list -------------------------------------------------------------------------

function nearBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 120;
}
function scrollToBottom(list) {
  list.scrollTop = list.scrollHeight;
}

function renderMessages() {
  const list = mainList();
  if (!list || S.view.kind !== "channel") return;
  const channel = S.view.id;
  const c = channelById(channel);
  list.setAttribute("aria-label", c ? (c.is_im ? `Messages with ${nameOf(S.bot)}` : `Messages in #${c.name}`) : "Messages");
  const pinned = nearBottom(list) || list.dataset.channel !== channel;
  list.dataset.channel = channel;
  const focusKey = focusedKey(list);
  list.replaceChildren();
  if (!S.loaded) {
    list.append(h("div", { class: "loading", role: "status" }, h("span", { class: "typing", "aria-hidden": "true" }, h("span"), h("span"), h("span")), " Loading the playground…"));
    return;
  }
  list.append(intro(c));
  let prev = null;
  for (const m of topLevel(channel)) {
    const d = tsDate(m.ts);
    if (!prev || tsDate(prev.ts).toDateString() !== d.toDateString()) {
      list.append(h("div", { class: "day-divider", role: "separator", "aria-label": dayLabel(d) }, h("span", null, dayLabel(d))));
      prev = null;
    }
    list.append(messageNode(channel, m, { grouped: groupedWith(prev, m) }));
    prev = m;
  }
  restoreFocus(list, focusKey);
  if (pinned) scrollToBottom(list);
}

function groupedWith(prev, m) {
  if (!prev || prev.user !== m.user || prev.ephemeral || m.ephemeral) return false;
  if (m.streaming || (m.metadata && m.metadata.event_payload)) return false; // each answer keeps its header
  if (prev.reply_count || replies(m.channel, prev.ts).length) return false;
  return parseFloat(m.ts) - parseFloat(prev.ts) < GROUP_SECONDS;
}

function intro(c) {
  const box = h("div", { class: "intro" });
  if (!c) return box;
  const examples = c.is_im
    ? ["What can you help me with?", "Explain the difference between SFT and DPO in two sentences."]
    : ["@flywheel what is a vector database?", `/${S.prompts.find((p) => p.command)?.command?.replace(/^\//, "") || "ask"} how do I undo the last git commit?`];
  box.append(
    c.is_im
      ? h("div", { class: "intro-avatar avatar avatar-bot", "aria-hidden": "true" }, initial(nameOf(S.bot)))
      : h("div", { class: "intro-icon", "aria-hidden": "true" }, "#"),
    h("h2", { class: "intro-title" }, c.is_im ? nameOf(S.bot) : `Welcome to #${c.name}`),
    h(
      "p",
      { class: "intro-text" },
      c.is_im
        ? "This is the very beginning of your direct messages with the bot. Everything you write here gets an answer, with the last hour as context."
        : "This channel talks to the real Flywheel bot through a local Slack stand-in. Mention the bot to get an answer in a thread, or run one of its slash commands; then react 👍 / 👎 on the answer.",
    ),
    h(
      "div",
      { class: "intro-try" },
      h("span", { class: "intro-try-label" }, "Try:"),
      examples.map((ex) =>
        h("button", { type: "button", class: "chip", onclick: () => fillComposer(ex) }, ex),
      ),
    ),
  );
  return box;
}

function fillComposer(text) {
  const ta = $('[data-testid="composer"]');
  ta.value = text;
  ta.dispatchEvent(new Event("input"));
  ta.focus();
  ta.setSelectionRange(text.length, text.length);
}

function focusedKey(container) {
  const a = document.activeElement;
  if (!a || !container.contains(a)) return null;
  const msg = a.closest("[data-ts]");
  const fk = a.dataset.fk;
  return msg && fk ? { ts: msg.dataset.ts, fk } : null;
}
function restoreFocus(container, k) {
  if (!k) return;
  const msg = container.querySelector(`[data-ts="${CSS.escape(k.ts)}"]`);
  const target = msg && msg.querySelector(`[data-fk="${CSS.escape(k.fk)}"]`);
  if (target) target.focus({ preventScroll: true });
}

function refreshMessage(list, channel, m, inThread = false) {
  if (!list) return;
  const old = list.querySelector(`:scope > [data-ts="${CSS.escape(m.ts)}"]`);
  if (!old) {
    if (inThread) renderThread();
    else renderMessages();
    return;
  }
  const pinned = nearBottom(list);
  const k = focusedKey(list);
  const node = messageNode(channel, m, { grouped: old.classList.contains("grouped"), inThread, isParent: old.classList.contains("thread-parent") });
  morph(old, node);
  if (k && !list.contains(document.activeElement)) restoreFocus(list, k);
  if (pinned) scrollToBottom(list);
}

/** Update a message's element in place, touching only the parts that changed: focus stays put
 *  and the live region announces only what is new. */
function morph(old, fresh) {
  for (const a of [...old.attributes]) if (!fresh.hasAttribute(a.name)) old.removeAttribute(a.name);
  for (const a of fresh.attributes) if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
  const kids = [...fresh.children];
  const parts = new Set(kids.map((c) => c.dataset.part));
  for (const c of [...old.children]) if (!c.dataset.part || !parts.has(c.dataset.part)) c.remove();
  kids.forEach((nk, i) => {
    const cur = old.children[i];
    if (cur && cur.dataset.part === nk.dataset.part) {
      if (cur.isEqualNode(nk)) return;
      if (nk.dataset.part === "content") morph(cur, nk);
      else cur.replaceWith(nk);
    } else {
      old.insertBefore(nk, cur || null);
    }
  });
}

/** A new top-level message: appended when it is the newest (the usual case), else a full render. */
function addTopLevel(channel, m) {
  const list = mainList();
  if (!list || list.dataset.channel !== channel) return renderMessages();
  const lastNode = list.querySelector(":scope > article:last-of-type");
  if (lastNode && cmpTs(lastNode.dataset.ts, m.ts) >= 0) return renderMessages();
  const pinned = nearBottom(list) || m.user === S.me;
  const prev = lastNode ? channelMsgs(channel).get(lastNode.dataset.ts) : null;
  const d = tsDate(m.ts);
  const newDay = !prev || tsDate(prev.ts).toDateString() !== d.toDateString();
  if (newDay) list.append(h("div", { class: "day-divider", role: "separator", "aria-label": dayLabel(d) }, h("span", null, dayLabel(d))));
  list.append(messageNode(channel, m, { grouped: !newDay && groupedWith(prev, m) }));
  if (pinned) scrollToBottom(list);
}

/** A new reply in the open thread: appended when it is the newest, else a full render. */
function addReply(channel, m) {
  const list = threadList();
  const lastNode = list.querySelector(":scope > article:last-of-type");
  if (!lastNode || cmpTs(lastNode.dataset.ts, m.ts) >= 0 || lastNode.classList.contains("thread-parent")) return renderThread();
  const pinned = nearBottom(list) || m.user === S.me;
  const prev = channelMsgs(channel).get(lastNode.dataset.ts);
  list.append(messageNode(channel, m, { inThread: true, grouped: groupedWith(prev, m) }));
  updateThreadDivider(channel);
  if (pinned) scrollToBottom(list);
}

function updateThreadDivider(channel) {
  const span = threadList().querySelector(".thread-divider span");
  if (!span || !S.thread) return;
  const count = replies(channel, S.thread.ts).filter((r) => !r.ephemeral).length;
  const text = count ? `${count} ${count === 1 ? "reply" : "replies"}` : "No replies yet";
  if (span.textContent !== text) span.textContent = text;
}

function part(name, node) {
  node.dataset.part = name;
  return node;
}

function initial(name) {
  return (String(name).trim()[0] || "?").toUpperCase();
}

function messageNode(channel, m, { grouped = false, inThread = false, isParent = false } = {}) {
  const bot = isBot(m);
  const user = m.user || (bot ? S.bot : "unknown");
  const name = nameOf(user);
  const nameId = `n-${inThread ? "t" : "m"}-${m.ts.replace(/\W/g, "_")}`;
  const node = h("article", {
    class: `message${grouped ? " grouped" : ""}${m.ephemeral ? " ephemeral" : ""}${bot ? " from-bot" : ""}${isParent ? " thread-parent" : ""}`,
    "data-testid": "message",
    "data-ts": m.ts,
    "data-user": user,
    "aria-labelledby": nameId,
    "aria-busy": m.streaming ? "true" : null,
    tabindex: "-1",
  });
  if (m.ephemeral) {
    node.append(
      h(
        "div",
        { class: "ephemeral-note", "data-part": "eph" },
        h("span", { "aria-hidden": "true" }, "👁 "),
        "Only visible to you",
        h("button", { type: "button", class: "link-button", "data-fk": "dismiss", onclick: () => dismissEphemeral(channel, m) }, "Dismiss"),
      ),
    );
  }
  const gutter = h("div", { class: "gutter", "data-part": "gutter" });
  if (grouped) gutter.append(h("time", { class: "hover-time", datetime: tsDate(m.ts).toISOString(), title: fullTime(m.ts) }, timeText(m.ts)));
  else gutter.append(h("div", { class: `avatar ${bot ? "avatar-bot" : "avatar-you"}`, "aria-hidden": "true" }, initial(name)));

  const content = h("div", { class: "content", "data-part": "content" });
  const head = h(
    "div",
    { class: grouped ? "msg-head sr-only" : "msg-head", "data-part": "head" },
    h("span", { class: "msg-name", id: nameId }, name),
    bot ? h("span", { class: "app-tag" }, "APP") : null,
    h("time", { class: "msg-time", datetime: tsDate(m.ts).toISOString(), title: fullTime(m.ts) }, timeText(m.ts)),
  );
  content.append(head);

  const blocks = Array.isArray(m.blocks) ? m.blocks : [];
  const textual = new Set(["markdown", "section", "header", "rich_text", "context", "divider", "image"]);
  const contentBlocks = blocks.filter((b) => textual.has(b.type));
  const controlBlocks = blocks.filter((b) => !textual.has(b.type));
  const body = h("div", { class: "msg-text", "data-testid": "message-text", "data-part": "body" });
  // A person's rich_text block is Slack's copy of the text: the text itself reads the same.
  const onlyRich = contentBlocks.length && contentBlocks.every((b) => b.type === "rich_text") && m.text;
  // A streamed message (the only kind with markdown text and blocks) shows chat.stopStream's blocks under its text.
  const streamed = m.format === "markdown";
  if (contentBlocks.length && !onlyRich && !streamed) body.append(renderBlocks(contentBlocks, { channel, ts: m.ts }));
  else if (m.text) body.append(renderText(m.text, m.format || "mrkdwn", textCtx));
  if (contentBlocks.length && streamed) body.append(renderBlocks(contentBlocks, { channel, ts: m.ts }));
  if (m.streaming) {
    const dots = h("span", { class: "typing", role: "status", "aria-label": `${name} is typing` }, h("span"), h("span"), h("span"));
    (lastTextBlock(body) || body).append(dots);
  }
  if (m.edited && !bot) body.append(h("span", { class: "edited" }, " (edited)"));
  content.append(body);
  if (controlBlocks.length) content.append(part("controls", renderBlocks(controlBlocks, { channel, ts: m.ts, interactiveOnly: true })));
  const meta = answerMeta(m, bot);
  if (meta) content.append(part("meta", meta));
  const reactions = reactionChips(channel, m);
  if (reactions) content.append(part("reactions", reactions));
  if (!inThread && !isReply(m)) {
    const info = replyInfo(channel, m);
    if (info.count) content.append(part("replies", replyBar(channel, m, info)));
  }
  node.append(gutter, content);
  if (!m.ephemeral) node.append(part("toolbar", toolbar(channel, m, inThread)));
  return node;
}

/** The innermost last paragraph-like element, where a typing indicator reads naturally. */
function lastTextBlock(node) {
  const containers = (el) =>
    /^(UL|OL|LI|BLOCKQUOTE)$/.test(el.tagName) ||
    (el.tagName === "DIV" && ["markdown", "mrkdwn", "blocks", "block"].some((c) => el.classList.contains(c)));
  let cur = node;
  let found = null;
  for (;;) {
    const last = cur.lastElementChild;
    if (!last) break;
    if (last.tagName === "P" || last.classList.contains("md-p") || last.classList.contains("md-heading")) return last;
    if (!containers(last)) break;
    found = last;
    cur = last;
  }
  return found && /^(LI|BLOCKQUOTE)$/.test(found.tagName) ? found : null;
}

function dismissEphemeral(channel, m) {
  S.dismissed.add(key(channel, m.ts));
  if (S.view.kind === "channel" && S.view.id === channel) renderMessages();
  if (S.thread && S.thread.channel === channel) renderThread();
}

function answerMeta(m, bot) {
  if (!bot || m.ephemeral) return null;
  // Only an answer's metadata says which prompt and model wrote it (a greeting's says other things).
  const payload = (m.metadata && m.metadata.event_type === "flywheel_answer" && m.metadata.event_payload) || null;
  // Every answer says when it came from the offline echo model (also while it streams,
  // before its metadata arrives); the bot's notes and apologies don't.
  const echo = payload ? payload.model === "echo" || (S.model.offline && !payload.model) : S.model.offline && m.streaming;
  if (!payload && !echo) return null;
  const box = h("div", { class: "answer-meta" });
  if (payload && (payload.prompt || payload.version || payload.model)) {
    const meta = h("span", { class: "meta-line", "data-testid": "answer-meta" });
    const bits = [];
    if (payload.prompt) bits.push(h("span", { class: "meta-prompt", title: "Prompt" }, payload.prompt));
    if (payload.version) {
      const short = String(payload.version).slice(0, 12);
      const current = S.prompts.find((p) => p.name === payload.prompt);
      const stale = current && current.version && current.version !== payload.version;
      bits.push(
        h(
          "code",
          { class: "meta-version", title: stale ? `Prompt version ${payload.version} (the prompt file has changed since)` : `Prompt version ${payload.version}` },
          short,
        ),
      );
      if (stale) bits.push(h("span", { class: "meta-older", title: "The prompt file has changed since this answer" }, "older version"));
    }
    if (payload.model) bits.push(h("span", { class: "meta-model", title: "Model" }, payload.model));
    bits.forEach((b, i) => {
      if (i) meta.append(h("span", { class: "meta-sep", "aria-hidden": "true" }, "·"));
      meta.append(b);
    });
    meta.prepend(h("span", { class: "sr-only" }, "Answer details: "));
    box.append(meta);
  }
  if (echo) {
    box.append(
      h(
        "span",
        {
          class: "echo-badge",
          "data-testid": "echo-badge",
          tabindex: "0",
          title: "This answer comes from the built-in offline echo model, not a real model. To use a real model, set OPENAI_API_KEY (or OPENAI_BASE_URL for an OpenAI-compatible server such as Ollama or vLLM) and restart `flywheel dev`.",
          "aria-label": "echo model (offline). To use a real model, set OPENAI_API_KEY or OPENAI_BASE_URL and restart flywheel dev.",
        },
        "echo model (offline)",
      ),
    );
  }
  return box;
}

function reactionChips(channel, m) {
  const rs = (m.reactions || []).filter((r) => (r.count ?? (r.users || []).length) > 0);
  if (!rs.length) return null;
  const box = h("div", { class: "reactions", role: "group", "aria-label": "Reactions" });
  for (const r of rs) {
    const mine = (r.users || []).includes(S.me);
    const count = r.count ?? (r.users || []).length;
    const emoji = emojiFor(r.name);
    const who = (r.users || []).map((u) => (u === S.me ? "You" : nameOf(u)));
    box.append(
      h(
        "button",
        {
          type: "button",
          class: `reaction${mine ? " mine" : ""}`,
          "data-testid": `reaction-${r.name}`,
          "data-fk": `reaction-${r.name}`,
          "aria-pressed": mine ? "true" : "false",
          "aria-label": `${count} ${count === 1 ? "reaction" : "reactions"} with :${r.name}:${mine ? ", including yours" : ""}. ${mine ? "Remove" : "Add"} yours`,
          title: `${who.join(", ") || count} reacted with :${r.name}:`,
          onclick: () => react(channel, m, r.name, !mine),
        },
        h("span", { class: emoji ? "emoji" : "emoji-name", "aria-hidden": "true" }, emoji || `:${r.name}:`),
        h("span", { class: "count", "aria-hidden": "true" }, String(count)),
      ),
    );
  }
  box.append(
    h("button", {
      type: "button",
      class: "reaction add-reaction",
      "data-fk": "add-reaction",
      "aria-label": "Add reaction",
      title: "Add reaction",
      onclick: (e) => openPicker(e.currentTarget, channel, m),
    }, h("span", { "aria-hidden": "true" }, "☺︎+")),
  );
  return box;
}

function hasMine(m, name) {
  const r = (m.reactions || []).find((x) => x.name === name);
  return !!(r && (r.users || []).includes(S.me));
}

async function react(channel, m, name, add) {
  // Optimistic: show it at once; the server's frame follows with the truth.
  const current = channelMsgs(channel).get(m.ts) || m;
  const reactions = (current.reactions || []).map((r) => ({ ...r, users: [...(r.users || [])] }));
  let r = reactions.find((x) => x.name === name);
  if (add && !(r && r.users.includes(S.me))) {
    if (!r) reactions.push((r = { name, users: [], count: 0 }));
    r.users.push(S.me);
    r.count = (r.count || 0) + 1;
  } else if (!add && r && r.users.includes(S.me)) {
    r.users = r.users.filter((u) => u !== S.me);
    r.count = Math.max(0, (r.count || 1) - 1);
  }
  upsertMessage(channel, { ...current, reactions: reactions.filter((x) => x.count > 0) });
  try {
    await api("/reactions", { channel, ts: m.ts, name, add });
  } catch {
    upsertMessage(channel, current);
  }
}

function replyBar(channel, m, info) {
  const people = [...new Set(info.replies.map((r) => r.user || S.bot))].slice(0, 4);
  const last = info.replies[info.replies.length - 1];
  const anyStreaming = info.replies.some((r) => r.streaming);
  return h(
    "div",
    { class: "reply-bar" },
    people.map((u) => h("span", { class: `avatar avatar-xs ${u === S.bot ? "avatar-bot" : "avatar-you"}`, "aria-hidden": "true" }, initial(nameOf(u)))),
    h(
      "button",
      {
        type: "button",
        class: "reply-count",
        "data-testid": "reply-count",
        "data-fk": "reply-count",
        onclick: () => openThread(channel, m.ts),
      },
      `${info.count} ${info.count === 1 ? "reply" : "replies"}`,
    ),
    anyStreaming
      ? h("span", { class: "reply-last" }, `${nameOf(S.bot)} is answering…`)
      : last
        ? h("span", { class: "reply-last" }, `Last reply ${dayLabel(tsDate(last.ts)).toLowerCase()} at ${timeText(last.ts)}`)
        : null,
    h("span", { class: "reply-view", "aria-hidden": "true" }, "View thread ›"),
  );
}

function toolbar(channel, m, inThread) {
  const bar = h("div", { class: "msg-toolbar", role: "toolbar", "aria-label": "Message actions" });
  for (const name of QUICK_REACTIONS) {
    const mine = hasMine(m, name);
    bar.append(
      h(
        "button",
        {
          type: "button",
          class: `tool${mine ? " on" : ""}`,
          "data-testid": `react-${name}`,
          "data-fk": `react-${name}`,
          "aria-pressed": mine ? "true" : "false",
          "aria-label": `${mine ? "Remove" : "React"} :${name}:${REACTION_LABELS[name] ? ` (${REACTION_LABELS[name]})` : ""}`,
          title: REACTION_LABELS[name] || `:${name}:`,
          onclick: () => react(channel, m, name, !hasMine(channelMsgs(channel).get(m.ts) || m, name)),
        },
        emojiFor(name),
      ),
    );
  }
  bar.append(
    h("button", {
      type: "button",
      class: "tool",
      "data-testid": "react-more",
      "data-fk": "react-more",
      "aria-label": "More reactions",
      "aria-haspopup": "true",
      title: "More reactions",
      onclick: (e) => openPicker(e.currentTarget, channel, m),
    }, h("span", { "aria-hidden": "true" }, "☺︎")),
  );
  if (S.shortcuts.length && isBot(m)) {
    bar.append(
      h("button", {
        type: "button",
        class: "tool",
        "data-testid": "more-actions",
        "data-fk": "more-actions",
        "aria-label": "More actions",
        "aria-haspopup": "menu",
        title: "More actions (message shortcuts)",
        onclick: (e) => openShortcuts(e.currentTarget, channel, m),
      }, h("span", { "aria-hidden": "true" }, "⋯")),
    );
  }
  if (!inThread && !isReply(m)) {
    bar.append(
      h(
        "button",
        {
          type: "button",
          class: "tool",
          "data-testid": "reply-in-thread",
          "data-fk": "reply-in-thread",
          "aria-label": "Reply in thread",
          title: "Reply in thread",
          onclick: () => openThread(channel, m.ts),
        },
        h("span", { "aria-hidden": "true" }, "💬"),
      ),
    );
  }
  return bar;
}

// -- the reaction picker ----------------------------------------------------------------------

let pickerFor = null;

function openPicker(anchor, channel, msg) {
  const m = channelMsgs(channel).get(msg.ts) || msg;
  const picker = $("#picker");
  if (!picker.hidden && pickerFor && pickerFor.ts === m.ts && !pickerFor.menu) return closePicker();
  pickerFor = { channel, ts: m.ts, anchor };
  picker.replaceChildren(
    h("div", { class: "picker-title", id: "picker-title" }, "Add a reaction"),
    h(
      "div",
      { class: "picker-grid" },
      [...QUICK_REACTIONS, ...MORE_REACTIONS].map((name) =>
        h(
          "button",
          {
            type: "button",
            class: `picker-item${hasMine(m, name) ? " on" : ""}`,
            "data-testid": `pick-${name}`,
            "aria-label": `:${name}:${hasMine(m, name) ? " (remove yours)" : ""}`,
            title: `:${name}:`,
            onclick: () => {
              const cur = channelMsgs(channel).get(m.ts) || m;
              closePicker();
              react(channel, cur, name, !hasMine(cur, name));
            },
          },
          emojiFor(name),
        ),
      ),
    ),
  );
  placePopover(picker, anchor, 0);
  picker.querySelector("button").focus();
}

function openShortcuts(anchor, channel, m) {
  const picker = $("#picker");
  if (!picker.hidden && pickerFor && pickerFor.ts === m.ts && pickerFor.menu) return closePicker();
  pickerFor = { channel, ts: m.ts, anchor, menu: true };
  const items = S.shortcuts.map((sc) =>
    h(
      "button",
      {
        type: "button",
        class: "menu-item",
        role: "menuitem",
        "data-testid": `shortcut-${sc.callback_id}`,
        onclick: async () => {
          closePicker();
          try {
            await api("/shortcuts", { channel, ts: m.ts, callback_id: sc.callback_id });
          } catch {
            /* banner shown */
          }
        },
      },
      h("span", { class: "menu-name" }, sc.name),
      sc.description ? h("span", { class: "menu-desc" }, sc.description) : null,
    ),
  );
  picker.replaceChildren(
    h("div", { class: "picker-title", id: "picker-title" }, "Message shortcuts"),
    h("div", { class: "menu", role: "menu", "aria-labelledby": "picker-title" }, items),
  );
  placePopover(picker, anchor, 300);
  picker.querySelector("button").focus();
}

function placePopover(picker, anchor, width) {
  picker.style.width = width ? `${width}px` : "";
  picker.hidden = false;
  const r = anchor.getBoundingClientRect();
  const pw = picker.offsetWidth;
  const ph = picker.offsetHeight;
  const left = Math.min(window.innerWidth - pw - 8, Math.max(8, r.right - pw));
  let top = r.top - ph - 6;
  if (top < 8) top = r.bottom + 6;
  picker.style.left = `${left}px`;
  picker.style.top = `${top}px`;
}

function closePicker(restore = true) {
  const picker = $("#picker");
  if (picker.hidden) return;
  picker.hidden = true;
  const anchor = pickerFor && pickerFor.anchor;
  pickerFor = null;
  if (restore && anchor && document.body.contains(anchor)) anchor.focus();
}

// -- Block Kit --------------------------------------------------------------------------------

function textObject(t, { inline = false } = {}) {
  if (!t) return document.createTextNode("");
  if (typeof t === "string") return renderMrkdwn(t, textCtx);
  if (t.type === "plain_text") return renderPlain(t.text, { emoji: t.emoji !== false });
  const frag = renderMrkdwn(t.text || "", textCtx);
  if (inline) frag.firstChild?.classList.add("inline");
  return frag;
}

function renderBlocks(blocks, ctx) {
  const box = h("div", { class: ctx.interactiveOnly ? "blocks blocks-controls" : "blocks" });
  for (const b of blocks) box.append(renderBlock(b, ctx));
  return box;
}

function renderBlock(b, ctx) {
  switch (b.type) {
    case "markdown":
      return h("div", { class: "block block-markdown" }, renderText(b.text || "", "markdown", textCtx));
    case "section": {
      const sec = h("div", { class: "block block-section" });
      const main = h("div", { class: "section-main" });
      if (b.text) main.append(h("div", { class: "section-text" }, textObject(b.text)));
      if (Array.isArray(b.fields) && b.fields.length) {
        main.append(h("div", { class: "section-fields" }, b.fields.map((f) => h("div", { class: "section-field" }, textObject(f)))));
      }
      sec.append(main);
      if (b.accessory) {
        const acc = element(b.accessory, b, ctx);
        if (acc) sec.append(h("div", { class: "section-accessory" }, acc));
      }
      return sec;
    }
    case "context":
      return h(
        "div",
        { class: "block block-context" },
        (b.elements || []).map((e) =>
          e.type === "image"
            ? h("span", { class: "ctx-image", title: e.alt_text || "", "aria-label": e.alt_text || "image", role: "img" }, "▣")
            : h("span", { class: "ctx-text" }, textObject(e, { inline: true })),
        ),
      );
    case "divider":
      return h("hr", { class: "block block-divider" });
    case "header":
      return h("div", { class: "block block-header", role: "heading", "aria-level": "3" }, textObject(b.text));
    case "image":
      return h("div", { class: "block block-image", role: "img", "aria-label": b.alt_text || "image" }, `🖼 ${b.alt_text || b.title?.text || "image"}`);
    case "rich_text":
      return h("div", { class: "block block-rich" }, (b.elements || []).map(richElement));
    case "actions":
      return h("div", { class: "block block-actions", role: "group", "aria-label": "Actions" }, (b.elements || []).map((e) => element(e, b, ctx)));
    case "context_actions":
      return h("div", { class: "block block-context-actions", role: "group", "aria-label": "Feedback" }, (b.elements || []).map((e) => element(e, b, ctx)));
    default:
      return h("div", { class: "block block-unknown" }, `[${b.type} block]`);
  }
}

const ICONS = { trash: "🗑", copy: "📋", edit: "✏️", refresh: "🔄", share: "↗", thumbs_up: "👍", thumbs_down: "👎" };

function element(e, block, ctx) {
  if (!e) return null;
  if (e.type === "button") {
    const label = e.text?.text ?? "";
    const btn = h(
      "button",
      {
        type: "button",
        class: `bk-button${e.style === "primary" ? " primary" : e.style === "danger" ? " danger" : ""}`,
        "data-testid": `action-${e.action_id}`,
        "data-fk": `action-${e.action_id}`,
        "aria-label": e.accessibility_label || null,
      },
      renderPlain(label),
    );
    btn.addEventListener("click", () => click(btn, ctx, { action_id: e.action_id, block_id: block.block_id, value: e.value ?? "", type: "button" }, e.url));
    return btn;
  }
  if (e.type === "feedback_buttons") {
    const k = key(ctx.channel, ctx.ts);
    const chosen = () => (S.feedback.has(k) ? S.feedback.get(k) : channelMsgs(ctx.channel).get(ctx.ts)?.your_feedback || null);
    const group = h("span", { class: "feedback", role: "group", "aria-label": "Rate this answer" });
    const paint = () => {
      for (const b of group.querySelectorAll("button")) {
        const on = b.dataset.value === chosen();
        b.classList.toggle("pressed", on);
        b.setAttribute("aria-pressed", on ? "true" : "false");
      }
    };
    for (const [side, spec] of [["up", e.positive_button], ["down", e.negative_button]]) {
      if (!spec) continue;
      const pressed = chosen() === spec.value;
      const btn = h(
        "button",
        {
          type: "button",
          class: `bk-button feedback-button${pressed ? " pressed" : ""}`,
          "data-testid": `action-${e.action_id}-${side}`,
          "data-fk": `action-${e.action_id}-${side}`,
          "aria-pressed": pressed ? "true" : "false",
          "data-value": spec.value,
          "aria-label": spec.accessibility_label || (side === "up" ? "Good answer" : "Bad answer"),
          title: spec.accessibility_label || null,
        },
        renderPlain(spec.text?.text ?? (side === "up" ? "👍" : "👎")),
      );
      btn.addEventListener("click", async () => {
        S.feedback.set(k, chosen() === spec.value ? null : spec.value);
        paint();
        const ok = await click(btn, ctx, { action_id: e.action_id, block_id: block.block_id, value: spec.value, type: "feedback_buttons" });
        if (!ok) {
          S.feedback.delete(k);
          paint();
        }
      });
      group.append(btn);
    }
    return group;
  }
  if (e.type === "icon_button") {
    const label = e.text?.text || e.icon || "button";
    const btn = h(
      "button",
      {
        type: "button",
        class: "bk-button icon-button",
        "data-testid": `action-${e.action_id}`,
        "data-fk": `action-${e.action_id}`,
        "aria-label": e.accessibility_label || label,
        title: label,
      },
      ICONS[e.icon] || "•",
    );
    btn.addEventListener("click", () => click(btn, ctx, { action_id: e.action_id, block_id: block.block_id, value: e.value ?? "", type: "icon_button" }));
    return btn;
  }
  if (e.type === "image") return h("span", { class: "ctx-image", role: "img", "aria-label": e.alt_text || "image" }, "▣");
  return h("span", { class: "bk-unsupported" }, `[${e.type}]`);
}

async function click(btn, ctx, payload, url) {
  if (url && /^https?:\/\//i.test(url)) window.open(url, "_blank", "noopener");
  btn.classList.add("busy");
  try {
    await api("/actions", { channel: ctx.channel, ts: ctx.ts, ...payload });
    return true;
  } catch {
    return false;
  } finally {
    btn.classList.remove("busy");
  }
}

function richElement(e) {
  const styled = (node, style) => {
    let n = node;
    if (!style) return n;
    if (style.code) n = h("code", { class: "md-code" }, n);
    if (style.bold) n = h("strong", null, n);
    if (style.italic) n = h("em", null, n);
    if (style.strike) n = h("del", null, n);
    return n;
  };
  const leaf = (x) => {
    switch (x.type) {
      case "text":
        return styled(document.createTextNode(x.text || ""), x.style);
      case "link":
        if (/^(https?:|mailto:)/i.test(x.url || "")) return styled(h("a", { href: x.url, target: "_blank", rel: "noopener noreferrer" }, x.text || x.url), x.style);
        return document.createTextNode(x.text || x.url || "");
      case "emoji":
        return document.createTextNode(emojiFor(x.name) || `:${x.name}:`);
      case "user":
        return h("span", { class: `mention${x.user_id === S.me ? " mention-me" : ""}` }, `@${nameOf(x.user_id)}`);
      case "channel":
        return h("span", { class: "mention mention-channel" }, `#${channelById(x.channel_id)?.name || x.channel_id}`);
      case "broadcast":
        return h("span", { class: "inert" }, `@${x.range}`);
      default:
        return document.createTextNode(x.text || "");
    }
  };
  switch (e.type) {
    case "rich_text_section":
      return h("div", { class: "md-p" }, (e.elements || []).map(leaf));
    case "rich_text_preformatted":
      return h("pre", { class: "md-pre" }, h("code", null, (e.elements || []).map(leaf)));
    case "rich_text_quote":
      return h("blockquote", { class: "md-quote" }, (e.elements || []).map(leaf));
    case "rich_text_list":
      return h(e.style === "ordered" ? "ol" : "ul", { class: "md-list" }, (e.elements || []).map((s) => h("li", null, (s.elements || []).map(leaf))));
    default:
      return document.createTextNode("");
  }
}

// -- threads ----------------------------------------------------------------------------------

function openThread(channel, ts, { focus = true } = {}) {
  closePane(false);
  S.thread = { channel, ts };
  const pane = $('[data-testid="thread"]');
  pane.hidden = false;
  document.body.classList.add("thread-open");
  renderThread();
  const list = threadList();
  scrollToBottom(list);
  if (focus) $('[data-testid="thread-composer"]').focus();
}

function closeThread(restore = true) {
  if (!S.thread) return;
  const { ts } = S.thread;
  S.thread = null;
  $('[data-testid="thread"]').hidden = true;
  document.body.classList.remove("thread-open");
  if (restore) {
    const btn = mainList()?.querySelector(`[data-ts="${CSS.escape(ts)}"] [data-testid="reply-count"], [data-ts="${CSS.escape(ts)}"] [data-fk="reply-in-thread"]`);
    if (btn) btn.focus();
  }
}

function renderThread() {
  if (!S.thread) return;
  const { channel, ts } = S.thread;
  const list = threadList();
  const c = channelById(channel);
  $("#thread-channel").textContent = c ? (c.is_im ? nameOf(S.bot) : `#${c.name}`) : channel;
  const parent = channelMsgs(channel).get(ts);
  const pinned = nearBottom(list) || list.dataset.thread !== ts;
  list.dataset.thread = ts;
  const fk = focusedKey(list);
  list.replaceChildren();
  if (!parent) {
    list.append(h("p", { class: "thread-empty" }, "This message is gone."));
    return;
  }
  list.append(messageNode(channel, parent, { inThread: true, isParent: true }));
  const rs = replies(channel, ts);
  const count = rs.filter((r) => !r.ephemeral).length;
  list.append(h("div", { class: "thread-divider", role: "separator" }, h("span", null, count ? `${count} ${count === 1 ? "reply" : "replies"}` : "No replies yet")));
  let prev = null;
  for (const r of rs) {
    list.append(messageNode(channel, r, { inThread: true, grouped: prev && groupedWith(prev, r) }));
    prev = r;
  }
  restoreFocus(list, fk);
  if (pinned) scrollToBottom(list);
  const ta = $('[data-testid="thread-composer"]');
  ta.placeholder = "Reply…";
}

// -- the assistant pane (Slack's AI app split view) -------------------------------------------
// Opening it starts an assistant thread in the DM with the bot (the stand-in delivers
// assistant_thread_started with the channel you are looking at); switching channels while it
// is open delivers assistant_thread_context_changed. What you write there is a reply in that thread.

const paneList = () => $('[data-testid="assistant-messages"]');
const paneContext = () => (S.view.kind === "channel" ? S.view.id : null);

async function openPane({ fresh = false } = {}) {
  closeThread(false);
  S.paneOpen = true;
  $('[data-testid="assistant"]').hidden = false;
  $("#open-assistant").setAttribute("aria-expanded", "true");
  document.body.classList.add("pane-open");
  if (fresh || !S.pane) {
    S.pane = null;
    renderPane();
    try {
      const res = await api("/assistant", { channel: paneContext() });
      S.pane = { channel: res.channel, ts: res.thread_ts };
    } catch {
      /* banner shown */
    }
  } else {
    paneContextChanged();
  }
  renderPane();
  $('[data-testid="assistant-composer"]').focus();
}

function closePane(restore = true) {
  if (!S.paneOpen) return;
  S.paneOpen = false;
  $('[data-testid="assistant"]').hidden = true;
  $("#open-assistant").setAttribute("aria-expanded", "false");
  document.body.classList.remove("pane-open");
  if (restore) $("#open-assistant").focus();
}

function paneContextChanged() {
  if (!S.paneOpen || !S.pane) return;
  const info = S.panes.get(S.pane.ts);
  const channel = paneContext();
  if (info && (info.context_channel || null) === channel) return;
  api("/assistant/context", { thread_ts: S.pane.ts, channel }).catch(() => {});
}

/** A message in the pane's thread was added or changed. */
function paneMessage(channel, m, existed) {
  const list = paneList();
  const old = existed && list.querySelector(`:scope > [data-ts="${CSS.escape(m.ts)}"]`);
  if (!old) return renderPane();
  const pinned = nearBottom(list);
  const k = focusedKey(list);
  morph(old, messageNode(channel, m, { inThread: true, grouped: old.classList.contains("grouped") }));
  if (k && !list.contains(document.activeElement)) restoreFocus(list, k);
  if (pinned) scrollToBottom(list);
}

function renderPane() {
  if (!S.paneOpen) return;
  const list = paneList();
  const pinned = nearBottom(list) || list.dataset.thread !== (S.pane ? S.pane.ts : "");
  const fk = focusedKey(list);
  list.replaceChildren();
  if (S.pane) {
    list.dataset.thread = S.pane.ts;
    let prev = null;
    for (const r of replies(S.pane.channel, S.pane.ts)) {
      list.append(messageNode(S.pane.channel, r, { inThread: true, grouped: prev && groupedWith(prev, r) }));
      prev = r;
    }
  }
  if (!list.children.length) list.append(h("p", { class: "assistant-empty" }, S.pane ? "Starting a new chat…" : "Opening the assistant…"));
  restoreFocus(list, fk);
  if (pinned) scrollToBottom(list);
  renderPaneChrome();
}

/** The pane's title, status and suggested prompts: what the bot set on the thread. */
function renderPaneChrome() {
  const info = (S.pane && S.panes.get(S.pane.ts)) || {};
  $("#assistant-name").textContent = nameOf(S.bot);
  $('[data-testid="assistant-title"]').textContent = info.title || "New chat";
  const status = $('[data-testid="assistant-status"]');
  status.replaceChildren();
  status.hidden = !info.status;
  if (info.status) status.append(h("span", { class: "typing", "aria-hidden": "true" }, h("span"), h("span"), h("span")), `${nameOf(S.bot)} ${info.status}`);
  const box = $('[data-testid="assistant-suggestions"]');
  const prompts = info.prompts || [];
  box.replaceChildren(
    ...prompts.map((p) =>
      h("button", { type: "button", class: "chip", "data-testid": "assistant-suggestion", title: p.message, onclick: () => S.pane && send(S.pane.channel, p.message, S.pane.ts).catch(() => {}) }, p.title),
    ),
  );
  box.hidden = !prompts.length;
  const where = info.context_channel && channelById(info.context_channel);
  $('[data-testid="assistant-context"]').textContent = where && !where.is_im ? `Context: #${where.name}` : "The assistant's thread in your DM with the bot";
}

// -- the composers and autocomplete -----------------------------------------------------------

function setupComposer(form, ta, where) {
  const ac = { open: false, items: [], index: 0, kind: null, start: 0 };
  const listId = `${where}-autocomplete`;
  const listbox = h("ul", { class: "autocomplete", id: listId, role: "listbox", "data-testid": "autocomplete", hidden: true, "aria-label": "Suggestions" });
  form.querySelector(".composer-box").append(listbox);
  ta.setAttribute("aria-autocomplete", "list");
  ta.setAttribute("aria-controls", listId);

  const target = () =>
    where === "pane"
      ? S.pane && { channel: S.pane.channel, thread_ts: S.pane.ts }
      : where === "thread"
        ? S.thread && { channel: S.thread.channel, thread_ts: S.thread.ts }
        : S.view.kind === "channel" && { channel: S.view.id };

  function autosize() {
    ta.style.height = "auto";
    ta.style.height = `${Math.min(ta.scrollHeight, 240)}px`;
    form.classList.toggle("has-text", !!ta.value.trim());
  }

  function suggestions() {
    const pos = ta.selectionStart;
    const before = ta.value.slice(0, pos);
    // "/com" at the very start: the prompts' slash commands.
    let m = /^\/([\w-]*)$/.exec(before);
    if (m && ta.selectionStart === ta.selectionEnd) {
      const q = m[1].toLowerCase();
      const items = S.prompts
        .filter((p) => p.command)
        .filter((p) => p.command.replace(/^\//, "").toLowerCase().startsWith(q) || (q && p.name.toLowerCase().includes(q)))
        .sort((a, b) => a.command.localeCompare(b.command))
        .map((p) => ({ kind: "command", insert: `${p.command} `, label: p.command, hint: p.usage_hint || "", desc: p.description || "", version: p.version }));
      return { kind: "command", start: 0, items };
    }
    // "@fly" at a word start: the bot.
    m = /(^|[\s(])@([\w.-]*)$/.exec(before);
    if (m) {
      const q = m[2].toLowerCase();
      const name = nameOf(S.bot);
      const items = name.toLowerCase().startsWith(q) ? [{ kind: "mention", insert: `@${name} `, label: `@${name}`, hint: "", desc: "the Flywheel bot · answers in a thread" }] : [];
      return { kind: "mention", start: pos - m[2].length - 1, items };
    }
    // "@flywheel sum": the prompts as mention skills.
    m = /^(?:.*\s)?@([\w.-]+)\s+([\w-]*)$/s.exec(before);
    if (m && m[1].toLowerCase() === nameOf(S.bot).toLowerCase() && m[2].length) {
      const q = m[2].toLowerCase();
      const items = S.prompts
        .filter((p) => p.name.toLowerCase().startsWith(q) && p.name.toLowerCase() !== q)
        .map((p) => ({ kind: "skill", insert: `${p.name} `, label: p.name, hint: p.usage_hint || "", desc: p.description || "" }));
      return { kind: "skill", start: pos - m[2].length, items };
    }
    return { kind: null, items: [] };
  }

  function update() {
    const s = suggestions();
    if (!s.items.length) return close();
    const sameKind = ac.open && ac.kind === s.kind;
    Object.assign(ac, { open: true, items: s.items, kind: s.kind, start: s.start, index: sameKind ? Math.min(ac.index, s.items.length - 1) : 0 });
    draw();
  }

  function draw() {
    listbox.replaceChildren(
      h("li", { class: "ac-title", role: "presentation" }, ac.kind === "command" ? "Slash commands from prompts/" : ac.kind === "skill" ? "Prompts" : "People and apps"),
      ...ac.items.map((it, i) =>
        h(
          "li",
          {
            id: `${listId}-${i}`,
            role: "option",
            class: `ac-item${i === ac.index ? " active" : ""}`,
            "aria-selected": i === ac.index ? "true" : "false",
            "data-testid": `autocomplete-${it.label.replace(/^[@/]/, "")}`,
            onmousedown: (e) => {
              e.preventDefault();
              ac.index = i;
              accept();
            },
          },
          it.kind === "mention" ? h("span", { class: "avatar avatar-bot avatar-xs", "aria-hidden": "true" }, initial(nameOf(S.bot))) : null,
          h("span", { class: "ac-label" }, it.label),
          it.hint ? h("span", { class: "ac-hint" }, it.hint) : null,
          it.desc ? h("span", { class: "ac-desc" }, it.desc) : null,
        ),
      ),
    );
    listbox.hidden = false;
    ta.setAttribute("aria-activedescendant", `${listId}-${ac.index}`);
    listbox.querySelector(".active")?.scrollIntoView({ block: "nearest" });
  }

  function close() {
    ac.open = false;
    listbox.hidden = true;
    ta.removeAttribute("aria-activedescendant");
  }

  function accept() {
    const it = ac.items[ac.index];
    if (!it) return close();
    const pos = ta.selectionStart;
    const after = ta.value.slice(pos).replace(/^\S*/, "");
    const before = ta.value.slice(0, ac.start) + it.insert;
    ta.value = before + after.replace(/^ /, "");
    ta.setSelectionRange(before.length, before.length);
    close();
    autosize();
    update();
  }

  async function submit() {
    const text = ta.value.trim();
    const t = target();
    if (!text || !t) return;
    const cmd = /^\/([\w-]+)/.exec(text);
    const known = (c) => S.prompts.some((p) => p.command && p.command.toLowerCase() === c) || S.brokenCommands.includes(c);
    if (cmd && !known(`/${cmd[1].toLowerCase()}`)) {
      localNotice(t, `\`/${cmd[1]}\` is not a command here. The commands come from the prompt files in prompts/: ${S.prompts.filter((p) => p.command).map((p) => `\`${p.command}\``).join(", ") || "none yet"}.`);
      return;
    }
    ta.value = "";
    autosize();
    close();
    try {
      await send(t.channel, text, t.thread_ts);
    } catch {
      if (!ta.value) {
        ta.value = text;
        autosize();
      }
    }
  }

  ta.addEventListener("input", () => {
    autosize();
    update();
  });
  ta.addEventListener("click", update);
  ta.addEventListener("blur", () => setTimeout(close, 100));
  ta.addEventListener("keydown", (e) => {
    if (e.isComposing || e.keyCode === 229) return;
    if (ac.open) {
      if (e.key === "ArrowDown") {
        e.preventDefault();
        ac.index = (ac.index + 1) % ac.items.length;
        return draw();
      }
      if (e.key === "ArrowUp") {
        e.preventDefault();
        ac.index = (ac.index - 1 + ac.items.length) % ac.items.length;
        return draw();
      }
      if (e.key === "Tab" || (e.key === "Enter" && !e.shiftKey)) {
        e.preventDefault();
        // Enter on a word already typed in full sends the message; Tab still completes.
        const typed = ta.value.slice(ac.start, ta.selectionStart).toLowerCase();
        const it = ac.items[ac.index];
        if (e.key === "Enter" && it && typed === it.insert.trim().toLowerCase()) {
          close();
          return submit();
        }
        return accept();
      }
      if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        return close();
      }
    }
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      submit();
    } else if (e.key === "Escape" && where === "thread" && !ta.value) {
      e.preventDefault();
      closeThread();
    } else if (e.key === "Escape" && where === "pane" && !ta.value) {
      e.preventDefault();
      closePane();
    }
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  return { refresh: () => ac.open && update(), autosize };
}

/** A link to a message here (what chat.getPermalink gives the bot): {channel, ts, thread} or null. */
function permalinkTarget(href) {
  let url;
  try {
    url = new URL(href, location.href);
  } catch {
    return null;
  }
  const m = url.origin === location.origin && /^\/archives\/([^/]+)\/p(\d{7,})$/.exec(url.pathname);
  if (!m) return null;
  return { channel: m[1], ts: `${m[2].slice(0, -6)}.${m[2].slice(-6)}`, thread: url.searchParams.get("thread_ts") };
}

/** Open a linked message's channel (and thread) and point it out, as Slack does. */
function showLinked({ channel, ts, thread }) {
  if (!channelById(channel)) return;
  if (!(S.view.kind === "channel" && S.view.id === channel)) openChannel(channel);
  if (thread) openThread(channel, thread, { focus: false });
  requestAnimationFrame(() => {
    const list = thread ? threadList() : mainList();
    const node = list && list.querySelector(`.message[data-ts="${CSS.escape(ts)}"]`);
    if (!node) return;
    node.scrollIntoView({ block: "center" });
    node.classList.add("linked");
    setTimeout(() => node.classList.remove("linked"), 2500);
  });
}

let localSeq = 0;
function localNotice(t, text) {
  // A Slack-like "Only visible to you" note that never leaves the page.
  localSeq += 1;
  const now = Date.now() / 1000;
  const ts = `${Math.floor(now)}.${String(999000 + (localSeq % 1000)).padStart(6, "0")}`;
  upsertMessage(t.channel, { ts, user: S.bot, bot_id: "BBOT", text, format: "mrkdwn", ephemeral: true, thread_ts: t.thread_ts, local: true });
}

const composers = [];

function promptsChanged(prompts) {
  const before = new Map(S.prompts.map((p) => [p.name, p.version]));
  S.prompts = prompts;
  const changed = prompts.filter((p) => before.has(p.name) && before.get(p.name) !== p.version);
  const added = prompts.filter((p) => !before.has(p.name));
  const removed = [...before.keys()].filter((n) => !prompts.some((p) => p.name === n));
  const parts = [
    ...changed.map((p) => `${p.name} → ${String(p.version || "").slice(0, 12)}`),
    ...added.map((p) => `new: ${p.command || p.name}`),
    ...removed.map((n) => `removed: ${n}`),
  ];
  if (parts.length) toast(`Prompts reloaded · ${parts.join(" · ")}`);
  for (const c of composers) c.refresh();
  if (S.view.kind === "channel") renderMessages();
  if (S.thread) renderThread();
}

// -- modals -----------------------------------------------------------------------------------

let modalReturnFocus = null;

function openModal(view) {
  const dlg = $('[data-testid="modal"]');
  const wasOpen = dlg.open;
  if (!wasOpen) modalReturnFocus = document.activeElement;
  S.modal = view;
  const title = view.title?.text || "Dialog";
  $("#modal-title").textContent = decodeEntities(title);
  const body = $("#modal-body");
  const values = wasOpen ? currentValues() : {};
  body.replaceChildren();
  for (const b of view.blocks || []) {
    if (b.type === "input") body.append(inputBlock(b, values));
    else body.append(renderBlock(b, { channel: null, ts: null }));
  }
  const submit = $('[data-testid="modal-submit"]');
  const cancel = $("#modal-cancel");
  submit.textContent = decodeEntities(view.submit?.text || "Submit");
  submit.hidden = !view.submit && !(view.blocks || []).some((b) => b.type === "input");
  cancel.textContent = decodeEntities(view.close?.text || (view.submit ? "Cancel" : "Close"));
  $("#modal-error").hidden = true;
  if (!wasOpen) {
    dlg.showModal();
    const first = body.querySelector("textarea, input, button") || submit;
    first.focus();
    if (first.tagName === "TEXTAREA") first.setSelectionRange(0, 0);
    first.scrollTop = 0;
  }
}

function inputBlock(b, values) {
  const el = b.element || {};
  const id = `in-${b.block_id}`;
  const errId = `err-${b.block_id}`;
  const hintId = `hint-${b.block_id}`;
  const label = b.label?.text || b.block_id;
  const wrap = h("div", { class: "modal-input", "data-block": b.block_id });
  wrap.append(
    h("label", { for: id, class: "modal-label" }, decodeEntities(label), b.optional ? h("span", { class: "optional" }, " (optional)") : null),
  );
  let field;
  if (el.type === "plain_text_input" || !el.type) {
    const prior = values[b.block_id]?.[el.action_id];
    const multiline = el.multiline === true;
    field = h(multiline ? "textarea" : "input", {
      id,
      class: "modal-field",
      "data-testid": `block-${b.block_id}`,
      "data-action": el.action_id || "value",
      maxlength: el.max_length || null,
      minlength: el.min_length || null,
      placeholder: el.placeholder?.text || null,
      rows: multiline ? 8 : null,
      type: multiline ? null : "text",
      "aria-describedby": `${hintId} ${errId}`,
      "aria-required": b.optional ? null : "true",
    });
    field.value = prior ?? el.initial_value ?? "";
    const counter = h("span", { class: "counter", "aria-hidden": "true" });
    const count = () => {
      if (el.max_length) {
        counter.textContent = `${field.value.length.toLocaleString()} / ${Number(el.max_length).toLocaleString()}`;
        counter.classList.toggle("near", field.value.length > el.max_length * 0.9);
      }
    };
    field.addEventListener("input", () => {
      count();
      setFieldError(b.block_id, null);
    });
    field.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.metaKey || e.ctrlKey)) {
        e.preventDefault();
        submitModal();
      }
    });
    count();
    wrap.append(field, h("div", { class: "modal-hint", id: hintId }, b.hint ? decodeEntities(b.hint.text || "") : "", counter));
  } else {
    wrap.append(h("span", { class: "bk-unsupported" }, `[${el.type}]`));
  }
  wrap.append(h("div", { class: "modal-field-error", id: errId, role: "alert", hidden: true }));
  return wrap;
}

function setFieldError(blockId, message) {
  const box = document.getElementById(`err-${blockId}`);
  const field = document.getElementById(`in-${blockId}`);
  if (!box) return false;
  box.replaceChildren();
  if (message) box.append(h("span", { "aria-hidden": "true" }, "⚠ "), decodeEntities(message));
  box.hidden = !message;
  if (field) {
    if (message) field.setAttribute("aria-invalid", "true");
    else field.removeAttribute("aria-invalid");
  }
  return true;
}

function currentValues() {
  const values = {};
  for (const f of document.querySelectorAll("#modal-body .modal-field")) {
    const blockId = f.closest(".modal-input").dataset.block;
    values[blockId] = { ...(values[blockId] || {}), [f.dataset.action]: f.value };
  }
  return values;
}

async function submitModal() {
  const view = S.modal;
  if (!view) return;
  const values = currentValues();
  // Required inputs are checked here first, as Slack does.
  let missing = null;
  for (const b of view.blocks || []) {
    if (b.type !== "input" || b.optional) continue;
    const v = values[b.block_id]?.[b.element?.action_id || "value"];
    if (v !== undefined && !v.trim()) {
      setFieldError(b.block_id, "Please fill out this field.");
      missing = missing || b.block_id;
    }
  }
  if (missing) {
    document.getElementById(`in-${missing}`)?.focus();
    return;
  }
  const btn = $('[data-testid="modal-submit"]');
  btn.disabled = true;
  btn.classList.add("busy");
  let res;
  try {
    res = await api("/views/submit", { view_id: view.id, values });
  } catch (err) {
    const box = $("#modal-error");
    box.textContent = `Couldn't submit: ${err.message}`;
    box.hidden = false;
    return;
  } finally {
    btn.disabled = false;
    btn.classList.remove("busy");
  }
  if (S.modal !== view) return; // the server already replaced or closed it
  const action = res && res.response_action;
  if (action === "errors") {
    let first = null;
    const general = [];
    for (const [blockId, msg] of Object.entries(res.errors || {})) {
      if (setFieldError(blockId, msg)) first = first || blockId;
      else general.push(msg);
    }
    if (general.length) {
      const box = $("#modal-error");
      box.textContent = general.join(" ");
      box.hidden = false;
    }
    if (first) document.getElementById(`in-${first}`)?.focus();
    return;
  }
  if ((action === "update" || action === "push") && res.view) {
    openModal({ ...res.view, id: res.view.id || view.id });
    return;
  }
  closeModal(false);
}

async function cancelModal() {
  const view = S.modal;
  closeModal(false);
  if (view && view.id) {
    try {
      await api("/views/close", { view_id: view.id });
    } catch {
      /* banner shown */
    }
  }
}

function closeModal() {
  const dlg = $('[data-testid="modal"]');
  S.modal = null;
  if (dlg.open) dlg.close();
  if (modalReturnFocus && document.body.contains(modalReturnFocus)) modalReturnFocus.focus();
  modalReturnFocus = null;
}

// -- Home -------------------------------------------------------------------------------------

function renderHome() {
  const pane = $('[data-testid="home"]');
  const body = $("#home-body");
  body.replaceChildren();
  if (!S.home) {
    body.append(h("div", { class: "home-loading", role: "status" }, h("span", { class: "typing" }, h("span"), h("span"), h("span")), " Asking the bot for its Home tab…"));
    return;
  }
  body.append(renderBlocks(S.home.blocks || [], { channel: null, ts: null }));
  pane.setAttribute("aria-busy", "false");
}

// -- banners and toasts -----------------------------------------------------------------------

function showBanner(message) {
  const box = $("#banners");
  const last = box.lastElementChild;
  if (last && last.dataset.message === message) {
    const n = Number(last.dataset.count || 1) + 1;
    last.dataset.count = String(n);
    last.querySelector(".banner-count").textContent = ` (×${n})`;
    return;
  }
  const banner = h(
    "div",
    { class: "banner", role: "alert", "data-testid": "banner", dataset: { message } },
    h("span", { class: "banner-icon", "aria-hidden": "true" }, "⚠"),
    h("span", { class: "banner-text" }, message, h("span", { class: "banner-count" })),
    h("button", { type: "button", class: "banner-close", "aria-label": "Dismiss", title: "Dismiss", onclick: () => banner.remove() }, "✕"),
  );
  box.append(banner);
  while (box.children.length > 3) box.firstElementChild.remove();
}

function setConnection(up) {
  const box = $("#connection");
  box.hidden = up;
}

let toastTimer = null;
function toast(message) {
  const box = $("#toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, 6000);
}

// -- start ------------------------------------------------------------------------------------

function route() {
  const m = /^#\/(.+)$/.exec(location.hash);
  if (!m) return;
  if (m[1] === "home") S.view = { kind: "home" };
  else S.view = { kind: "channel", id: decodeURIComponent(m[1]) };
}

function start() {
  route();
  $(".skip-link").addEventListener("click", (e) => {
    e.preventDefault();
    (S.thread ? $('[data-testid="thread-composer"]') : $('[data-testid="composer"]')).focus();
  });
  $("#nav-home").addEventListener("click", openHome);
  $("#home-messages").addEventListener("click", () => {
    const dm = S.channels.find((c) => c.is_im);
    if (dm) openChannel(dm.id);
  });
  $("#thread-close").addEventListener("click", () => closeThread());
  $("#modal-cancel").addEventListener("click", cancelModal);
  $("#modal-x").addEventListener("click", cancelModal);
  $("#modal-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submitModal();
  });
  $('[data-testid="modal"]').addEventListener("cancel", (e) => {
    e.preventDefault();
    cancelModal();
  });
  $("#reset").addEventListener("click", async () => {
    if (!confirm("Forget every message in the playground? (The bot's database keeps its log and votes.)")) return;
    try {
      await api("/reset", {});
      await api("/state", undefined, "GET").then((st) => {
        setState(st);
        closeThread(false);
        closePane(false);
        renderAll();
      });
    } catch {
      /* banner shown */
    }
  });
  composers.push(setupComposer($("#composer-form"), $('[data-testid="composer"]'), "main"));
  composers.push(setupComposer($("#thread-form"), $('[data-testid="thread-composer"]'), "thread"));
  composers.push(setupComposer($("#assistant-form"), $('[data-testid="assistant-composer"]'), "pane"));
  $("#open-assistant").addEventListener("click", () => (S.paneOpen ? closePane() : openPane()));
  $("#assistant-close").addEventListener("click", () => closePane());
  $("#assistant-new").addEventListener("click", () => openPane({ fresh: true }));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("#picker").hidden) {
      e.preventDefault();
      closePicker();
    } else if (e.key === "Escape" && S.thread && !$('[data-testid="modal"]').open && $('[data-testid="thread"]').contains(document.activeElement) && document.activeElement.tagName !== "TEXTAREA") {
      closeThread();
    }
  });
  document.addEventListener("mousedown", (e) => {
    const picker = $("#picker");
    if (!picker.hidden && !picker.contains(e.target) && !(pickerFor && pickerFor.anchor.contains(e.target))) closePicker(false);
  });
  document.addEventListener(
    "click",
    (e) => {
      const a = e.target instanceof Element ? e.target.closest("a[href]") : null;
      const linked = a && permalinkTarget(a.getAttribute("href"));
      if (!linked) return;
      e.preventDefault();
      showLinked(linked);
    },
    true,
  );
  window.addEventListener("resize", () => closePicker(false));
  window.addEventListener("hashchange", () => {
    const before = JSON.stringify(S.view);
    route();
    if (JSON.stringify(S.view) === before) return;
    if (S.view.kind === "home") openHome();
    else openChannel(S.view.id);
  });
  $("#home-pane").hidden = S.view.kind !== "home";
  $("#channel-pane").hidden = S.view.kind === "home";
  if (S.view.kind === "home") api("/home", {}).catch(() => {});
  renderAll();
  loadState().then(() => {
    if (!queued) renderAll();
  });
  connect();
}

start();
