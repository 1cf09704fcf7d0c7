// The names behind attendee ids (frames carry ids only): asked of the appliance in batches
// (`GET /api/v1/people?ids=`), remembered for the page's life, and told to whoever re-renders.

const BATCH = 100; // the most ids one request takes

/** A name book. `changed()` is called once names arrive. */
export function nameBook(token, changed) {
  const known = new Map(); // id → {id, name, company}
  const asked = new Set();
  let wanted = new Set();
  let timer = null;

  async function ask() {
    timer = null;
    const ids = [...wanted].slice(0, BATCH);
    for (const id of ids) wanted.delete(id);
    if (wanted.size) timer = setTimeout(ask, 0);
    try {
      const r = await fetch(`/api/v1/people?${new URLSearchParams({ ids: ids.join(",") })}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const { people } = await r.json();
      for (const person of people) known.set(person.id, person);
      changed();
    } catch {
      for (const id of ids) asked.delete(id); // asked again when next shown
    }
  }

  return {
    /** The name of `id`, or the id until the name is known (then `changed` runs). */
    name(id) {
      const person = known.get(id);
      if (person) return person.name;
      if (!asked.has(id) && !id.startsWith("mqtt:")) {
        asked.add(id);
        wanted.add(id);
        timer ??= setTimeout(ask, 0); // one request for all the names one render wants
      }
      return id;
    },
    /** Remembers a name learned elsewhere (a search, a followed person). */
    learn(person) {
      if (person?.id && person.name) known.set(person.id, person);
    },
    /** Everyone named so far. */
    all: () => [...known.values()],
  };
}
