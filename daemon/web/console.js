// Venue IT's console (`/console`): is the box fine? Health at a glance (each subsystem with its
// reason, the appliance, sync, the replica, devices online or not, beacons with low batteries,
// alerts, badge printers), live from `GET /api/v1/admin/overview/stream`; and the few things venue
// IT does: import attendees, register a kiosk or display (its password once, with a QR code that
// sets the device up), add a badge printer, set a display's content, retry parked sync ops, post an announcement. Everything
// goes through the admin API with the admin token.

import { h, newKey } from "./page.js";
import { fill, strings } from "./strings.js";

const T = strings();
const TOKEN = "venue.admin"; // kept for this browser tab only
const main = document.getElementById("main");
const link = document.getElementById("link");

function signInView(notice) {
  link.textContent = "";
  const token = h("input", { id: "admin-token", type: "password", required: true, autocomplete: "current-password" });
  const error = h("p", { class: "error", role: "alert" }, notice || "");
  main.replaceChildren(
    h("h2", {}, T.consoleSignIn),
    h("p", { class: "help" }, T.consoleSignInHelp),
    h("form", { onsubmit: async (e) => {
      e.preventDefault();
      const value = token.value.trim();
      const r = await fetch("/api/v1/admin/overview", { headers: { authorization: `Bearer ${value}` } }).catch(() => null);
      if (!r) return (error.textContent = T.unreachable);
      if (r.status === 401) return (error.textContent = T.consoleWrongToken);
      if (r.status === 429) return (error.textContent = fill(T.tooManyAttempts, { secs: r.headers.get("retry-after") || "60" }));
      sessionStorage.setItem(TOKEN, value);
      consoleView(value);
    } },
    h("label", { for: "admin-token" }, T.adminToken, token),
    h("button", { type: "submit" }, T.signIn), error));
  token.focus();
}

