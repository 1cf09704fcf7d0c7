// Messages on their way out: kept on the phone (localStorage) until the appliance has them, sent
// in order over HTTP, each under the idempotency key made when it was typed, so a retry after a
// dead spot, a reload or a switch of transport never posts it twice
// (docs/protocol/websocket.md, "Delivery, idempotency, resume").

import { newKey } from "./page.js";
import { loadList, saveList } from "./saved.js";

const KEY = "venue.outbox";
const RETRY_MS = 3000;

/**
 * The outbox. `sent(item, {seq, message_id})` is called when the appliance has stored an item, `changed()`
 * whenever what is waiting changes, `failed(item)` when the appliance refused one for good.
 */
export function outbox({ token, sent, changed, failed }) {
  let items = loadList(KEY); // [{key, channel, content}]
  let flushing = false;
  let retry = null;
  const save = () => saveList(KEY, items);

  /** Sends the items in order until none is left or the link fails (then tries again later). */
  async function flush() {
    if (flushing) return;
    flushing = true;
    clearTimeout(retry);
    changed();
    try {
      while (items.length) {
        const o = items[0];
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
        items.shift();
        save();
        if (r.ok) {
          // Shown at once; the hub's copy of it (same seq) then replaces it, not doubles it.
          sent(o, await r.json());
        } else {
          failed(o);
        }
      }
    } finally {
      flushing = false;
      changed();
    }
  }

  window.addEventListener("online", flush);
  return {
    /** Queues `content` for `channel` and starts sending. */
    add(channel, content) {
      items.push({ key: newKey(), channel, content });
      save();
      flush();
    },
    flush,
    /** What waits for `channel`, oldest first. */
    pending: (channel) => items.filter((o) => o.channel === channel),
    /** Whether a send is under way (else what waits, waits for the network). */
    busy: () => flushing,
  };
}
