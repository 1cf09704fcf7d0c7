// The attendee app: sign in with a ticket code, then the venue's live announcements.
// Plain ES modules, no framework: the page must load fast from the appliance over busy WiFi.

import { Hub } from "./hub.js";
import { fill, strings } from "./strings.js";

const T = strings();
const TOKEN_KEY = "venue.token";
const main = document.getElementById("main");
const link = document.getElementById("link");

/** An element with attributes and children (strings become text, never HTML). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) el.setAttribute(k, v === true ? "" : v);
  }
  el.append(...children);
  return el;
}

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

function signInView(notice) {
  link.textContent = "";
  const error = h("p", { id: "sign-in-error", class: "error", role: "alert" });
  const ticket = h("input", { id: "ticket", name: "ticket_code", required: true, autocomplete: "off", autocapitalize: "characters", spellcheck: "false" });
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
  signInView(notice);
}

function homeView(token) {
  const feed = h("ol", { class: "feed", "aria-label": T.announcements });
  const empty = h("p", { class: "help" }, T.noAnnouncements);
  show(
    h("h2", {}, T.announcements),
    empty,
    feed,
    h("button", { class: "quiet", type: "button", onclick: () => { hub.stop(); signOut(); } }, T.signOut),
  );
  const states = { connecting: T.linkConnecting, live: T.linkLive, offline: T.linkOffline };
  const hub = new Hub(token, {
    state: (s) => { link.textContent = states[s]; link.dataset.state = s; },
    ended: () => signOut(T.sessionEnded),
    message: (channel, m) => {
      if (channel !== "announcements") return;
      empty.remove();
      const item = h("li", { "data-seq": m.seq },
        h("time", { datetime: m.created_at }, new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
        m.content);
      // Newest first, whatever order resumed and live messages arrive in.
      const after = [...feed.children].find((li) => Number(li.dataset.seq) < m.seq);
      feed.insertBefore(item, after || null);
    },
  });
  hub.subscribe(["announcements"]);
  hub.start();
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
  document.title = T.title;
  document.getElementById("title").textContent = T.title;
  takeTokenFromUrl();
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) return signInView();
  if (!(await tokenWorks(token))) return signOut(T.sessionEnded);
  homeView(token);
}

start();
