// A room's display (`/signage/{display}`), for a TV or a Raspberry Pi in kiosk mode at the door,
// unattended for days. It signs in as its signage device, loads its view
// (`GET /api/v1/signage/{display}`: content, room, sessions, announcements, the app's address),
// then follows it live over MQTT over WebSocket with the device's own credentials: its content
// manifest, the room's occupancy and announcements. It reconnects by itself forever; every update
// replaces what it changes, so the page's memory stays flat however long it runs.

import { connectMqtt } from "./mqtt.js";
import { basic, clock, h, savedCredentials } from "./page.js";
import { fill, strings } from "./strings.js";

const T = strings();
const CREDENTIALS = "venue.signage"; // {id, password}: a display is a dedicated device
const ANNOUNCEMENTS = 3; // shown at once
const RELOAD_VIEW_MS = 10 * 60_000; // sessions edited in the admin API (they are not on MQTT)
const POLL_MS = 15_000; // without MQTT, the view is read this often instead
const main = document.getElementById("main");
const display = decodeURIComponent(location.pathname.split("/")[2] || "");

function setupView(notice) {
  const id = h("input", { id: "device-id", required: true, value: display, autocapitalize: "none", spellcheck: "false" });
  const password = h("input", { id: "device-password", type: "password", required: true });
  main.replaceChildren(
    h("h1", {}, fill(T.signageSetup, { display })),
    h("p", {}, T.signageSetupHelp),
    h("form", { class: "setup", onsubmit: (e) => {
      e.preventDefault();
      const credentials = { id: id.value.trim(), password: password.value };
      localStorage.setItem(CREDENTIALS, JSON.stringify(credentials));
      run(credentials);
    } },
    h("label", { for: "device-id" }, T.deviceId, id),
    h("label", { for: "device-password" }, T.devicePassword, password),
    h("button", { type: "submit" }, T.signIn),
    notice ? h("p", { class: "error", role: "alert" }, notice) : ""));
}

/** The display's parts, made once; updates change their text, never add to them. */
function screen() {
  const title = h("h1", {});
  const clock = h("p", { class: "clock", "aria-label": T.timeNow });
  const message = h("p", { class: "message", hidden: true });
  const slot = (label) => {
    const t = h("p", { class: "title" });
    const w = h("p", { class: "when" });
    return { el: h("section", { class: "slot" }, h("p", { class: "label" }, label), t, w), title: t, when: w };
  };
  const now = slot(T.now);
  const next = slot(T.next);
  const count = h("p", { class: "count" });
  const full = h("p", { class: "full", hidden: true }, T.roomFull);
  const meter = h("meter", { min: 0, max: 1, value: 0, "aria-hidden": "true" });
  const occupancy = h("section", { class: "occupancy", "aria-live": "polite" }, full, count, meter);
  const announcements = h("ol", { class: "announcements", "aria-label": T.announcements, "aria-live": "polite" });
  const qr = h("img", { alt: T.appQr, src: "/api/v1/app-qr.svg" });
  const link = h("span", { class: "link" });
  const state = h("span", { class: "state", role: "status" });
  main.replaceChildren(
    h("header", { class: "sign" }, title, clock),
    h("div", { class: "body" },
      h("div", { class: "sessions" }, message, now.el, next.el),
      h("div", { class: "side" }, occupancy, announcements)),
    h("footer", { class: "sign" }, qr, h("span", {}, T.openTheApp, " ", link), state));
  return { title, clock, message, now, next, count, full, meter, occupancy, announcements, link, state };
}

