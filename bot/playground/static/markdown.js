// Slack text → DOM nodes, the way Slack shows it.
//
// Two dialects: `markdown` (standard Markdown, as the bot sends in `markdown_text` and the
// `markdown` block) and `mrkdwn` (Slack's own: *bold*, _italic_, ~strike~). Both may hold
// Slack's escapes (&amp; &lt; &gt;) and tokens (<@U1>, <#C1|name>, <https://x|label>, <!here>).
//
// Safety: this module never parses HTML. Message text only ever becomes text nodes and
// elements created here, and links only ever point to http(s) or mailto addresses.

export const EMOJI = {
  "+1": "👍", thumbsup: "👍", "-1": "👎", thumbsdown: "👎", no_entry_sign: "🚫", no_entry: "⛔",
  tada: "🎉", eyes: "👀", white_check_mark: "✅", heavy_check_mark: "✔️", x: "❌", heart: "❤️",
  pencil2: "✏️", memo: "📝", arrows_counterclockwise: "🔄", repeat: "🔁", rocket: "🚀", fire: "🔥",
  smile: "😄", slightly_smiling_face: "🙂", joy: "😂", thinking_face: "🤔", pray: "🙏", clap: "👏",
  raised_hands: "🙌", wave: "👋", ok_hand: "👌", muscle: "💪", 100: "💯", star: "⭐", sparkles: "✨",
  zap: "⚡", bulb: "💡", warning: "⚠️", question: "❓", exclamation: "❗", bug: "🐛", robot_face: "🤖",
  house: "🏠", speech_balloon: "💬", hourglass_flowing_sand: "⏳", chart_with_upwards_trend: "📈",
  bar_chart: "📊", moneybag: "💰", stopwatch: "⏱️", lock: "🔒", link: "🔗", books: "📚", book: "📖",
  gear: "⚙️", wrench: "🔧", hammer_and_wrench: "🛠️", package: "📦", mag: "🔍", point_right: "👉",
  sob: "😭", sweat_smile: "😅", see_no_evil: "🙈", party_popper: "🎉", heavy_plus_sign: "➕",
  white_circle: "⚪", large_green_circle: "🟢", red_circle: "🔴", large_yellow_circle: "🟡",
};

/** The emoji for a reaction or shortcode name (skin tones ignored), or null. */
export function emojiFor(name) {
  const base = String(name).split("::")[0];
  return Object.prototype.hasOwnProperty.call(EMOJI, base) ? EMOJI[base] : null;
}

/** Slack's three escapes, in one pass (so "&amp;lt;" stays "&lt;"). */
export function decodeEntities(s) {
  return String(s).replace(/&(amp|lt|gt);/g, (_, e) => ({ amp: "&", lt: "<", gt: ">" })[e]);
}

const SAFE_URL = /^(https?:\/\/|mailto:)/i;

function el(tag, cls, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  for (const c of children) if (c != null) node.append(c);
  return node;
}

function link(url, label) {
  if (!SAFE_URL.test(url)) return document.createTextNode(label || url);
  const a = el("a", "md-link", label || url);
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  return a;
}

// -- dates: <!date^1732790000^{date_short} at {time}|fallback> ---------------------------

const pad = (n) => String(n).padStart(2, "0");

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

export function formatSlackDate(seconds, format, fallback) {
  const d = new Date(Number(seconds) * 1000);
  if (!Number.isFinite(d.getTime())) return fallback;
  const now = new Date();
  const yesterday = new Date(now.getTime() - 86400000);
  const short = d.toLocaleDateString(undefined, { month: "short", day: "numeric", year: "numeric" });
  const long = d.toLocaleDateString(undefined, { weekday: "long", month: "long", day: "numeric", year: "numeric" });
  const pretty = (s) => (sameDay(d, now) ? "today" : sameDay(d, yesterday) ? "yesterday" : s);
  const tokens = {
    date_num: `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`,
    date: d.toLocaleDateString(undefined, { month: "long", day: "numeric", year: "numeric" }),
    date_short: short,
    date_long: long,
    date_pretty: pretty(d.toLocaleDateString(undefined, { month: "long", day: "numeric", year: "numeric" })),
    date_short_pretty: pretty(short),
    date_long_pretty: pretty(long),
    time: d.toLocaleTimeString(undefined, { hour: "numeric", minute: "2-digit" }),
    time_secs: d.toLocaleTimeString(undefined, { hour: "numeric", minute: "2-digit", second: "2-digit" }),
    ago: relative(d, now),
  };
  let unknown = false;
  const out = String(format).replace(/\{(\w+)\}/g, (m, t) => {
    if (t in tokens) return tokens[t];
    unknown = true;
    return m;
  });
  return unknown ? fallback : out;
}

