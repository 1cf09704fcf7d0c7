// The kiosk's scans on their way to the appliance: each is written to IndexedDB before it is
// sent, under the idempotency key made when it was scanned, and sent in scan order until the
// appliance has answered it. A scan made while the appliance cannot be reached waits on the
// tablet (a reload or a crash of the browser keeps it) and is checked in once when it is back
// (docs/http-api.md, `POST /api/v1/checkins`).

import { newKey } from "./page.js";

const DB = "venue-kiosk";
const STORE = "scans";
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 15_000;

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

async function open() {
  const r = indexedDB.open(DB, 1);
  r.onupgradeneeded = () => r.result.createObjectStore(STORE, { keyPath: "seq", autoIncrement: true });
  return request(r);
}

/**
 * The queue. `auth()` gives the Authorization header; `answered(scan, status, body)` is called
 * once per scan the appliance answered; `waiting(count, reachable)` whenever that changes;
 * `refused()` when the appliance no longer accepts the kiosk's credentials.
 */
export async function scanQueue({ auth, answered, waiting, refused }) {
  const db = await open();
  let sending = false;
  let delay = RETRY_MIN_MS;
  let timer = null;
  let reachable = true;

  const tx = (mode) => db.transaction(STORE, mode).objectStore(STORE);
  const all = () => request(tx("readonly").getAll());
  const count = () => request(tx("readonly").count());
  const report = async () => waiting(await count(), reachable);

  /** Sends one scan; whether to go on with the next. */
  async function sendOne(scan) {
    let r;
    try {
      r = await fetch("/api/v1/checkins", {
        method: "POST",
        headers: { authorization: auth(), "content-type": "application/json", "idempotency-key": scan.key },
        body: JSON.stringify(scan.body),
        cache: "no-store",
      });
    } catch {
      r = null; // no network
    }
    if (r?.status === 401) {
      refused();
      return false;
    }
    if (!r || r.status === 408 || r.status === 429 || r.status >= 500) {
      // Kept under its key: the retry gets the first answer if the first try got through.
      reachable = !!r;
      timer = setTimeout(send, delay);
      delay = Math.min(RETRY_MAX_MS, delay * 2);
      return false;
    }
    reachable = true;
    delay = RETRY_MIN_MS;
    const body = await r.json().catch(() => ({}));
    await request(tx("readwrite").delete(scan.seq));
    answered(scan, r.status, body);
    return true;
  }

  /** Sends what waits, in scan order, until nothing does (scans added meanwhile included). */
  async function send() {
    if (sending) return;
    sending = true;
    clearTimeout(timer);
    try {
      let going = true;
      while (going) {
        const batch = await all();
        if (!batch.length) break;
        for (const scan of batch) {
          going = await sendOne(scan);
          if (!going) break;
        }
      }
    } finally {
      sending = false;
      await report();
    }
  }

  return {
    /** Stores a scan (`body` is `{ticket_code}` or `{attendee_id}`), then sends what waits. */
    async add(body, label) {
      await request(tx("readwrite").add({ key: newKey(), body, label, at: new Date().toISOString() }));
      await report();
      send();
    },
    send,
    /** Tries again now (the network came back). */
    retry() {
      delay = RETRY_MIN_MS;
      send();
    },
    report,
  };
}
