// Lists the app keeps on the phone between visits (localStorage): the chat outbox, the people
// one follows, the last announcements.

/** The JSON list saved under `key`; empty when there is none or it does not parse. */
export function loadList(key) {
  try {
    return JSON.parse(localStorage.getItem(key) || "[]");
  } catch {
    return [];
  }
}

/** Saves `list` under `key`. */
export function saveList(key, list) {
  localStorage.setItem(key, JSON.stringify(list));
}