async function run(credentials) {
  const ui = screen();
  let view = null;
  let mqtt = null;
  let capacity = 0;
  const items = []; // the announcements shown, newest first: {key, el}

  async function load() {
    let r;
    try {
      r = await fetch(`/api/v1/signage/${encodeURIComponent(display)}`, {
        headers: { authorization: basic(credentials) }, cache: "no-store",
      });
    } catch {
      ui.state.textContent = T.signageOffline;
      return false;
    }
    if (r.status === 401 || r.status === 403) {
      localStorage.removeItem(CREDENTIALS);
      mqtt?.stop();
      setupView(T.signageRefused);
      return false;
    }
    if (!r.ok) return false;
    view = await r.json();
    render();
    return true;
  }

  function render() {
    const c = view.content || {};
    const room = view.room;
    document.title = c.title || room?.name || display;
    ui.title.textContent = c.title || room?.name || view.event?.name || display;
    ui.message.textContent = typeof c.message === "string" ? c.message : "";
    ui.message.hidden = !ui.message.textContent;
    capacity = room?.capacity || 0;
    ui.meter.max = capacity || 1;
    ui.occupancy.hidden = !room;
    ui.link.textContent = view.app_url;
    for (const m of view.announcements || []) announce(m);
    tick();
  }

  function occupied(n) {
    const full = capacity > 0 && n >= capacity;
    ui.count.textContent = capacity ? fill(T.occupancy, { count: n, capacity }) : fill(T.occupancyNoCapacity, { count: n });
    ui.meter.value = n;
    ui.full.hidden = !full;
    ui.occupancy.dataset.full = String(full);
  }

  function announce(m) {
    const key = m.message_id || `${m.seq}`;
    if (items.some((i) => i.key === key)) return;
    // From the view a message has `created_at`; bridged to MQTT, the envelope's `ts`.
    const at = m.created_at || m.ts;
    const el = h("li", {}, at ? h("time", { datetime: at }, clock(at, view?.event?.timezone)) : "", m.content);
    items.unshift({ key, el });
    ui.announcements.prepend(el);
    while (items.length > ANNOUNCEMENTS) items.pop().el.remove();
  }

  /** The clock, and what is on now and next in the room (both move with time). */
  function tick() {
    const zone = view?.event?.timezone;
    ui.clock.textContent = clock(new Date().toISOString(), zone);
    const sessions = view?.room?.sessions || [];
    const at = new Date();
    const current = sessions.find((s) => s.starts_at && new Date(s.starts_at) <= at && at < new Date(s.ends_at || s.starts_at));
    const next = sessions.find((s) => s.starts_at && new Date(s.starts_at) > at);
    const show = (slot, s, none) => {
      slot.title.textContent = s ? s.title : none;
      slot.when.textContent = s ? `${clock(s.starts_at, zone)}${s.ends_at ? `–${clock(s.ends_at, zone)}` : ""}${s.speakers ? ` · ${s.speakers}` : ""}` : "";
    };
    show(ui.now, current, T.nothingNow);
    show(ui.next, next, T.nothingNext);
  }

  function listen() {
    mqtt?.stop();
    mqtt = null;
    if (!view.mqtt) return;
    const prefix = view.mqtt.topic_prefix;
    const zone = view.content?.zone;
    const status = `${prefix}signage/${credentials.id}/status`;
    const topics = [`${prefix}signage/${display}/content`, `${prefix}hub/announcements`];
    if (zone) topics.push(`${prefix}presence/${zone}`);
    mqtt = connectMqtt({
      url: `ws://${location.hostname}:${view.mqtt.ws_port}/`,
      clientId: credentials.id, // the broker takes a device only under its own id
      username: credentials.id,
      password: credentials.password,
      will: { topic: status, payload: JSON.stringify({ v: 1, state: "lost" }) },
      topics,
      on: {
        state: (s) => {
          ui.state.textContent = s === "live" ? "" : T.signageOffline;
          if (s === "live") mqtt?.publish(status, JSON.stringify({ v: 1, state: "ready", display }), true);
        },
        message: (topic, text) => received(topic.slice(prefix.length), text),
      },
    });
  }

  function received(path, text) {
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      return; // not ours to show
    }
    if (path === `signage/${display}/content`) {
      const content = body?.content ?? null;
      const zoneChanged = (content?.zone || null) !== (view.content?.zone || null);
      view.content = content;
      // Another room: its sessions and occupancy come with a fresh view and subscription.
      if (zoneChanged) load().then((ok) => ok && listen());
      else render();
    } else if (path.startsWith("presence/") && typeof body?.occupancy === "number") {
      occupied(body.occupancy);
    } else if (path === "hub/announcements" && body?.content) {
      announce(body);
    }
  }

  if (!(await load())) {
    if (!view) return setTimeout(() => run(credentials), POLL_MS); // unreachable: try again
  }
  fetch("/api/v1/zones/occupancy").then((r) => r.json()).then((o) => {
    const n = o.zones?.[view.content?.zone];
    if (typeof n === "number") occupied(n);
  }, () => {});
  occupied(0);
  listen();
  setInterval(tick, 1000);
  setInterval(() => load(), view.mqtt ? RELOAD_VIEW_MS : POLL_MS);
}

navigator.serviceWorker?.register("/sw.js").catch(() => {});
// Credentials handed over in the fragment (the QR code the console shows at registration).
const given = new URLSearchParams(location.hash.slice(1));
if (given.get("password")) {
  localStorage.setItem(CREDENTIALS, JSON.stringify({ id: given.get("id") || display, password: given.get("password") }));
  history.replaceState(null, "", location.pathname + location.search);
}
const credentials = savedCredentials(CREDENTIALS);
if (credentials) run(credentials);
else setupView();