function relative(d, now) {
  const s = Math.round((now - d) / 1000);
  const f = (n, u) => `${n} ${u}${n === 1 ? "" : "s"} ago`;
  if (s < 60) return "just now";
  if (s < 3600) return f(Math.floor(s / 60), "minute");
  if (s < 86400) return f(Math.floor(s / 3600), "hour");
  return f(Math.floor(s / 86400), "day");
}

// -- Slack tokens: <…> ----------------------------------------------------------------------

function slackToken(inner, ctx) {
  const bar = inner.indexOf("|");
  const head = bar < 0 ? inner : inner.slice(0, bar);
  const label = bar < 0 ? "" : decodeEntities(inner.slice(bar + 1));
  if (head.startsWith("@")) {
    const id = head.slice(1);
    const name = ctx.userName ? ctx.userName(id, label) : label || id;
    const pill = el("span", "mention" + (ctx.me && id === ctx.me ? " mention-me" : ""), "@" + name);
    pill.dataset.user = id;
    return pill;
  }
  if (head.startsWith("#")) {
    const id = head.slice(1);
    const name = label || (ctx.channelName && ctx.channelName(id)) || id;
    if (ctx.onChannel && ctx.channelName && ctx.channelName(id)) {
      const b = el("button", "mention mention-channel", "#" + name);
      b.type = "button";
      b.addEventListener("click", () => ctx.onChannel(id));
      return b;
    }
    return el("span", "mention mention-channel", "#" + name);
  }
  if (head.startsWith("!")) {
    // Broadcasts and groups are shown, never acted on: plain text.
    const word = head.slice(1);
    if (/^(here|channel|everyone)$/.test(word)) return el("span", "inert", "@" + word);
    if (word.startsWith("subteam^")) return el("span", "inert", label || "@group");
    if (word.startsWith("date^")) {
      const [, secs, format] = word.split("^");
      return document.createTextNode(formatSlackDate(secs, decodeEntities(format || "{date_short}"), label));
    }
    return el("span", "inert", label || "<" + decodeEntities(inner) + ">");
  }
  const url = decodeEntities(head);
  if (SAFE_URL.test(url)) return link(url, label);
  return document.createTextNode("<" + decodeEntities(inner) + ">");
}

// -- inline ------------------------------------------------------------------------------

const URL_RE = String.raw`https?:\/\/(?:[^\s<>&]|&amp;)*(?:[^\s<>&.,;:!?'")\]*_~]|&amp;)`;
const TOKEN_RE = String.raw`<((?:[@#!]|https?:\/\/|mailto:)[^<>\n]*)>`;

