// The check-in desk (`/kiosk`): signs in once with the kiosk's device credentials, then checks
// people in by scan (a USB scanner types the code and Enter; the camera where the browser can)
// or by name search, and shows each result large, in colour, with an icon and a sound, so it is
// understood without reading. Scans go through a queue in IndexedDB (scans.js): nothing scanned
// while the appliance is unreachable is lost, and nothing is checked in twice.

import { basic, clock, h, savedCredentials } from "./page.js";
import { scanQueue } from "./scans.js";
import { canScan, scanTicket, ticketFrom } from "./scan.js";
import { fill, strings } from "./strings.js";

const T = strings();
const CREDENTIALS = "venue.kiosk"; // {id, password}: a kiosk is a dedicated device
const RECENT = 8; // results kept on screen
const BADGE_EVERY_MS = 1000; // how often a printing badge's state is looked at
const HEALTH_EVERY_MS = 10_000;
const main = document.getElementById("main");
const link = document.getElementById("link");

/** Whether the appliance takes these credentials: "ok", "wrong" or "unreachable". */
async function check(credentials) {
  try {
    const r = await fetch("/api/v1/attendees?q=-", { headers: { authorization: basic(credentials) }, cache: "no-store" });
    if (r.status === 401) return "wrong";
    return r.ok ? "ok" : "unreachable";
  } catch {
    return "unreachable";
  }
}

function signInView(notice) {
  link.textContent = "";
  const id = h("input", { id: "device-id", required: true, autocomplete: "username", autocapitalize: "none", spellcheck: "false" });
  const password = h("input", { id: "device-password", type: "password", required: true, autocomplete: "current-password" });
  const error = h("p", { class: "error", role: "alert" }, notice || "");
  const button = h("button", { type: "submit" }, T.signIn);
  main.replaceChildren(
    h("h2", {}, T.kioskSignIn),
    h("p", { class: "help" }, T.kioskSignInHelp),
    h("form", { onsubmit: async (e) => {
      e.preventDefault();
      button.disabled = true;
      const credentials = { id: id.value.trim(), password: password.value };
      const answer = await check(credentials);
      button.disabled = false;
      if (answer === "wrong") return (error.textContent = T.kioskWrong);
      if (answer === "unreachable") return (error.textContent = T.unreachable);
      localStorage.setItem(CREDENTIALS, JSON.stringify(credentials));
      deskView(credentials);
    } },
    h("label", { for: "device-id" }, T.deviceId, id),
    h("label", { for: "device-password" }, T.devicePassword, password),
    button, error));
  id.focus();
}

/** Short tones, so a result is known without looking: rising for welcome, two for already, low for unknown. */
let audio;
function sound(kind) {
  try {
    audio ??= new AudioContext();
    const tones = { welcome: [660, 880], already: [520, 520], unknown: [220], queued: [440] }[kind] || [];
    tones.forEach((hz, i) => {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = hz;
      osc.type = kind === "unknown" ? "square" : "sine";
      gain.gain.value = 0.15;
      osc.connect(gain).connect(audio.destination);
      const at = audio.currentTime + i * 0.18;
      osc.start(at);
      osc.stop(at + 0.15);
    });
  } catch {
    // No sound on this device: the colour, icon and text still say it.
  }
}

