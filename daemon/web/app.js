// The attendee app: sign in with a ticket code, then News (live announcements), Agenda (rooms,
// sessions now and next, occupancy), Chat (a session's), People (whom one follows) and You
// (check-in, privacy). Plain ES modules, no framework: the page must load fast from the
// appliance over busy WiFi. chat.js, people.js and hub.js hold the parts with state of their own.

import { chatSection } from "./chat.js";
import { Hub } from "./hub.js";
import { peopleSection } from "./people.js";
import { nameBook } from "./names.js";
import { canScan, scanTicket } from "./scan.js";
import { loadList, saveList } from "./saved.js";
import { clock, h } from "./page.js";
import { fill, strings } from "./strings.js";

const T = strings();
const TOKEN_KEY = "venue.token";
const SAVED_ANNOUNCEMENTS = "venue.announcements"; // the last ones, readable in a dead spot
const KEEP_ANNOUNCEMENTS = 50;
const main = document.getElementById("main");
const link = document.getElementById("link");

function show(...children) {
  main.replaceChildren(...children);
  main.focus();
}

/** A token handed over in the URL (`/?token=…`, e.g. from the organiser's email) is kept and
 * taken out of the address bar, so it is not bookmarked or shared by accident. */
function takeTokenFromUrl() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (!token) return;
  localStorage.setItem(TOKEN_KEY, token);
  url.searchParams.delete("token");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
}

/** A ticket code handed over in the URL (`/?ticket=…`, the link in the QR code on a badge or
 * confirmation, which the phone's camera app opens), taken out of the address bar. */
function takeTicketFromUrl() {
  const url = new URL(location.href);
  const ticket = url.searchParams.get("ticket");
  if (!ticket) return "";
  url.searchParams.delete("ticket");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
  return ticket.trim();
}

function signInView(notice, ticketCode = "") {
  link.textContent = "";
  const error = h("p", { id: "sign-in-error", class: "error", role: "alert" });
  const ticket = h("input", { id: "ticket", name: "ticket_code", required: true, autocomplete: "off", autocapitalize: "characters", spellcheck: "false", value: ticketCode || null });
  const scanner = h("div", {});
  const scan = canScan() ? h("button", { type: "button", class: "secondary", onclick: async () => {
    error.textContent = "";
    const code = await scanTicket(h, scanner, error);
    if (code) {
      ticket.value = code;
      who.focus();
    }
  } }, T.scanTicket) : "";
  const who = h("input", { id: "who", name: "name_or_email", required: true, autocomplete: "family-name" });
  const button = h("button", { type: "submit" }, T.signIn);
  const form = h("form", { "aria-describedby": "sign-in-help", onsubmit: async (e) => {
    e.preventDefault();
    button.disabled = true;
    button.textContent = T.signingIn;
    error.textContent = await signIn(ticket.value.trim(), who.value.trim());
    button.disabled = false;
    button.textContent = T.signIn;
  } },
    h("label", { for: "ticket" }, T.ticketCode, ticket),
    scan, scanner,
    h("label", { for: "who" }, T.nameOrEmail, who),
    button,
    error,
  );
  show(
    h("h2", {}, T.signInHeading),
    notice ? h("p", { class: "error", role: "alert" }, notice) : "",
    h("p", { id: "sign-in-help", class: "help" }, T.signInHelp),
    form,
  );
  if (ticketCode) who.focus();
}

/** Signs in; returns the error to show, or "" once signed in. */
async function signIn(ticketCode, nameOrEmail) {
  let response;
  try {
    response = await fetch("/api/v1/attendee/session", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ticket_code: ticketCode, name_or_email: nameOrEmail }),
    });
  } catch {
    return T.unreachable;
  }
  if (response.status === 429) {
    return fill(T.tooManyAttempts, { secs: response.headers.get("retry-after") || "60" });
  }
  if (!response.ok) return T.wrongPair;
  const { token } = await response.json();
  localStorage.setItem(TOKEN_KEY, token);
  homeView(token);
  return "";
}

function signOut(notice) {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(SAVED_ANNOUNCEMENTS);
  signInView(notice);
}

