// People: find fellow attendees, follow them, and see whether they are around and where, as far
// as each person's privacy allows (the hub decides what is sent; this page forgets what a
// person's new privacy level no longer lets out). Who one follows is kept on the phone.

import { loadList, saveList } from "./saved.js";
import { fill, strings } from "./strings.js";

const T = strings();
const FOLLOWING = "venue.following";

/**
 * The people view. `follow`/`unfollow` tell the hub; `zoneName` names a room by its id;
 * `message(person)` opens a direct conversation; `names` learns the names seen here.
 */
export function peopleSection({ h, token, follow, unfollow, zoneName, message, names }) {
  let following = loadList(FOLLOWING); // [{id, name, company}]
  for (const person of following) names.learn(person);
  const seen = new Map(); // id → {status, zone, kind, hidden}
  const search = h("input", { id: "people-search", type: "search", autocomplete: "off" });
  const results = h("ul", { class: "people", "aria-label": T.searchResults });
  const list = h("ul", { class: "people", "aria-label": T.following });
  const empty = h("p", { class: "help" }, T.noFollowing);
  const el = h("section", { "aria-labelledby": "people-heading" },
    h("h2", { id: "people-heading" }, T.people),
    h("form", { role: "search", onsubmit: (e) => { e.preventDefault(); find(); } },
      h("label", { for: "people-search" }, T.findPeople, search),
      h("button", { type: "submit" }, T.find)),
    results,
    h("h3", {}, T.following), empty, list);

  const save = () => saveList(FOLLOWING, following);

  function describe(id) {
    const p = seen.get(id);
    if (!p) return T.status_unknown;
    if (p.hidden) return T.notSharing;
    const status = T[`status_${p.status}`] || T.status_unknown;
    if (p.kind === "left") return `${status}, ${T.leftVenue}`;
    if (p.zone) return `${status}, ${fill(T.inZone, { zone: zoneName(p.zone) })}`;
    if (p.kind === "entered" || p.kind === "moved") return `${status}, ${T.atVenue}`;
    return status;
  }

  function render() {
    empty.hidden = following.length > 0;
    list.replaceChildren(...following.map((person) => h("li", { "data-id": person.id },
      h("span", { class: "name" }, person.name),
      h("span", { class: "where" }, describe(person.id)),
      h("button", { type: "button", class: "quiet", "aria-label": fill(T.messageName, { name: person.name }),
        onclick: () => message(person) }, T.sendMessage),
      h("button", { type: "button", class: "quiet", "aria-label": fill(T.unfollowName, { name: person.name }),
        onclick: () => {
          following = following.filter((f) => f.id !== person.id);
          save();
          unfollow([person.id]);
          render();
        } }, T.unfollow))));
  }

  async function find() {
    const q = search.value.trim();
    if (q.length < 2) return;
    const r = await fetch(`/api/v1/people?${new URLSearchParams({ q })}`, {
      headers: { authorization: `Bearer ${token}` },
    }).catch(() => null);
    if (!r || !r.ok) {
      results.replaceChildren(h("li", { class: "error" }, T.searchFailed));
      return;
    }
    const { people } = await r.json();
    for (const person of people) names.learn(person);
    results.replaceChildren(...people.map((person) => h("li", {},
      h("span", { class: "name" }, person.company ? `${person.name}, ${person.company}` : person.name),
      following.some((f) => f.id === person.id) ? "" : h("button", { type: "button",
        "aria-label": fill(T.followName, { name: person.name }),
        onclick: (e) => {
          following.push({ id: person.id, name: person.name, company: person.company });
          save();
          follow([person.id]);
          e.target.remove();
          render();
        } }, T.follow))));
    if (!people.length) results.append(h("li", { class: "help" }, T.nobodyFound));
  }

  render();
  return {
    el,
    ids: () => following.map((f) => f.id),
    /** The people followed, [{id, name, company}]. */
    following: () => following,
    render,
    /** A `presence.changed` frame's payload. */
    changed(p) {
      const now = seen.get(p.user_id) || {};
      if (p.visibility) {
        // Forget what the new level no longer lets out.
        if (p.visibility === "hidden") seen.set(p.user_id, { hidden: true });
        else seen.set(p.user_id, { ...now, hidden: false, zone: p.visibility === "venue" ? null : now.zone });
      } else if (p.status) {
        seen.set(p.user_id, { ...now, hidden: false, status: p.status });
      } else if (p.kind) {
        seen.set(p.user_id, { ...now, kind: p.kind, zone: p.zone });
      }
      render();
    },
  };
}