async function deskView(credentials) {
  const auth = () => basic(credentials);
  const result = h("section", { class: "result", "data-kind": "ready", role: "status", "aria-live": "assertive", "aria-atomic": "true" });
  const recent = h("ol", { class: "recent", "aria-label": T.recentCheckins });
  const queued = h("p", { class: "queued", role: "status" });
  const scanner = h("div", {});
  const code = h("input", { id: "scan", autocomplete: "off", autocapitalize: "characters", spellcheck: "false", enterkeyhint: "go" });
  const search = h("input", { id: "search", type: "search", autocomplete: "off" });
  const found = h("ul", { class: "found", "aria-label": T.searchResults });

  /** The big panel: `kind` is ready, welcome, already, unknown, queued or problem. */
  function show(kind, title, ...lines) {
    const icons = { welcome: "✓", already: "!", unknown: "✕", queued: "…", problem: "✕", ready: "" };
    result.dataset.kind = kind;
    result.replaceChildren(
      icons[kind] ? h("span", { class: "icon", "aria-hidden": "true" }, icons[kind]) : "",
      h("p", { class: "title" }, title),
      ...lines.filter(Boolean).map((line) => h("p", { class: "line" }, line)),
      h("p", { class: "line print", hidden: true }));
    if (kind !== "ready") sound(kind);
  }

  /** The badge line of the panel: the job's state as it changes, and a button to print or
   * reprint. Stops following once the panel shows another person. */
  async function badge(line, attendeeId, state) {
    const button = (label) => h("button", { type: "button", class: "secondary", onclick: async () => {
      // The scanner types into whatever has focus: back to the scan field, not this button.
      code.focus();
      line.replaceChildren(T.badgeSending);
      const r = await fetch("/api/v1/print/jobs", {
        method: "POST",
        headers: { authorization: auth(), "content-type": "application/json" },
        body: JSON.stringify({ attendee_id: attendeeId }),
      }).catch(() => null);
      const body = r ? await r.json().catch(() => null) : null;
      if (r?.status === 201) badge(line, attendeeId, { job_id: body.id, state: body.state });
      else line.replaceChildren(fill(T.badgeNone, { detail: body?.error?.message || T.unreachable }), " ", button(label));
    } }, label);
    line.hidden = false;
    if (state.state === "available") return line.replaceChildren(button(T.printBadge));
    if (state.state === "not_printed") return line.replaceChildren(fill(T.badgeNone, { detail: state.detail }));
    let job = state;
    for (;;) {
      if (!line.isConnected) return;
      if (job.state === "done") return line.replaceChildren(T.badgePrinted, " ", button(T.reprintBadge));
      if (job.state === "failed" || job.state === "cancelled") {
        return line.replaceChildren(fill(T.badgeFailed, { detail: job.detail || job.state }), " ", button(T.reprintBadge));
      }
      line.replaceChildren(job.detail ? fill(T.badgeWaiting, { detail: job.detail }) : T.badgePrinting);
      await new Promise((next) => setTimeout(next, BADGE_EVERY_MS));
      const r = await fetch(`/api/v1/print/jobs/${state.job_id}`, { headers: { authorization: auth() } }).catch(() => null);
      if (r?.ok) job = await r.json();
    }
  }

  function answered(scan, status, body) {
    const a = body.attendee;
    const who = a ? (a.company ? `${a.name}, ${a.company}` : a.name) : scan.label;
    let kind;
    if (status === 201) {
      kind = "welcome";
      show(kind, fill(T.welcome, { name: a.name }), a.company);
    } else if (status === 200 && body.already_checked_in) {
      kind = "already";
      show(kind, fill(T.alreadyCheckedIn, { name: a.name }),
        fill(T.checkedInWhenWhere, { time: clock(body.checked_in_at), device: body.device_id }));
    } else if (status === 200) {
      kind = "welcome"; // a retry the appliance had already answered: the first answer
      show(kind, fill(T.welcome, { name: a.name }), a.company);
    } else if (status === 404) {
      kind = "unknown";
      show(kind, T.unknownTicket, scan.label, T.unknownTicketHelp);
    } else {
      kind = "problem";
      show(kind, T.scanRefused, body.error?.message);
    }
    if (a && body.badge && (kind === "welcome" || kind === "already")) {
      badge(result.querySelector(".print"), a.id, body.badge);
    }
    recent.prepend(h("li", { "data-kind": kind },
      h("span", { class: "icon", "aria-hidden": "true" }, { welcome: "✓", already: "!", unknown: "✕", problem: "✕" }[kind]),
      h("span", {}, `${T[`result_${kind}`]}: ${who}`),
      h("time", { datetime: scan.at }, clock(scan.at))));
    while (recent.children.length > RECENT) recent.lastChild.remove();
  }

  const queue = await scanQueue({
    auth,
    answered,
    waiting: (count, reachable) => {
      queued.textContent = count ? fill(count === 1 ? T.scanWaiting : T.scansWaiting, { count }) : "";
      link.textContent = reachable ? T.linkLive : T.kioskOffline;
      link.dataset.state = reachable ? "live" : "offline";
      if (count && !reachable && result.dataset.kind !== "queued") {
        show("queued", T.scanKept, T.scanKeptHelp);
      }
    },
    refused: () => {
      localStorage.removeItem(CREDENTIALS);
      signInView(T.kioskRevoked);
    },
  });

  async function checkIn(body, label) {
    await queue.add(body, label);
  }

  async function find() {
    const q = search.value.trim();
    if (!q) return;
    let people = [];
    try {
      const r = await fetch(`/api/v1/attendees?${new URLSearchParams({ q })}`, { headers: { authorization: auth() } });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      people = (await r.json()).attendees;
    } catch {
      found.replaceChildren(h("li", { class: "error" }, T.searchFailed));
      return;
    }
    found.replaceChildren(...people.map((a) => h("li", {},
      h("span", { class: "name" }, a.company ? `${a.name}, ${a.company}` : a.name),
      h("span", { class: "state" }, a.checked_in_at ? fill(T.checkedInAt, { time: clock(a.checked_in_at) }) : a.ticket_code || ""),
      h("button", { type: "button", "aria-label": fill(T.checkInName, { name: a.name }), onclick: () => {
        found.replaceChildren();
        search.value = "";
        checkIn({ attendee_id: a.id }, a.name);
        code.focus();
      } }, T.checkIn))));
    if (!people.length) found.append(h("li", { class: "help" }, T.kioskNobody));
  }

  const cameraButton = canScan() ? h("button", { type: "button", class: "secondary", onclick: async () => {
    const ticket = await scanTicket(h, scanner, queued);
    if (ticket) checkIn({ ticket_code: ticket }, ticket);
    code.focus();
  } }, T.scanWithCamera) : "";

  main.replaceChildren(
    h("div", { class: "desk" },
      h("div", { class: "inputs" },
        h("form", { onsubmit: (e) => {
          e.preventDefault();
          const ticket = ticketFrom(code.value);
          code.value = "";
          if (ticket) checkIn({ ticket_code: ticket }, ticket);
        } },
        h("label", { for: "scan" }, T.scanLabel, code),
        h("button", { type: "submit" }, T.checkIn)),
        cameraButton, scanner,
        h("form", { role: "search", onsubmit: (e) => { e.preventDefault(); find(); } },
          h("label", { for: "search" }, T.searchLabel, search),
          h("button", { type: "submit" }, T.find)),
        found),
      h("div", { class: "outputs" }, result, queued,
        h("h2", {}, T.recentCheckins), recent)),
    h("button", { type: "button", class: "quiet", onclick: () => {
      if (!confirm(T.kioskSignOutConfirm)) return;
      localStorage.removeItem(CREDENTIALS);
      signInView();
    } }, fill(T.kioskSignOut, { id: credentials.id })));
  show("ready", T.readyToScan, T.readyToScanHelp);
  code.focus();
  // A scanner types into whatever has focus: bring it back to the scan field after a click
  // elsewhere, unless the click was into another field.
  document.addEventListener("click", (e) => {
    if (!e.target.closest("input, select, textarea, button, details")) code.focus();
  });
  window.addEventListener("online", () => queue.retry());
  setInterval(async () => {
    // Notices the appliance going and coming back when nothing is queued, too.
    const up = await fetch("/healthz", { cache: "no-store" }).then((r) => r.ok, () => false);
    link.textContent = up ? T.linkLive : T.kioskOffline;
    link.dataset.state = up ? "live" : "offline";
    if (up) queue.retry();
  }, HEALTH_EVERY_MS);
  queue.send(); // scans kept from before a reload
}

/** Credentials handed over in the address's fragment (`#id=…&password=…`: the QR code the
 * console shows when venue IT registers the kiosk), kept and taken out of the address bar. */
function takeCredentialsFromUrl() {
  const given = new URLSearchParams(location.hash.slice(1));
  if (!given.get("id") || !given.get("password")) return;
  localStorage.setItem(CREDENTIALS, JSON.stringify({ id: given.get("id"), password: given.get("password") }));
  history.replaceState(null, "", location.pathname + location.search);
}

async function start() {
  navigator.serviceWorker?.register("/sw.js").catch(() => {});
  document.title = T.kioskTitle;
  document.getElementById("title").textContent = T.kioskTitle;
  takeCredentialsFromUrl();
  const credentials = savedCredentials(CREDENTIALS);
  if (!credentials) return signInView();
  // Offline at start: keep the credentials and work from the queue; a 401 signs out later.
  if ((await check(credentials)) === "wrong") {
    localStorage.removeItem(CREDENTIALS);
    return signInView(T.kioskRevoked);
  }
  deskView(credentials);
}

start();