function homeView(token) {
  const me = tokenSubject(token);
  const tabs = {};
  const hub = new Hub(token, {
    state: (s) => {
      const was = link.dataset.state;
      link.textContent = states[s];
      link.dataset.state = s;
      if (s === "live" && was !== "live") {
        chat.flush();
        chat.refreshList(); // conversations begun while this page was away
      }
    },
    ended: () => signOut(T.sessionEnded),
    message: (channel, m, live) => {
      if (channel === "announcements") announcements.add(m);
      else chat.message(channel, m, live);
    },
    frame: (frame) => {
      if (frame.type === "zone.occupancy") schedule.occupancy(frame.payload);
      else if (frame.type === "presence.changed") people.changed(frame.payload);
      else chat.frame(frame);
    },
  });
  const names = nameBook(token, () => {
    chat.render();
    people.render();
  });
  const announcements = announcementsSection();
  const schedule = scheduleSection(token);
  const mine = meSection(token);
  const people = peopleSection({ h, token, names, zoneName: (id) => schedule.zoneName(id),
    follow: (ids) => hub.follow(ids), unfollow: (ids) => hub.unfollow(ids),
    message: (person) => {
      chat.openDirect(person);
      select("chat");
    } });
  const chat = chatSection({ h, token, me, hub, names, clock, following: () => people.following(),
    onUnread: (count) => {
      tabs.chat.textContent = count ? `${T.tab_chat} (${count})` : T.tab_chat;
      if (count) tabs.chat.setAttribute("aria-label", fill(T.chatUnread, { count }));
      else tabs.chat.removeAttribute("aria-label");
    } });
  const sections = {
    announcements: announcements.el, schedule: schedule.el, chat: chat.el, people: people.el, me: mine.el,
  };
  const select = (name) => {
    for (const [key, el] of Object.entries(sections)) el.hidden = key !== name;
    for (const [key, tab] of Object.entries(tabs)) {
      if (key === name) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    if (name === "schedule") schedule.refresh();
    if (name === "me") mine.refresh();
    if (name === "chat") chat.shown();
  };
  for (const name of Object.keys(sections)) {
    tabs[name] = h("button", { type: "button", class: "tab", onclick: () => select(name) }, T[`tab_${name}`]);
  }
  show(
    h("nav", { "aria-label": T.views, class: "tabs" }, ...Object.values(tabs)),
    ...Object.values(sections),
    h("button", { class: "quiet", type: "button", onclick: () => { hub.stop(); signOut(); } }, T.signOut),
  );
  select("announcements");
  const states = { connecting: T.linkConnecting, live: T.linkLive, offline: T.linkOffline };
  hub.subscribe(["announcements"]);
  hub.follow(people.ids());
  schedule.onRooms = (rooms) => hub.subscribe(rooms.map((r) => `zone:${r.id}`));
  schedule.onChat = (session) => {
    chat.openSession(`session:${session.id}`, session.title);
    select("chat");
  };
  hub.start();
  chat.refreshList();
  chat.flush(); // what was typed before a reload
}

/** The attendee id a token names (its `sub`), read without checking: the server checks. */
function tokenSubject(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="))).sub;
  } catch {
    return "";
  }
}

function announcementsSection() {
  const feed = h("ol", { class: "feed", "aria-label": T.announcements });
  const empty = h("p", { class: "help" }, T.noAnnouncements);
  const el = h("section", { "aria-labelledby": "announcements-heading" },
    h("h2", { id: "announcements-heading" }, T.announcements), empty, feed);
  const saved = new Map(); // seq → message, as kept in localStorage
  const save = () => {
    const last = [...saved.values()].sort((a, b) => b.seq - a.seq).slice(0, KEEP_ANNOUNCEMENTS);
    saveList(SAVED_ANNOUNCEMENTS, last);
  };
  const add = (m) => {
    // Shown once, whether it came from the saved copy, a resume or live.
    if (saved.has(m.seq)) return;
    saved.set(m.seq, { seq: m.seq, created_at: m.created_at, content: m.content });
    empty.remove();
    const item = h("li", { "data-seq": m.seq },
      h("time", { datetime: m.created_at }, clock(m.created_at)), m.content);
    // Newest first, whatever order resumed and live messages arrive in.
    const after = [...feed.children].find((li) => Number(li.dataset.seq) < m.seq);
    feed.insertBefore(item, after || null);
  };
  for (const m of loadList(SAVED_ANNOUNCEMENTS)) add(m);
  return {
    el,
    add(m) {
      add(m);
      save();
    },
  };
}