const INLINE = {
  markdown: new RegExp(
    [
      String.raw`(?<code>(?<ticks>` + "`+" + String.raw`)(?<codeText>[\s\S]*?[^` + "`" + String.raw`])\k<ticks>(?!` + "`" + `))`,
      `(?<token>${TOKEN_RE})`,
      String.raw`(?<mdlink>!?\[(?<linkText>[^\[\]\n]+)\]\((?<linkUrl>[^()\s]+)(?:\s+"[^"\n]*")?\))`,
      String.raw`(?<bold>\*\*(?=\S)(?<boldText>[\s\S]+?)(?<=\S)\*\*(?!\*[^*\s]))`,
      String.raw`(?<bold2>(?<![\p{L}\p{N}_])__(?=\S)(?<bold2Text>[\s\S]+?)(?<=\S)__(?![\p{L}\p{N}_]))`,
      String.raw`(?<strike>~~(?=\S)(?<strikeText>[\s\S]+?)(?<=\S)~~)`,
      String.raw`(?<em>\*(?=[^\s*])(?<emText>[\s\S]+?)(?<=[^\s*])\*(?!\*))`,
      String.raw`(?<em2>(?<![\p{L}\p{N}_])_(?=[^\s_])(?<em2Text>[\s\S]+?)(?<=[^\s_])_(?![\p{L}\p{N}_]))`,
      `(?<url>${URL_RE})`,
      String.raw`(?<emoji>:(?<emojiName>[a-z0-9_+\-]+):)`,
    ].join("|"),
    "gu",
  ),
  mrkdwn: new RegExp(
    [
      String.raw`(?<code>` + "`" + String.raw`(?<codeText>[^` + "`" + String.raw`\n]+)` + "`)",
      `(?<token>${TOKEN_RE})`,
      String.raw`(?<bold>(?<![\p{L}\p{N}*])\*(?=\S)(?<boldText>[^*\n]+?)(?<=\S)\*(?![\p{L}\p{N}*]))`,
      String.raw`(?<em>(?<![\p{L}\p{N}_])_(?=\S)(?<emText>[^_\n]+?)(?<=\S)_(?![\p{L}\p{N}_]))`,
      String.raw`(?<strike>(?<![\p{L}\p{N}~])~(?=\S)(?<strikeText>[^~\n]+?)(?<=\S)~(?![\p{L}\p{N}~]))`,
      `(?<url>${URL_RE})`,
      String.raw`(?<emoji>:(?<emojiName>[a-z0-9_+\-]+):)`,
    ].join("|"),
    "gu",
  ),
};

/** Inline content of raw (still escaped) Slack text, as an array of nodes. */
function inline(text, ctx, mode, depth = 0) {
  const out = [];
  const re = new RegExp(INLINE[mode].source, INLINE[mode].flags);
  let pos = 0;
  let buf = "";
  const flush = () => {
    if (buf) out.push(document.createTextNode(decodeEntities(buf)));
    buf = "";
  };
  const nested = (s) => (depth > 8 ? [document.createTextNode(decodeEntities(s))] : inline(s, ctx, mode, depth + 1));
  let m;
  re.lastIndex = 0;
  while ((m = re.exec(text)) !== null) {
    const g = m.groups;
    let node = null;
    if (g.code !== undefined) {
      let code = g.codeText;
      if (mode === "markdown" && /^ .* $/.test(code) && code.trim()) code = code.slice(1, -1);
      node = el("code", "md-code", decodeEntities(code));
    } else if (g.token !== undefined) {
      node = slackToken(m[0].slice(1, -1), ctx);
    } else if (g.mdlink !== undefined) {
      const url = decodeEntities(g.linkUrl);
      if (SAFE_URL.test(url)) {
        node = link(url, null);
        node.textContent = "";
        node.append(...nested(g.linkText));
      } else {
        node = el("span", null, ...nested(g.linkText));
      }
    } else if (g.bold !== undefined || g.bold2 !== undefined) {
      node = el("strong", null, ...nested(g.boldText ?? g.bold2Text));
    } else if (g.strike !== undefined) {
      node = el("del", null, ...nested(g.strikeText));
    } else if (g.em !== undefined || g.em2 !== undefined) {
      node = el("em", null, ...nested(g.emText ?? g.em2Text));
    } else if (g.url !== undefined) {
      const url = decodeEntities(m[0]);
      node = link(url, url);
    } else if (g.emoji !== undefined) {
      const e = emojiFor(g.emojiName);
      if (e) {
        node = el("span", "emoji", e);
        node.title = `:${g.emojiName}:`;
      } else {
        // Not an emoji we know: keep the first colon as text and look again after it.
        buf += text.slice(pos, m.index + 1);
        pos = m.index + 1;
        re.lastIndex = pos;
        continue;
      }
    }
    buf += text.slice(pos, m.index);
    flush();
    out.push(node);
    pos = m.index + m[0].length;
  }
  buf += text.slice(pos);
  flush();
  return out;
}