const ago = (instant) => {
  if (!instant) return "";
  const secs = Math.max(0, Math.round((Date.now() - new Date(instant)) / 1000));
  return secs < 90 ? fill(T.secsAgo, { n: secs }) : secs < 5400 ? fill(T.minsAgo, { n: Math.round(secs / 60) }) : new Date(instant).toLocaleString();
};
const bytes = (n) => (n == null ? T.unknown : n > 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${(n / 1e6).toFixed(0)} MB`);
const duration = (secs) => (secs < 3600 ? `${Math.round(secs / 60)} min` : `${(secs / 3600).toFixed(1)} h`);
const stateCell = (state, text) => h("td", { class: `state-${state || "unknown"}` }, text ?? T[`state_${state}`] ?? state ?? T.unknown);

function card(title, ...children) {
  const id = `card-${title.toLowerCase().replace(/\W+/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

function table(caption, head, rows) {
  return h("table", {}, h("caption", { class: "help" }, caption),
    h("thead", {}, h("tr", {}, ...head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, ...rows));
}

function consoleView(token) {
  const auth = { authorization: `Bearer ${token}` };
  const health = h("div", { class: "cards" });
  const actions = h("div", { class: "cards" });
  main.replaceChildren(h("h2", { class: "help" }, T.consoleHealth), health, h("h2", {}, T.consoleActions), actions,
    h("button", { type: "button", class: "quiet", onclick: () => { sessionStorage.removeItem(TOKEN); location.reload(); } }, T.signOut));

  /** Calls the admin API; the answer's status and JSON body (or null). */
  async function call(method, path, body, headers = {}) {
    const r = await fetch(path, { method, headers: { ...auth, ...headers }, body }).catch(() => null);
    if (!r) return { status: 0, body: null };
    if (r.status === 401) signInView(T.consoleWrongToken);
    return { status: r.status, body: r.status === 204 ? null : await r.json().catch(() => null) };
  }

  function render(o) {
    const s = o.status;
    const subsystems = Object.entries(s.subsystems).map(([name, st]) =>
      h("tr", {}, h("th", { scope: "row" }, name), stateCell(st.state), h("td", {}, st.detail || "")));
    const sync = s.sync.enabled ? s.sync.agent : null;
    const replica = s.replica.enabled ? s.replica.state : null;
    const devices = o.devices.filter((d) => !d.revoked_at).map((d) => {
      const online = d.state === "ready" ? "ready" : d.state ? (d.state === "lost" ? "offline" : d.state) : null;
      return h("tr", { "data-device": d.id }, h("th", { scope: "row" }, d.id), h("td", {}, T[`kind_device_${d.kind}`] || d.kind),
        h("td", {}, d.name), stateCell(online, online ? (online === "ready" ? T.online : online === "offline" ? T.offline : online) : T.neverSeen),
        h("td", {}, ago(d.state_at)));
    });
    const printers = Object.entries(s.print.printers).map(([id, p]) =>
      h("tr", { "data-printer": id }, h("th", { scope: "row" }, id),
        stateCell(p.needs_attention ? "offline" : "ok", T[`state_${p.state}`] || p.state),
        h("td", {}, [...p.reasons, p.message].filter(Boolean).join("; ") || (p.needs_attention ? T.needsAttention : "")),
        h("td", {}, p.markers.map((m) => `${m.name} ${m.level < 0 ? "?" : `${m.level} %`}`).join(", ")),
        h("td", {}, ago(p.checked_at))));
    const jobs = s.print.jobs;
    const system = s.system;
    health.replaceChildren(
      // A refused provisioning file comes first: the box runs on its earlier configuration, and
      // venue IT must know that what they wrote on the boot partition did not take.
      system.provisioning_error ? h("section", { class: "card refused", role: "alert", "aria-labelledby": "card-provisioning" },
        h("h2", { id: "card-provisioning" }, T.provisioningRefused), h("p", {}, T.provisioningRefusedHelp),
        h("pre", { class: "problems" }, system.provisioning_error)) : "",
      card(T.consoleAppliance, h("dl", {},
        h("dt", {}, T.event), h("dd", {}, s.event_id),
        h("dt", {}, T.version), h("dd", {}, s.version),
        ...(system.image_version || system.slot ? [h("dt", {}, T.image),
          h("dd", {}, fill(T.imageValue, { version: system.image_version || "?", slot: system.slot || "?" }))] : []),
        h("dt", {}, T.uptime), h("dd", {}, duration(s.uptime_secs)),
        h("dt", {}, T.diskFree), h("dd", {}, bytes(o.disk_free_bytes)),
        h("dt", {}, T.node), h("dd", {}, s.node_id))),
      card(T.consoleSubsystems, table(T.consoleSubsystemsCaption, [T.subsystem, T.state, T.reason], subsystems)),
      card(T.consoleSync, h("dl", {},
        h("dt", {}, T.syncRelay), h("dd", {}, sync ? sync.relay : T.syncOff),
        h("dt", {}, T.syncBacklog), h("dd", {}, fill(T.opsWaiting, { n: s.outbox.ops })),
        h("dt", {}, T.syncLastContact), h("dd", {}, sync?.last_pull_ok_ms ? ago(sync.last_pull_ok_ms) : T.never),
        h("dt", {}, T.syncParked), h("dd", {}, String(o.parked_ops)),
        h("dt", {}, T.replica), h("dd", {}, replica ? fill(T.replicaLag, { txids: replica.lag_txids, secs: Math.round(replica.lag_secs) }) : T.replicaOff)),
        sync ? h("button", { type: "button", class: "secondary", onclick: async () => {
          const r = await call("POST", "/api/v1/admin/sync/retry");
          syncResult.textContent = r.status === 202 ? T.syncRetried : T.failed;
        } }, T.syncRetry) : "", syncResult,
        h("h3", {}, T.peers),
        s.peers.enabled ? table(T.peersCaption, [T.peer, T.state, T.peerLag, T.syncLastContact], peers(s.peers.peers, s.node_id))
          : h("p", { class: "help" }, T.peersOff)),
      card(T.consoleDevices, table(T.consoleDevicesCaption, [T.device, T.kind, T.name, T.state, T.since], devices)),
      card(T.consoleBeacons,
        o.scanners.length ? table(T.scannersCaption, [T.scanner, T.advertsPerSec, T.lastSeen],
          o.scanners.map((sc) => h("tr", {}, h("th", { scope: "row" }, sc.scanner), h("td", {}, String(sc.adverts_per_sec)),
            h("td", {}, sc.last_seen_ms ? ago(sc.last_seen_ms) : T.never)))) : h("p", { class: "help" }, T.noScanners),
        h("p", {}, fill(T.watchdogRestarts, { n: o.ble_watchdog_restarts })),
        h("p", {}, fill(T.beaconsHeard, { n: o.beacons.heard })),
        o.beacons.low_battery.length
          ? h("ul", {}, ...o.beacons.low_battery.map((b) => h("li", { class: "state-degraded" }, fill(T.lowBattery, { beacon: b.beacon, mv: b.battery_mv }))))
          : h("p", { class: "help" }, T.noLowBattery)),
      card(T.consolePrinters,
        printers.length ? table(T.printersCaption, [T.printer, T.state, T.reason, T.supplies, T.checked], printers)
          : h("p", { class: "help" }, T.noPrinters),
        h("p", {}, fill(T.printJobs, { queued: (jobs.queued || 0) + (jobs.sending || 0), printing: jobs.printing || 0,
          done: jobs.done || 0, failed: jobs.failed || 0 }))),
      card(T.consoleAlerts, o.alerts.length
        ? h("ul", {}, ...o.alerts.map((a) => h("li", {}, h("strong", {}, `${a.severity}: `), `${a.message} (${a.source}, ${ago(a.raised_at)})`)))
        : h("p", { class: "help" }, T.noAlerts),
        h("h3", {}, T.conflicts),
        o.conflicts.length
          ? h("ul", {}, ...o.conflicts.map((c) => h("li", {}, fill(T.conflict, { kind: c.kind, entity: c.entity_id }))))
          : h("p", { class: "help" }, T.noConflicts)));
  }
  const syncResult = h("p", { class: "result", role: "status" });

  /** The venue's other boxes: whether this one reaches them, and how far behind it is. */
  function peers(list, self) {
    return list.filter((p) => p.node !== self).map((p) => {
      const state = p.connected && !p.last_error ? "ok" : p.refused ? "failed" : "offline";
      const label = state === "ok" ? T.peerOk : state === "failed" ? T.peerRefused : T.peerUnreachable;
      return h("tr", { "data-peer": p.url }, h("th", { scope: "row" }, p.url),
        stateCell(state, p.last_error ? `${label}: ${p.last_error}` : label),
        h("td", {}, p.last_contact_ms ? fill(T.peerLagValue, { ops: p.lag_ops, secs: p.lag_secs ?? "?" }) : ""),
        h("td", {}, p.last_contact_ms ? ago(p.last_contact_ms) : T.never));
    });
  }

  /** The overview, live: a stream read with fetch (so the token goes in a header). */
  async function follow() {
    let delay = 1000;
    for (;;) {
      try {
        const r = await fetch("/api/v1/admin/overview/stream", { headers: auth, cache: "no-store" });
        if (r.status === 401) return signInView(T.consoleWrongToken);
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        link.textContent = T.linkLive;
        delay = 1000;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let text = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
          let end;
          while ((end = text.indexOf("\n\n")) >= 0) {
            const block = text.slice(0, end);
            text = text.slice(end + 2);
            const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
            if (data) render(JSON.parse(data));
          }
        }
      } catch {
        // Reconnect below.
      }
      link.textContent = T.consoleOffline;
      await new Promise((next) => setTimeout(next, delay));
      delay = Math.min(30_000, delay * 2);
    }
  }

  actions.append(importCard(call), registerCard(call), printerCard(call), signageCard(call), announceCard(call));
  follow();
}

function importCard(call) {
  const file = h("input", { id: "import-file", type: "file", accept: ".csv,.json,text/csv,application/json" });
  const result = h("div", { role: "status" });
  return card(T.importTitle, h("p", { class: "help" }, T.importHelp),
    h("form", { onsubmit: async (e) => {
      e.preventDefault();
      const f = file.files[0];
      if (!f) return;
      const json = f.name.toLowerCase().endsWith(".json") || f.type === "application/json";
      const r = await call("POST", "/api/v1/admin/attendees/import", await f.text(),
        { "content-type": json ? "application/json" : "text/csv" });
      if (r.status === 200 || r.status === 201) {
        result.replaceChildren(h("p", { class: "result" }, fill(T.imported, { n: r.body.imported })));
      } else {
        // "import refused, nothing was written (2 problem(s)): line 3: …; line 5: …": one line each.
        const message = r.body?.error?.message || T.failed;
        const at = message.indexOf("): ");
        const problems = at >= 0 ? message.slice(at + 3).split("; ") : [];
        result.replaceChildren(h("p", { class: "error" }, at >= 0 ? message.slice(0, at + 1) : message),
          problems.length ? h("ul", { class: "problems", "aria-label": T.importProblems },
            ...problems.map((p) => h("li", {}, p))) : "");
      }
    } }, h("label", { for: "import-file" }, T.importFile, file), h("button", { type: "submit" }, T.importButton)),
    result);
}

function registerCard(call) {
  const id = h("input", { id: "device-new-id", required: true, autocapitalize: "none", spellcheck: "false" });
  const name = h("input", { id: "device-new-name", required: true });
  const kind = h("select", { id: "device-new-kind" },
    ...["kiosk", "signage", "gateway"].map((k) => h("option", { value: k }, T[`kind_device_${k}`])));
  const shown = h("div", { role: "status" });
  return card(T.registerTitle, h("p", { class: "help" }, T.registerHelp),
    h("form", { onsubmit: async (e) => {
      e.preventDefault();
      const r = await call("POST", "/api/v1/admin/devices",
        JSON.stringify({ id: id.value.trim(), kind: kind.value, name: name.value.trim() }), { "content-type": "application/json" });
      if (r.status !== 201) {
        shown.replaceChildren(h("p", { class: "error" }, r.body?.error?.message || T.failed));
        return;
      }
      const setup = r.body.setup;
      // Shown once: nothing keeps it, and the appliance stores only its hash.
      shown.replaceChildren(h("div", { class: "once" },
        h("p", {}, fill(T.registered, { id: r.body.device.id })),
        h("p", {}, T.passwordOnce, " ", h("code", { class: "password" }, r.body.password)),
        setup ? h("img", { class: "setup-qr", alt: fill(T.setupQr, { id: r.body.device.id }),
          src: `data:image/svg+xml;base64,${btoa(setup.qr_svg)}` }) : "",
        setup ? h("p", { class: "help" }, T.setupHelp) : "",
        h("button", { type: "button", class: "secondary", onclick: () => shown.replaceChildren() }, T.passwordNoted)));
      id.value = "";
      name.value = "";
    } },
    h("label", { for: "device-new-id" }, T.deviceId, id),
    h("label", { for: "device-new-kind" }, T.kind, kind),
    h("label", { for: "device-new-name" }, T.name, name),
    h("button", { type: "submit" }, T.registerButton)),
    shown);
}

/** Label sizes offered for a new printer, in millimetres. */
const MEDIA = { "4x3": [101.6, 76.2], "4x6": [101.6, 152.4], a6: [105, 148] };

function printerCard(call) {
  const id = h("input", { id: "printer-id", required: true, autocapitalize: "none", spellcheck: "false" });
  const kind = h("select", { id: "printer-kind" },
    ...["ipp", "zpl"].map((k) => h("option", { value: k }, T[`kind_printer_${k}`])));
  const uri = h("input", { id: "printer-uri", required: true, autocapitalize: "none", spellcheck: "false",
    placeholder: "ipp://10.0.0.21:631/ipp/print" });
  kind.addEventListener("change", () => {
    uri.placeholder = kind.value === "zpl" ? "tcp://10.0.0.22:9100" : "ipp://10.0.0.21:631/ipp/print";
  });
  const kiosks = h("input", { id: "printer-kiosks", autocapitalize: "none", spellcheck: "false" });
  const media = h("select", { id: "printer-media" },
    ...Object.keys(MEDIA).map((m) => h("option", { value: m }, T[`media_${m}`])));
  const result = h("p", { role: "status", class: "result" });
  const found = h("ul", { class: "found", "aria-label": T.printersFound });
  const find = h("button", { type: "button", class: "secondary", onclick: async () => {
    find.disabled = true;
    found.replaceChildren(h("li", { class: "help" }, T.printersSearching));
    const r = await call("GET", "/api/v1/admin/printers/discover?secs=4");
    find.disabled = false;
    const printers = r.status === 200 ? r.body.printers : null;
    if (!printers) return found.replaceChildren(h("li", { class: "error" }, r.body?.error?.message || T.failed));
    if (!printers.length) return found.replaceChildren(h("li", { class: "help" }, T.printersNone));
    found.replaceChildren(...printers.map((p) => h("li", {},
      h("button", { type: "button", class: "quiet", onclick: () => {
        kind.value = "ipp";
        uri.value = p.uri;
        found.replaceChildren();
        id.focus();
      } }, fill(T.printerUse, { name: p.name.split("._")[0], model: p.model || "", uri: p.uri })))));
  } }, T.printersFind);
  return card(T.printerTitle, h("p", { class: "help" }, T.printerHelp), find, found,
    h("form", { onsubmit: async (e) => {
      e.preventDefault();
      const [width_mm, height_mm] = MEDIA[media.value];
      const body = {
        id: id.value.trim(), kind: kind.value, uri: uri.value.trim(), media: { width_mm, height_mm },
        kiosks: kiosks.value.split(",").map((k) => k.trim()).filter(Boolean),
      };
      const r = await call("POST", "/api/v1/admin/printers", JSON.stringify(body), { "content-type": "application/json" });
      if (r.status === 201) {
        result.textContent = fill(T.printerAdded, { id: body.id });
        id.value = uri.value = kiosks.value = "";
      } else {
        result.textContent = r.body?.error?.message || T.failed;
      }
    } },
    h("label", { for: "printer-id" }, T.printerId, id),
    h("label", { for: "printer-kind" }, T.printerKind, kind),
    h("label", { for: "printer-uri" }, T.printerUri, uri),
    h("label", { for: "printer-kiosks" }, T.printerKiosks, kiosks),
    h("label", { for: "printer-media" }, T.printerMedia, media),
    h("button", { type: "submit" }, T.printerButton)), result);
}

function signageCard(call) {
  const display = h("input", { id: "signage-display", required: true, autocapitalize: "none", spellcheck: "false" });
  const manifest = h("textarea", { id: "signage-content", required: true, spellcheck: "false" }, '{"zone": "hall-a", "message": ""}');
  const result = h("p", { role: "status", class: "result" });
  return card(T.signageTitle, h("p", { class: "help" }, T.signageHelp),
    h("form", { onsubmit: async (e) => {
      e.preventDefault();
      let body;
      try {
        body = JSON.stringify(JSON.parse(manifest.value));
      } catch (err) {
        result.textContent = fill(T.notJson, { error: err.message });
        return;
      }
      const r = await call("PUT", `/api/v1/admin/signage/${encodeURIComponent(display.value.trim())}/content`, body,
        { "content-type": "application/json" });
      result.textContent = r.status === 200 ? T.signageSet : r.body?.error?.message || T.failed;
    } },
    h("label", { for: "signage-display" }, T.display, display),
    h("label", { for: "signage-content" }, T.signageContent, manifest),
    h("button", { type: "submit" }, T.signageButton)), result);
}

function announceCard(call) {
  const text = h("textarea", { id: "announcement", required: true, maxlength: "4000" });
  const result = h("p", { role: "status", class: "result" });
  let key = newKey(); // one per announcement: a retry after a lost answer posts it once
  return card(T.announceTitle,
    h("form", { onsubmit: async (e) => {
      e.preventDefault();
      const r = await call("POST", "/api/v1/admin/announcements", JSON.stringify({ content: text.value.trim() }),
        { "content-type": "application/json", "idempotency-key": key });
      if (r.status === 200 || r.status === 201) {
        result.textContent = T.announced;
        text.value = "";
        key = newKey();
      } else {
        result.textContent = r.body?.error?.message || T.failed;
      }
    } }, h("label", { for: "announcement" }, T.announceText, text), h("button", { type: "submit" }, T.announceButton)),
    result);
}

document.title = T.consoleTitle;
document.getElementById("title").textContent = T.consoleTitle;
const token = sessionStorage.getItem(TOKEN);
if (token) consoleView(token);
else signInView();
