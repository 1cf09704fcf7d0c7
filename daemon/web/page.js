// What the pages' scripts share: building elements, random keys, times of day, and the
// credentials a kiosk or a display keeps for itself.

/** An element with attributes and children (strings become text, never HTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) el.setAttribute(k, v === true ? "" : v);
  }
  el.append(...children);
  return el;
}

/** A random key; `crypto.randomUUID` exists only on HTTPS pages, and the venue LAN is HTTP. */
export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The time of day of an RFC 3339 instant, in `timeZone` (the event's) when it is valid. */
export function clock(instant, timeZone) {
  const options = { hour: "2-digit", minute: "2-digit" };
  try {
    return new Date(instant).toLocaleTimeString([], { ...options, timeZone: timeZone || undefined });
  } catch {
    return new Date(instant).toLocaleTimeString([], options);
  }
}

/** The `Authorization` header of a device's `{id, password}`. */
export function basic({ id, password }) {
  // btoa takes Latin-1 only: encode as UTF-8 first.
  const bytes = new TextEncoder().encode(`${id}:${password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

/** The device credentials kept under `key` in localStorage, or null. */
export function savedCredentials(key) {
  try {
    const c = JSON.parse(localStorage.getItem(key));
    return c?.id && c?.password ? c : null;
  } catch {
    return null;
  }
}