// -- mrkdwn ------------------------------------------------------------------------------

const QUOTE_RE = /^(?:&gt;|>) ?/;
const QUOTE_ALL_RE = /^(?:&gt;&gt;&gt;|>>>) ?/;

/** Slack mrkdwn as a DocumentFragment. */
export function renderMrkdwn(text, ctx = {}) {
  const frag = document.createDocumentFragment();
  const root = el("div", "mrkdwn");
  frag.append(root);
  const parts = String(text ?? "").split("```");
  // Even indexes are text, odd ones code (an unclosed fence runs to the end, as while streaming).
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      const code = part.replace(/^\n/, "").replace(/\n$/, "");
      root.append(el("pre", "md-pre", el("code", null, decodeEntities(code))));
      return;
    }
    if (!part) return;
    let body = part;
    if (i > 0) body = body.replace(/^\n/, "");
    if (i < parts.length - 1) body = body.replace(/\n$/, "");
    if (!body) return;
    const lines = body.split("\n");
    let quote = null;
    let para = null;
    let quoteRest = false;
    for (const line of lines) {
      if (!quoteRest && QUOTE_ALL_RE.test(line)) {
        quoteRest = true;
        quote = el("blockquote", "md-quote");
        root.append(quote);
        addLine(quote, line.replace(QUOTE_ALL_RE, ""));
        continue;
      }
      if (quoteRest) {
        addLine(quote, line);
        continue;
      }
      if (QUOTE_RE.test(line)) {
        if (!quote) {
          quote = el("blockquote", "md-quote");
          root.append(quote);
        }
        para = null;
        addLine(quote, line.replace(QUOTE_RE, ""));
      } else {
        quote = null;
        if (!para) {
          para = el("div", "md-p");
          root.append(para);
        }
        addLine(para, line);
      }
    }
  });
  function addLine(container, line) {
    if (container.childNodes.length) container.append("\n");
    container.append(...inline(line, ctx, "mrkdwn"));
  }
  return frag;
}

// -- Markdown ----------------------------------------------------------------------------

const FENCE_RE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING_RE = /^ {0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$/;
const HR_RE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const MD_QUOTE_RE = /^ {0,3}(?:>|&gt;) ?/;
const LIST_RE = /^(\s*)([-*+•]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;

const indentOf = (line) => {
  const m = /^[ \t]*/.exec(line)[0];
  return m.replace(/\t/g, "    ").length;
};

function startsBlock(line) {
  return FENCE_RE.test(line) || HEADING_RE.test(line) || HR_RE.test(line) || MD_QUOTE_RE.test(line);
}

/** Standard Markdown (the subset Slack renders) as a DocumentFragment. */
export function renderMarkdown(text, ctx = {}) {
  const frag = document.createDocumentFragment();
  const root = el("div", "markdown");
  root.append(...blocks(String(text ?? "").replace(/\r\n?/g, "\n").split("\n"), ctx, 0));
  frag.append(root);
  return frag;
}

function blocks(lines, ctx, depth) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
      continue;
    }
    let m;
    if ((m = FENCE_RE.exec(line))) {
      const fence = m[1];
      const lang = decodeEntities(m[2] || "");
      const body = [];
      i++;
      const indent = indentOf(line);
      while (i < lines.length) {
        const l = lines[i];
        const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(l);
        if (close && close[1][0] === fence[0] && close[1].length >= fence.length) {
          i++;
          break;
        }
        body.push(indent ? l.replace(new RegExp(`^ {0,${indent}}`), "") : l);
        i++;
      }
      const pre = el("pre", "md-pre", el("code", null, decodeEntities(body.join("\n"))));
      if (lang) {
        pre.dataset.lang = lang;
        pre.prepend(el("span", "md-lang", lang));
      }
      out.push(pre);
      continue;
    }
    if ((m = HEADING_RE.exec(line)) && m[2] !== undefined) {
      const h = el("div", "md-heading", ...inline(m[2], ctx, "markdown"));
      h.setAttribute("role", "heading");
      h.setAttribute("aria-level", String(Math.min(6, m[1].length + 2)));
      out.push(h);
      i++;
      continue;
    }
    if (HR_RE.test(line)) {
      out.push(el("hr", "md-hr"));
      i++;
      continue;
    }
    if (MD_QUOTE_RE.test(line)) {
      const body = [];
      while (i < lines.length && MD_QUOTE_RE.test(lines[i])) body.push(lines[i++].replace(MD_QUOTE_RE, ""));
      out.push(el("blockquote", "md-quote", ...(depth > 6 ? [decodeEntities(body.join("\n"))] : blocks(body, ctx, depth + 1))));
      continue;
    }
    if (LIST_RE.test(line)) {
      const [node, next] = list(lines, i, ctx, depth);
      out.push(node);
      i = next;
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && (para.length === 0 || (!startsBlock(lines[i]) && !LIST_RE.test(lines[i])))) {
      para.push(lines[i].replace(/^ {0,3}/, "").replace(/ {2,}$/, ""));
      i++;
    }
    out.push(el("p", "md-p", ...inline(para.join("\n"), ctx, "markdown")));
  }
  return out;
}

