// Chats: the list of one's conversations (session chats opened from the agenda, direct
// messages, groups) with unread and mention badges, and one conversation at a time with the
// hub's whole behaviour: names, mentions, edits, deletes, reactions, typing and read receipts.
//
// Messages go out through an outbox (localStorage) over HTTP: a message typed in a dead spot goes
// out when the link returns, once, under the idempotency key made when it was typed
// (docs/protocol/websocket.md, "Delivery, idempotency, resume"). Edits, reactions, typing, read
// marks and groups need the WebSocket (`hub.request`); without it they say so and change nothing.

import { outbox as makeOutbox } from "./outbox.js";
import { loadList, saveList } from "./saved.js";
import { fill, strings } from "./strings.js";

const T = strings();
const OPENED = "venue.chats"; // session chats opened from the agenda: [{channel, title}]
const TYPING_EVERY_MS = 3000; // the hub passes a start on at most once a second anyway
const HISTORY = 100; // messages loaded when a listed conversation is opened
const REACTIONS = ["👍", "❤️", "😂", "🎉"];
const MENTION = /@([A-Za-z0-9_.-]+)/g; // as the appliance reads mentions (oplog/message.rs)

/** The direct channel of two attendees (`dm:{a}:{b}`, `a` < `b`). */
export function directChannel(one, other) {
  return one < other ? `dm:${one}:${other}` : `dm:${other}:${one}`;
}

/**
 * The chat view. `h` builds elements, `me` is the signed-in attendee's id, `hub` the link,
 * `names` the name book, `clock` formats a time, `following()` the people one follows (for a new
 * group), `onUnread(total)` tells the tab.
 */