/** Rooms with what is on now and next, and their live occupancy against capacity. */
function scheduleSection(token) {
  const body = h("div", { class: "rooms" });
  const el = h("section", { "aria-labelledby": "schedule-heading" },
    h("h2", { id: "schedule-heading" }, T.schedule), body);
  const meters = new Map(); // zone id → function(count)
  const names = new Map(); // zone id → room name
  const section = { el, onRooms: () => {}, onChat: () => {} };
  let timeZone;

  const span = (s) => s.starts_at
    ? `${clock(s.starts_at, timeZone)}${s.ends_at ? `–${clock(s.ends_at, timeZone)}` : ""}`
    : "";
  const slot = (label, s, none) => h("p", { class: "slot" },
    h("strong", {}, `${label}: `),
    s ? `${s.title} ` : none,
    s ? h("span", { class: "when" }, span(s)) : "",
    s ? h("button", { type: "button", class: "quiet chat-link", "aria-label": fill(T.chatAbout, { title: s.title }),
      onclick: () => section.onChat(s) }, T.chat) : "");

  function room(r, now) {
    const sessions = r.sessions;
    const current = sessions.find((s) => s.starts_at && new Date(s.starts_at) <= now && now < new Date(s.ends_at || s.starts_at));
    const next = sessions.find((s) => s.starts_at && new Date(s.starts_at) > now);
    const count = h("span", { class: "count" });
    const meter = h("meter", { min: 0, max: r.capacity || 1, "aria-hidden": "true" });
    const full = h("strong", { class: "full", hidden: true }, T.full);
    meters.set(r.id, (n) => {
      count.textContent = r.capacity
        ? fill(T.occupancy, { count: n, capacity: r.capacity })
        : fill(T.occupancyNoCapacity, { count: n });
      meter.value = n;
      full.hidden = !(r.capacity && n >= r.capacity);
    });
    meters.get(r.id)(0);
    return h("article", { class: "room", "aria-labelledby": `room-${r.id}` },
      h("h3", { id: `room-${r.id}` }, r.name, " ", full),
      h("p", { class: "occupancy" }, count, r.capacity ? meter : ""),
      slot(T.now, current, T.nothingNow),
      slot(T.next, next, T.nothingNext),
      sessions.length ? h("details", {},
        h("summary", {}, fill(T.fullSchedule, { room: r.name })),
        h("ol", { class: "sessions" }, ...sessions.map((s) =>
          h("li", {}, h("span", { class: "when" }, span(s)), " ", s.title)))) : "");
  }

  section.refresh = async () => {
    try {
      const [schedule, occupancy] = await Promise.all([
        fetch("/api/v1/schedule", { headers: { authorization: `Bearer ${token}` } }).then(ok),
        fetch("/api/v1/zones/occupancy").then(ok),
      ]);
      timeZone = schedule.event.timezone;
      const now = new Date();
      meters.clear();
      for (const r of schedule.rooms) names.set(r.id, r.name);
      const rooms = schedule.rooms.filter((r) => r.sessions.length || r.capacity);
      body.replaceChildren(...rooms.map((r) => room(r, now)));
      if (!rooms.length) body.append(h("p", { class: "help" }, T.noSchedule));
      for (const [zone, n] of Object.entries(occupancy.zones || {})) meters.get(zone)?.(n);
      section.onRooms(rooms);
    } catch {
      body.replaceChildren(h("p", { class: "error", role: "alert" }, T.scheduleUnavailable));
    }
  };
  section.occupancy = ({ zone, occupancy }) => meters.get(zone)?.(occupancy);
  section.zoneName = (id) => names.get(id) || id;
  return section;
}

/** The attendee's own registration: check-in state, privacy level, forgetting their history. */
function meSection(token) {
  const auth = { authorization: `Bearer ${token}` };
  const who = h("p", {});
  const checkin = h("p", {});
  const status = h("p", { id: "me-status", role: "status", class: "help" });
  const radios = {};
  const levels = ["precise", "zone", "venue", "hidden"];
  const choose = async (level) => {
    status.textContent = "";
    try {
      const r = await fetch("/api/v1/me/privacy", {
        method: "PUT",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({ level }),
      });
      status.textContent = r.ok ? T.saved : T.notSaved;
    } catch {
      status.textContent = T.notSaved;
    }
  };
  const fieldset = h("fieldset", { class: "choices" },
    h("legend", {}, T.privacyLegend),
    h("p", { class: "help" }, T.privacyHelp),
    ...levels.map((level) => {
      radios[level] = h("input", { type: "radio", name: "privacy", value: level, id: `privacy-${level}`,
        onchange: () => choose(level) });
      return h("label", { for: `privacy-${level}`, class: "choice" }, radios[level], T[`privacy_${level}`]);
    }));
  const forget = h("button", { type: "button", class: "secondary", onclick: async () => {
    if (!confirm(T.forgetConfirm)) return;
    try {
      const r = await fetch("/api/v1/me/location-history", { method: "DELETE", headers: auth });
      status.textContent = r.ok ? T.forgotten : T.notSaved;
    } catch {
      status.textContent = T.notSaved;
    }
  } }, T.forget);
  const el = h("section", { "aria-labelledby": "me-heading" },
    h("h2", { id: "me-heading" }, T.me), who, checkin, fieldset, forget, status);
  return {
    el,
    async refresh() {
      try {
        const me = await fetch("/api/v1/me", { headers: auth }).then(ok);
        who.textContent = me.company ? `${me.name}, ${me.company}` : me.name;
        checkin.textContent = me.checked_in_at
          ? fill(T.checkedIn, { time: clock(me.checked_in_at) })
          : T.notCheckedIn;
        if (radios[me.privacy]) radios[me.privacy].checked = true;
      } catch {
        status.textContent = T.notSaved;
      }
    },
  };
}

async function ok(response) {
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

/** Whether the token still opens the hub: a 401 means sign in again. */
async function tokenWorks(token) {
  try {
    const r = await fetch("/api/v1/channels/announcements/messages?limit=1", {
      headers: { authorization: `Bearer ${token}` },
    });
    return r.status !== 401;
  } catch {
    return true; // offline: keep the token, the hub retries
  }
}

async function start() {
  // The shell stays on the phone for dead spots (sw.js); the page works without it too.
  navigator.serviceWorker?.register("/sw.js").catch(() => {});
  document.title = T.title;
  document.getElementById("title").textContent = T.title;
  takeTokenFromUrl();
  const ticket = takeTicketFromUrl();
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) return signInView("", ticket);
  if (!(await tokenWorks(token))) return signOut(T.sessionEnded);
  homeView(token);
}

start();
