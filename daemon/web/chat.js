// Session chats: one session's channel, and a composer whose messages wait in an outbox
// (localStorage) until the appliance has them. A message typed in a dead spot goes out when the
// link returns, once: its idempotency key is made when it is typed and kept across retries,
// reloads and transports (docs/protocol/websocket.md, "Delivery, idempotency, resume").

import { loadList, saveList } from "./saved.js";
import { strings } from "./strings.js";

const T = strings();
const OUTBOX = "venue.outbox";
const RETRY_MS = 3000;

/** A random key; `crypto.randomUUID` exists only on HTTPS pages, and the venue LAN is HTTP. */
function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The chat view. `h` builds elements, `me` is the signed-in attendee's id, `subscribe` asks the
 * hub for a channel's messages, `clock` formats a time.
 */
export function chatSection({ h, token, me, subscribe, clock }) {
  const heading = h("h2", { id: "chat-heading" }, T.chat);
  const help = h("p", { class: "help" }, T.chatHelp);
  const list = h("ol", { class: "feed chat", "aria-label": T.messages });
  const error = h("p", { class: "error", role: "alert" });
  const input = h("input", { id: "chat-input", autocomplete: "off", maxlength: "4000" });
  const form = h("form", { class: "composer", hidden: true, onsubmit: (e) => { e.preventDefault(); send(); } },
    h("label", { for: "chat-input" }, T.message), input, h("button", { type: "submit" }, T.send));
  const el = h("section", { "aria-labelledby": "chat-heading" }, heading, help, list, form, error);
  const messages = new Map(); // channel → Map(seq → message)
  let outbox = loadList(OUTBOX);
  let channel = null;
  let flushing = false;
  let retry = null;

  const save = () => saveList(OUTBOX, outbox);
  const known = (ch) => messages.get(ch) || messages.set(ch, new Map()).get(ch);

  function item(sender, content, time, note) {
    return h("li", {},
      h("span", { class: "sender" }, sender === me ? T.you : sender),
      time ? h("time", { datetime: time }, clock(time)) : "",
      h("span", { class: "content" }, content),
      note ? h("span", { class: "pending" }, note) : "");
  }

  function render() {
    if (!channel) return;
    const sent = [...known(channel).values()].sort((a, b) => a.seq - b.seq);
    const waiting = navigator.onLine && flushing ? T.sending : T.waitingForNetwork;
    list.replaceChildren(
      ...sent.map((m) => item(m.sender, m.content, m.created_at)),
      ...outbox.filter((o) => o.channel === channel).map((o) => item(me, o.content, null, waiting)),
    );
  }

  function send() {
    const content = input.value.trim();
    if (!content || !channel) return;
    outbox.push({ key: newKey(), channel, content });
    save();
    input.value = "";
    render();
    flush();
  }

  /** Sends the outbox in order, each under its own key, until it is empty or the link fails. */
  async function flush() {
    if (flushing) return;
    flushing = true;
    clearTimeout(retry);
    render();
    try {
      while (outbox.length) {
        const o = outbox[0];
        let r;
        try {
          r = await fetch(`/api/v1/channels/${encodeURIComponent(o.channel)}/messages`, {
            method: "POST",
            headers: { authorization: `Bearer ${token}`, "content-type": "application/json", "idempotency-key": o.key },
            body: JSON.stringify({ content: o.content }),
          });
        } catch {
          retry = setTimeout(flush, RETRY_MS); // no network: keep it, try again
          return;
        }
        if (r.status === 429 || r.status === 408 || r.status >= 500) {
          retry = setTimeout(flush, RETRY_MS);
          return;
        }
        outbox.shift();
        save();
        if (r.ok) {
          // Shown at once; the hub's copy of it (same seq) is then not shown twice.
          const { seq } = await r.json();
          known(o.channel).set(seq, { seq, sender: me, content: o.content, created_at: new Date().toISOString() });
        } else {
          error.textContent = T.notSent;
        }
      }
    } finally {
      flushing = false;
      render();
    }
  }

  window.addEventListener("online", flush);
  return {
    el,
    /** Opens the chat of `ch`, titled `title`. */
    open(ch, title) {
      channel = ch;
      heading.textContent = title;
      help.hidden = true;
      form.hidden = false;
      error.textContent = "";
      subscribe([ch]);
      render();
      input.focus();
    },
    /** A message of any channel, from the hub (history or live). */
    message(ch, m) {
      if (!ch.startsWith("session:")) return;
      known(ch).set(m.seq, m);
      if (ch === channel) render();
    },
    flush,
  };
}