function list(lines, start, ctx, depth) {
  const first = LIST_RE.exec(lines[start]);
  const base = indentOf(lines[start]);
  const ordered = /\d/.test(first[2]);
  const node = el(ordered ? "ol" : "ul", "md-list");
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  let i = start;
  let item = null;
  let content = [];
  let contentIndent = 0;
  const finish = () => {
    if (!item) return;
    while (content.length && !content[content.length - 1].trim()) content.pop();
    const kids = depth > 6 ? [decodeEntities(content.join("\n"))] : blocks(content, ctx, depth + 1);
    // A tight item's single paragraph is shown without paragraph spacing.
    for (const k of kids) if (k.tagName === "P") k.classList.add("md-p-tight");
    item.append(...kids);
    node.append(item);
  };
  while (i < lines.length) {
    const line = lines[i];
    const m = LIST_RE.exec(line);
    const ind = indentOf(line);
    if (m && ind <= base + 1 && ind >= base - 1 && /\d/.test(m[2]) === ordered) {
      finish();
      item = el("li");
      content = [m[3] ?? ""];
      contentIndent = ind + m[2].length + 1;
      i++;
      continue;
    }
    if (m && ind < base) break;
    if (!line.trim()) {
      // A blank line continues the list only if the next line belongs to it.
      const next = lines.slice(i + 1).find((l) => l.trim());
      if (next === undefined) break;
      const nm = LIST_RE.exec(next);
      if (indentOf(next) > base || (nm && indentOf(next) >= base - 1 && /\d/.test(nm[2]) === ordered)) {
        content.push("");
        i++;
        continue;
      }
      break;
    }
    if (ind > base) {
      // Nested content: keep its indentation relative to the item's text.
      const cut = Math.min(ind, contentIndent);
      content.push(line.replace(/^[ \t]*/, (ws) => " ".repeat(Math.max(0, ws.replace(/\t/g, "    ").length - cut))));
      i++;
      continue;
    }
    if (m || startsBlock(line)) break;
    // Lazy continuation of the item's paragraph.
    content.push(line.trim());
    i++;
  }
  finish();
  return [node, i];
}

/** plain_text objects: shown as they are (escapes decoded, known :emoji: when asked). */
export function renderPlain(text, { emoji = true } = {}) {
  const s = decodeEntities(text ?? "");
  if (!emoji) return document.createTextNode(s);
  return document.createTextNode(s.replace(/:([a-z0-9_+\-]+):/g, (m, n) => emojiFor(n) || m));
}

/** Message text in its format ("markdown" or "mrkdwn"). */
export function renderText(text, format, ctx) {
  return format === "markdown" ? renderMarkdown(text, ctx) : renderMrkdwn(text, ctx);
}