export function chatSection({ h, token, me, hub, names, clock, following, onUnread }) {
  const convs = new Map(); // channel → {channel, kind, title?, with?, members?, lastAt}
  const messages = new Map(); // channel → Map(seq → message)
  const badges = new Map(); // channel → {unread, mentions}
  const typing = new Map(); // channel → Map(user → timer)
  const receipts = new Map(); // channel → Map(user → seq)
  const marked = new Map(); // channel → the read mark last sent
  const reacted = new Set(); // `${message_id} ${emoji}` this attendee added
  let channel = null;
  let editing = null; // the message being edited
  let lastTyping = 0;

  // The list of conversations.
  const listEl = h("ul", { class: "conversations", "aria-label": T.conversations });
  const groupName = h("input", { id: "group-name", autocomplete: "off", maxlength: "100" });
  const groupPeople = h("fieldset", { class: "choices" }, h("legend", {}, T.groupMembers));
  const groupError = h("p", { class: "error", role: "alert" });
  const newGroup = h("details", { class: "new-group", ontoggle: () => pickable() },
    h("summary", {}, T.newGroup),
    h("form", { onsubmit: (e) => { e.preventDefault(); createGroup(); } },
      h("label", { for: "group-name" }, T.groupName, groupName), groupPeople,
      h("button", { type: "submit" }, T.createGroup), groupError));
  const listView = h("div", {},
    h("h2", { id: "chat-heading" }, T.chat), h("p", { class: "help" }, T.chatHelp), listEl, newGroup);

  // One conversation.
  const heading = h("h2", { id: "conversation-heading", tabindex: "-1" });
  const list = h("ol", { class: "feed chat", "aria-label": T.messages });
  const typingLine = h("p", { class: "typing", "aria-live": "polite" });
  const seenLine = h("p", { class: "seen help" });
  const error = h("p", { class: "error", role: "alert" });
  const input = h("input", { id: "chat-input", autocomplete: "off", maxlength: "4000",
    oninput: () => typed(), onkeydown: (e) => { if (e.key === "Escape" && editing) stopEditing(); } });
  const sendButton = h("button", { type: "submit" }, T.send);
  const cancelEdit = h("button", { type: "button", class: "quiet", hidden: true, onclick: () => stopEditing() }, T.cancel);
  const inputLabel = h("label", { for: "chat-input" }, T.message);
  const form = h("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); submit(); } },
    inputLabel, input, sendButton, cancelEdit);
  const members = h("div", { class: "members" });
  const convView = h("div", { hidden: true },
    h("button", { type: "button", class: "quiet", onclick: () => close() }, T.allChats),
    heading, members, list, typingLine, seenLine, form, error);

  const el = h("section", { "aria-labelledby": "chat-heading" }, listView, convView);
  const outbox = makeOutbox({ token, sent: (o, { seq, message_id }) => {
    if (!known(o.channel).has(seq)) {
      known(o.channel).set(seq, { seq, message_id, sender: me, content: o.content,
        created_at: new Date().toISOString(), reactions: {} });
    }
  }, changed: () => render(), failed: () => { error.textContent = T.notSent; } });

  const known = (ch) => messages.get(ch) || messages.set(ch, new Map()).get(ch);
  const mapOf = (store, ch) => store.get(ch) || store.set(ch, new Map()).get(ch);

  function title(c) {
    if (c.kind === "dm") return names.name(c.with);
    return c.title || c.name || c.channel;
  }

  /** Adds (or updates) a conversation of the list; subscribes to it when it is new. */
  function add(c, from) {
    const had = convs.get(c.channel);
    convs.set(c.channel, { ...had, ...c, lastAt: c.lastAt || had?.lastAt || "" });
    if (!had) {
      if (from !== undefined) hub.seed(c.channel, from);
      hub.subscribe([c.channel]);
    }
  }

  function badgeText(ch) {
    const b = badges.get(ch);
    if (!b || (!b.unread && !b.mentions)) return "";
    const parts = [fill(T.unread, { count: b.unread })];
    if (b.mentions) parts.push(fill(b.mentions === 1 ? T.mention : T.mentions, { count: b.mentions }));
    return parts.join(", ");
  }

  function renderList() {
    const all = [...convs.values()].sort((a, b) => (b.lastAt || "").localeCompare(a.lastAt || ""));
    listEl.replaceChildren(...all.map((c) => {
      const badge = badgeText(c.channel);
      return h("li", {}, h("button", { type: "button", class: "conversation", onclick: () => open(c.channel) },
        h("span", { class: "name" }, title(c)),
        h("span", { class: "kind" }, T[`kind_${c.kind}`]),
        badge ? h("span", { class: "badge" }, badge) : ""));
    }));
    if (!all.length) listEl.append(h("li", { class: "help" }, T.noConversations));
    let total = 0;
    for (const [ch, b] of badges) if (convs.has(ch)) total += b.unread;
    onUnread(total);
  }

  /** `content` with each `@id` shown as the person's name, one's own mentions marked. */
  function withMentions(content) {
    const parts = [];
    let at = 0;
    for (const match of content.matchAll(MENTION)) {
      const id = match[1].replace(/\.+$/, "");
      parts.push(content.slice(at, match.index));
      const shown = `@${id === me ? T.you : names.name(id)}`;
      parts.push(id === me ? h("mark", {}, shown) : h("strong", {}, shown));
      at = match.index + 1 + id.length;
    }
    parts.push(content.slice(at));
    return parts;
  }

  /** `text` with `@Name` of someone in the conversation written as `@id`, as the hub reads it. */
  function encodeMentions(text) {
    const people = participants().map((id) => ({ id, name: names.name(id) })).filter((p) => p.name !== p.id);
    const first = (p) => p.name.split(/\s+/)[0];
    const byLength = [...people].sort((a, b) => b.name.length - a.name.length);
    for (const p of byLength) text = replaceName(text, p.name, p.id);
    for (const p of people) {
      if (people.filter((q) => first(q).toLowerCase() === first(p).toLowerCase()).length === 1) {
        text = replaceName(text, first(p), p.id);
      }
    }
    return text;
  }

  function participants() {
    const c = convs.get(channel);
    const ids = new Set(c?.members || (c?.with ? [c.with] : []));
    for (const m of known(channel).values()) ids.add(m.sender);
    ids.delete(me);
    return [...ids];
  }

  function reactionsOf(m) {
    const row = h("div", { class: "reactions" });
    for (const [emoji, count] of Object.entries(m.reactions || {})) {
      if (count > 0) {
        row.append(h("button", { type: "button", class: "reaction",
          "aria-pressed": String(reacted.has(`${m.message_id} ${emoji}`)),
          "aria-label": fill(T.reactionCount, { emoji, count }), onclick: () => react(m, emoji) }, `${emoji} ${count}`));
      }
    }
    row.append(h("details", { class: "react" }, h("summary", {}, T.react),
      ...REACTIONS.map((emoji) => h("button", { type: "button", class: "quiet", "aria-label": fill(T.reactWith, { emoji }),
        onclick: (e) => { e.target.closest("details").open = false; react(m, emoji); } }, emoji))));
    return row;
  }

  function item(m) {
    const mine = m.sender === me;
    return h("li", { "data-seq": m.seq },
      h("span", { class: "sender" }, mine ? T.you : names.name(m.sender)),
      h("time", { datetime: m.created_at }, clock(m.created_at)),
      m.deleted
        ? h("span", { class: "content deleted" }, T.deletedMessage)
        : h("span", { class: "content" }, ...withMentions(m.content), m.edited_at ? h("span", { class: "edited" }, ` ${T.edited}`) : ""),
      m.deleted || !m.message_id ? "" : reactionsOf(m),
      mine && !m.deleted && m.message_id ? h("span", { class: "own" },
        h("button", { type: "button", class: "quiet", onclick: () => startEditing(m) }, T.edit),
        h("button", { type: "button", class: "quiet", onclick: () => remove(m) }, T.delete)) : "");
  }

  function pendingItem(o) {
    return h("li", {},
      h("span", { class: "sender" }, T.you),
      h("span", { class: "content" }, o.content),
      h("span", { class: "pending" }, navigator.onLine && outbox.busy() ? T.sending : T.waitingForNetwork));
  }

  function renderTyping() {
    const who = [...(typing.get(channel)?.keys() || [])].map((id) => names.name(id));
    typingLine.textContent = !who.length ? ""
      : who.length === 1 ? fill(T.typingOne, { name: who[0] })
        : who.length === 2 ? fill(T.typingTwo, { a: who[0], b: who[1] }) : T.typingMany;
  }

  function renderSeen(sorted) {
    const c = convs.get(channel);
    const mine = sorted.filter((m) => m.sender === me).pop();
    if (!mine || !c || c.kind === "session") return (seenLine.textContent = "");
    const readers = [...(receipts.get(channel) || new Map())].filter(([, seq]) => seq >= mine.seq).map(([id]) => names.name(id));
    seenLine.textContent = !readers.length ? ""
      : readers.length <= 3 ? fill(T.seenBy, { names: readers.join(", ") })
        : fill(T.seenByMany, { names: readers.slice(0, 2).join(", "), more: readers.length - 2 });
  }

  function renderMembers() {
    const c = convs.get(channel);
    if (c?.kind !== "group") return members.replaceChildren();
    const addable = following().filter((p) => !c.members.includes(p.id));
    const pick = h("select", { id: "group-add" }, ...addable.map((p) => h("option", { value: p.id }, p.name)));
    members.replaceChildren(h("details", {},
      h("summary", {}, fill(T.memberCount, { count: c.members.length })),
      h("p", {}, c.members.map((id) => (id === me ? T.you : names.name(id))).join(", ")),
      addable.length ? h("form", { class: "inline", onsubmit: (e) => {
        e.preventDefault();
        groupChange("group.add", [pick.value]);
      } }, h("label", { for: "group-add" }, T.addMember, pick), h("button", { type: "submit" }, T.add)) : "",
      h("button", { type: "button", class: "secondary", onclick: () => groupChange("group.remove", [me]) }, T.leaveGroup)));
  }

  function render() {
    renderList();
    if (!channel) return;
    heading.textContent = title(convs.get(channel) || { channel });
    const sorted = [...known(channel).values()].sort((a, b) => a.seq - b.seq);
    list.replaceChildren(...sorted.map(item), ...outbox.pending(channel).map(pendingItem));
    renderTyping();
    renderSeen(sorted);
    renderMembers();
    markRead();
  }

  function visible() {
    return channel && !el.hidden && document.visibilityState === "visible";
  }

  /** Moves the read mark to the last message of the open conversation, if it moved. */
  function markRead() {
    if (!visible()) return;
    let last = 0;
    for (const seq of known(channel).keys()) last = Math.max(last, seq);
    if (!last || (marked.get(channel) ?? 0) >= last) return;
    const ch = channel;
    marked.set(ch, last);
    badges.set(ch, { unread: 0, mentions: 0 });
    hub.request("read.mark", { channel: ch, seq: last }).catch(() => marked.delete(ch)); // again next time
  }

  function failed(e) {
    error.textContent = e?.code === "offline" ? T.needsLive : fill(T.refused, { reason: e?.message || e?.code || "" });
  }

  function react(m, emoji) {
    error.textContent = "";
    const key = `${m.message_id} ${emoji}`;
    const action = reacted.has(key) ? "remove" : "add";
    hub.request("message.react", { channel, message_id: m.message_id, emoji, action }).catch(failed);
  }

  function startEditing(m) {
    editing = m;
    input.value = m.content;
    inputLabel.textContent = T.editMessage;
    sendButton.textContent = T.save;
    cancelEdit.hidden = false;
    input.focus();
  }

  function stopEditing() {
    editing = null;
    input.value = "";
    inputLabel.textContent = T.message;
    sendButton.textContent = T.send;
    cancelEdit.hidden = true;
  }

  function remove(m) {
    if (!confirm(T.deleteConfirm)) return;
    error.textContent = "";
    hub.request("message.delete", { channel, message_id: m.message_id }).catch(failed);
  }

  function typed() {
    const now = Date.now();
    if (input.value && !editing && now - lastTyping > TYPING_EVERY_MS) {
      lastTyping = now;
      hub.notify("typing.start", { channel });
    }
  }

  function submit() {
    const content = input.value.trim();
    if (!content || !channel) return;
    error.textContent = "";
    if (lastTyping) hub.notify("typing.stop", { channel });
    lastTyping = 0;
    if (editing) {
      const m = editing;
      hub.request("message.edit", { channel, message_id: m.message_id, content: encodeMentions(content) })
        .then(stopEditing, failed);
      return;
    }
    outbox.add(channel, encodeMentions(content));
    input.value = "";
  }

  /** The people one follows, as choices for a new group. */
  function pickable() {
    const people = following();
    groupPeople.replaceChildren(h("legend", {}, T.groupMembers),
      ...(people.length ? people.map((p) => h("label", { class: "choice" },
        h("input", { type: "checkbox", value: p.id }), p.name)) : [h("p", { class: "help" }, T.followFirst)]));
  }

  async function createGroup() {
    groupError.textContent = "";
    const name = groupName.value.trim();
    const chosen = [...groupPeople.querySelectorAll("input:checked")].map((i) => i.value);
    if (!name) return (groupError.textContent = T.groupNeedsName);
    try {
      const group = await hub.request("group.create", { name, members: chosen });
      groupName.value = "";
      newGroup.open = false;
      groupUpdated(group);
      open(group.channel);
    } catch (e) {
      groupError.textContent = e?.code === "offline" ? T.needsLive : fill(T.refused, { reason: e?.message || "" });
    }
  }

  function groupChange(type, ids) {
    const c = convs.get(channel);
    error.textContent = "";
    hub.request(type, { group_id: c.channel.slice("group:".length), user_ids: ids })
      .then(groupUpdated, failed);
  }

  function groupUpdated(g) {
    if (!g?.channel) return;
    if (g.members.includes(me)) {
      add({ channel: g.channel, kind: "group", title: g.name, members: g.members });
    } else {
      convs.delete(g.channel);
      badges.delete(g.channel);
      if (channel === g.channel) close();
    }
    render();
  }

  async function loadHistory(ch) {
    const c = convs.get(ch);
    const after = Math.max(0, (c?.lastSeq ?? 0) - HISTORY);
    if (!c?.lastSeq || known(ch).size >= Math.min(HISTORY, c.lastSeq)) return;
    try {
      const r = await fetch(`/api/v1/channels/${encodeURIComponent(ch)}/messages?${new URLSearchParams({ after, limit: HISTORY })}`,
        { headers: { authorization: `Bearer ${token}` } });
      if (!r.ok) return;
      for (const m of (await r.json()).messages) if (!known(ch).has(m.seq)) known(ch).set(m.seq, m);
      render();
    } catch {
      // Offline: what is here stays; the hub resumes the rest.
    }
  }

  function open(ch) {
    channel = ch;
    stopEditing();
    error.textContent = "";
    listView.hidden = true;
    convView.hidden = false;
    render();
    loadHistory(ch);
    heading.focus();
  }

  function close() {
    if (channel && lastTyping) hub.notify("typing.stop", { channel });
    channel = null;
    convView.hidden = true;
    listView.hidden = false;
    render();
  }

  /** The conversations the appliance knows for this attendee, with their badges. */
  async function refreshList() {
    try {
      const r = await fetch("/api/v1/me/conversations", { headers: { authorization: `Bearer ${token}` } });
      if (!r.ok) return;
      for (const c of (await r.json()).conversations) {
        badges.set(c.channel, { unread: c.unread, mentions: c.mentions });
        add({ channel: c.channel, kind: c.kind, with: c.with, title: c.name, members: c.members,
          lastSeq: c.last_seq, lastAt: c.last_at || "" }, c.last_seq);
      }
      render();
    } catch {
      // Offline: the list fills in when the link is back.
    }
  }

  for (const c of loadList(OPENED)) add({ channel: c.channel, kind: "session", title: c.title });
  document.addEventListener("visibilitychange", () => markRead());

  return {
    el,
    refreshList,
    flush: () => outbox.flush(),
    /** Opens a session's chat (from the agenda), titled `title`. */
    openSession(ch, title) {
      add({ channel: ch, kind: "session", title });
      saveList(OPENED, [...convs.values()].filter((c) => c.kind === "session").map((c) => ({ channel: c.channel, title: c.title })));
      open(ch);
    },
    /** Opens the direct conversation with `person` ({id, name}). */
    openDirect(person) {
      names.learn(person);
      const ch = directChannel(me, person.id);
      add({ channel: ch, kind: "dm", with: person.id });
      open(ch);
    },
    /** Shows the list (the tab was chosen). */
    shown() {
      if (channel) markRead();
      else render();
    },
    render,
    /** A message of a chat channel, from the hub; `live` when it came as it was posted. */
    message(ch, m, live) {
      if (!convs.has(ch)) return;
      known(ch).set(m.seq, m);
      const c = convs.get(ch);
      if (m.created_at > (c.lastAt || "")) c.lastAt = m.created_at;
      c.lastSeq = Math.max(c.lastSeq ?? 0, m.seq);
      mapOf(typing, ch).delete(m.sender);
      if (live && m.sender !== me && !(ch === channel && visible())) {
        const b = badges.get(ch) || { unread: 0, mentions: 0 };
        const mentioned = [...m.content.matchAll(MENTION)].some((x) => x[1].replace(/\.+$/, "") === me);
        badges.set(ch, { unread: b.unread + 1, mentions: b.mentions + (mentioned ? 1 : 0) });
      }
      render();
    },
    /** A hub frame other than a message. */
    frame({ type, payload: p }) {
      const m = p.channel && [...(messages.get(p.channel)?.values() || [])].find((x) => x.message_id === p.message_id);
      switch (type) {
        case "message.updated":
          if (m) Object.assign(m, { content: p.content, edited_at: p.edited_at });
          break;
        case "message.deleted":
          if (m) Object.assign(m, { deleted: true, content: "", reactions: {} });
          break;
        case "message.reaction":
          if (m) m.reactions = { ...m.reactions, [p.emoji]: p.count };
          if (p.user_id === me) {
            if (p.action === "add") reacted.add(`${p.message_id} ${p.emoji}`);
            else reacted.delete(`${p.message_id} ${p.emoji}`);
          }
          break;
        case "typing.indicator": {
          if (p.user_id === me) return;
          const now = mapOf(typing, p.channel);
          clearTimeout(now.get(p.user_id));
          if (p.typing) {
            now.set(p.user_id, setTimeout(() => { now.delete(p.user_id); renderTyping(); }, p.expires_in_ms || 5000));
          } else now.delete(p.user_id);
          if (p.channel === channel) renderTyping();
          return;
        }
        case "read.receipt":
          if (p.user_id !== me) mapOf(receipts, p.channel).set(p.user_id, p.seq);
          break;
        case "notification.badge":
          badges.set(p.channel, { unread: p.unread, mentions: p.mentions });
          if (!convs.has(p.channel) && p.channel.startsWith("dm:")) {
            const [a, b] = p.channel.slice(3).split(":");
            add({ channel: p.channel, kind: "dm", with: a === me ? b : a });
          } else if (!convs.has(p.channel) && p.channel.startsWith("group:")) {
            refreshList();
          }
          break;
        case "group.updated":
          return groupUpdated(p);
        default:
          return;
      }
      render();
    },
  };
}

function replaceName(text, name, id) {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return text.replace(new RegExp(`@${escaped}(?![\\p{L}\\p{N}_-])`, "giu"), `@${id}`);
}
