// The link to the appliance's hub (docs/protocol/websocket.md): one WebSocket that reconnects
// with backoff after a sleep or a WiFi drop and resumes every channel from the last `seq` it
// saw, so no message is missed or shown twice. Where a WebSocket cannot open at all (some
// captive networks and proxies block it), the same frames come over Server-Sent Events, and
// where that does not get through either (a proxy that refuses or buffers it), by long-poll.

const PING_EVERY_MS = 25_000; // under the server's 90 s silence limit
const PONG_WITHIN_MS = 10_000; // a link that does not answer is dead, even if the OS thinks not
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const PAGE = 500; // the most a sync.request returns
// WebSocket attempts that never opened, in a row, before the event stream is used instead.
const FAILURES_BEFORE_STREAM = 2;
const ACK_WITHIN_MS = 10_000;
// Event streams that never opened, in a row, while the appliance answered, before polling.
const FAILURES_BEFORE_POLL = 2;
const POLL_WAIT_SECS = 25; // the appliance's longest wait

/** Close reasons after which reconnecting with the same token is pointless. */
const ENDED = new Set(["token_expired", "attendee_removed"]);

export class Hub {
  /**
   * @param {string} token the attendee token
   * @param {object} on callbacks: message(channel, payload), state("connecting"|"live"|"offline"),
   *   ended(reason): the token no longer opens the hub
   */
  constructor(token, on) {
    this.token = token;
    this.on = on;
    this.channels = new Set();
    this.followed = new Set(); // attendee ids whose presence this page shows
    this.last = new Map(); // channel → highest seq delivered
    this.seen = new Map(); // channel → Set of seqs delivered (sync.response and message.new overlap)
    this.epoch = null;
    this.attempt = 0;
    this.nextId = 1;
    this.socket = null;
    this.stream = null; // the EventSource, once the WebSocket has given up
    this.polling = false; // long-polling, once the event stream has given up too
    this.pollRound = 0; // the current poll loop: a new subscription starts a new one
    this.neverOpened = 0;
    this.streamFailures = 0;
    this.stopped = false;
    this.pending = new Map(); // frame id → {resolve, reject, timer}: requests awaiting their ack
  }

  /**
   * Sends a frame that the hub acknowledges (an edit, a reaction, a read mark, a group change);
   * resolves with the ack's payload, rejects with its error, or with `{code: "offline"}` when no
   * WebSocket is open (the event stream carries nothing upward) or no ack came in time.
   */
  request(type, payload) {
    if (!this.live()) return Promise.reject({ code: "offline" });
    const id = this.send(type, payload);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject({ code: "offline" });
      }, ACK_WITHIN_MS);
      this.pending.set(id, { resolve, reject, timer });
    });
  }

  /** Sends a frame the hub does not answer (typing), if a WebSocket is open. */
  notify(type, payload) {
    if (this.live()) this.send(type, payload);
  }

  /** Whether frames can go up (edits, reactions, typing): only over an open WebSocket. */
  canRequest() {
    return this.live();
  }

  /** Reads `channels` from now on (and everything in them not yet seen). */
  subscribe(channels) {
    for (const c of channels) this.channels.add(c);
    if (this.polling || this.stream) {
      // Over HTTP a new channel means a new request: one for all subscribed in this turn.
      this.reopen ??= setTimeout(() => {
        this.reopen = null;
        if (this.polling) this.poll();
        else if (this.stream) this.openStream();
      }, 0);
    } else if (this.live()) this.sendSubscribe(channels);
  }

  /** Resumes `channel` from `seq` rather than from its start, unless it is already further. */
  seed(channel, seq) {
    if (!this.last.has(channel)) this.last.set(channel, seq);
  }

  /** Hears `presence.changed` for these attendees from now on (over the WebSocket only). */
  follow(ids) {
    for (const id of ids) this.followed.add(id);
    if (this.live() && ids.length) this.send("presence.subscribe", { user_ids: ids.slice(0, 100) });
  }

  unfollow(ids) {
    for (const id of ids) this.followed.delete(id);
    if (this.live() && ids.length) this.send("presence.unsubscribe", { user_ids: ids.slice(0, 100) });
  }

  start() {
    this.stopped = false;
    this.connect();
    // Come back at once when the phone wakes or the network returns, not at the next backoff.
    this.wake = () => { if (!this.live()) this.reconnectNow(); };
    window.addEventListener("online", this.wake);
    document.addEventListener("visibilitychange", this.wake);
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.wake);
    document.removeEventListener("visibilitychange", this.wake);
    clearTimeout(this.retryTimer);
    this.socket?.close(1000, "bye");
    this.stream?.close();
    this.pollAbort?.abort();
  }

  live() {
    return this.socket?.readyState === WebSocket.OPEN && this.welcomed;
  }

  connect() {
    if (this.stopped) return;
    if (this.polling) return this.poll();
    if (this.stream) return this.openStream();
    this.on.state("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/ws?token=${encodeURIComponent(this.token)}`;
    let socket;
    try {
      socket = new WebSocket(url);
    } catch {
      // Refused before any network (a policy): as good as a connection that never opened.
      return this.closed(this.socket, { code: 1006, reason: "" });
    }
    this.socket = socket;
    this.welcomed = false;
    socket.onopen = () => {
      this.neverOpened = 0;
      this.answersHttp = false;
    };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => this.closed(socket, event);
  }

  /** The event stream in place of the WebSocket, from the positions already seen. */
  openStream() {
    this.stream?.close();
    this.on.state("connecting");
    const channels = [...this.channels];
    const resume = channels.map((c) => `${c}=${this.last.get(c) ?? 0}`).join(";");
    const query = new URLSearchParams({ channels: channels.join(","), resume, token: this.token });
    const stream = new EventSource(`/api/v1/stream?${query}`);
    this.stream = stream;
    let opened = false;
    stream.onopen = () => {
      opened = true;
      this.streamFailures = 0;
      this.on.state("live");
    };
    stream.onerror = () => {
      if (stream !== this.stream) return;
      if (!opened) {
        // Never opened: is the appliance down (retry on), or is the stream blocked on the way?
        stream.close();
        fetch("/healthz", { cache: "no-store" })
          .then((r) => {
            if (stream !== this.stream) return;
            if (r.ok && ++this.streamFailures >= FAILURES_BEFORE_POLL) {
              this.stream = null;
              this.polling = true;
              return this.poll();
            }
            this.retry();
          })
          .catch(() => this.retry());
        return;
      }
      // The browser retries on its own (with Last-Event-ID) unless the answer was an error.
      if (stream.readyState !== EventSource.CLOSED) return this.on.state("offline");
      this.retry();
    };
    for (const type of ["message.new", "sync.response"]) {
      stream.addEventListener(type, (event) => {
        this.attempt = 0;
        this.receive(event.data);
      });
    }
  }

  /**
   * One long-poll after another (`GET /api/v1/poll`), each from the positions already seen, so
   * nothing falls between them. A new subscription aborts the poll under way and starts anew.
   */
  async poll() {
    this.pollAbort?.abort();
    clearTimeout(this.retryTimer);
    const round = ++this.pollRound;
    const abort = new AbortController();
    this.pollAbort = abort;
    while (!this.stopped && round === this.pollRound) {
      const channels = [...this.channels];
      const resume = channels.map((c) => `${c}=${this.last.get(c) ?? 0}`).join(";");
      const query = new URLSearchParams({ channels: channels.join(","), resume, wait: POLL_WAIT_SECS });
      let answer;
      try {
        const r = await fetch(`/api/v1/poll?${query}`, {
          headers: { authorization: `Bearer ${this.token}` }, cache: "no-store", signal: abort.signal,
        });
        if (r.status === 401) {
          this.stopped = true;
          return this.on.ended("unauthorized");
        }
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        answer = await r.json();
      } catch {
        if (abort.signal.aborted || round !== this.pollRound) return;
        this.on.state("offline");
        const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt++);
        await new Promise((done) => { this.retryTimer = setTimeout(done, ceiling * (0.5 + Math.random() / 2)); });
        continue;
      }
      if (round !== this.pollRound) return;
      this.attempt = 0;
      this.on.state("live");
      if (this.epoch !== null && answer.epoch !== this.epoch) {
        this.last.clear();
        this.seen.clear();
      }
      this.epoch = answer.epoch;
      for (const frame of answer.frames) this.handle(frame);
    }
  }

  /** Pages a channel's missed messages over HTTP (the stream has no sync.request). */
  async fetchMissed(channel) {
    for (;;) {
      const after = this.last.get(channel) ?? 0;
      const query = new URLSearchParams({ after, limit: PAGE });
      const r = await fetch(`/api/v1/channels/${encodeURIComponent(channel)}/messages?${query}`, {
        headers: { authorization: `Bearer ${this.token}` },
      });
      if (!r.ok) return;
      const page = await r.json();
      for (const m of page.messages) this.deliver(channel, m);
      if (!page.has_more || !page.messages.length) return;
    }
  }

  reconnectNow() {
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close();
    else this.connect();
  }

  closed(socket, event) {
    if (socket !== this.socket) return;
    clearInterval(this.pinger);
    clearTimeout(this.pongTimer);
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject({ code: "offline" });
    }
    this.pending.clear();
    const opened = this.welcomed;
    this.welcomed = false;
    if (this.stopped) return;
    if (event.code === 1008 && ENDED.has(event.reason)) {
      this.stopped = true;
      this.on.ended(event.reason);
      return;
    }
    if (!opened && event.code === 1006 && this.answersHttp) {
      // The appliance answered plain HTTP just before, and still no WebSocket got through:
      // something in between blocks them. The event stream takes over.
      return this.openStream();
    }
    if (!opened && event.code === 1006 && ++this.neverOpened >= FAILURES_BEFORE_STREAM) {
      // Never opened, twice: is the appliance down (retry on), or are WebSockets blocked?
      fetch("/healthz", { cache: "no-store" })
        .then((r) => {
          this.answersHttp = r.ok;
          r.ok ? this.connect() : this.retry();
        })
        .catch(() => this.retry());
      return;
    }
    this.retry();
  }

  retry() {
    this.on.state("offline");
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    this.attempt += 1;
    // Full jitter: a hall of phones waking together does not reconnect in step.
    this.retryTimer = setTimeout(() => this.connect(), ceiling * (0.5 + Math.random() / 2));
  }

  send(type, payload) {
    const id = `c-${this.nextId++}`;
    this.socket.send(JSON.stringify({ type, id, payload }));
    return id;
  }

  sendSubscribe(channels) {
    const resume = {};
    for (const c of channels) resume[c] = this.last.get(c) ?? 0;
    this.send("subscribe", { channels: [...channels], epoch: this.epoch, resume });
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    this.handle(frame);
  }

  /** One server frame, from whichever transport. */
  handle(frame) {
    const p = frame.payload || {};
    switch (frame.type) {
      case "welcome":
        if (this.epoch !== null && p.epoch !== this.epoch) {
          // Another database behind the same address: positions mean nothing there.
          this.last.clear();
          this.seen.clear();
        }
        this.epoch = p.epoch;
        this.welcomed = true;
        this.attempt = 0;
        this.on.state("live");
        this.startPinging();
        if (this.channels.size) this.sendSubscribe(this.channels);
        if (this.followed.size) this.send("presence.subscribe", { user_ids: [...this.followed].slice(0, 100) });
        break;
      case "sync.response":
        for (const m of p.messages || []) this.deliver(p.channel, m);
        if ((p.too_large || p.has_more) && (this.stream || this.polling)) this.fetchMissed(p.channel);
        else if (p.too_large || p.has_more) {
          this.send("sync.request", { channel: p.channel, last_seq: this.last.get(p.channel) ?? 0, limit: PAGE });
        }
        break;
      case "message.new":
        this.deliver(p.channel, p, true);
        break;
      case "pong":
        clearTimeout(this.pongTimer);
        break;
      case "ack": {
        const waiting = this.pending.get(p.ref_id);
        if (waiting) {
          this.pending.delete(p.ref_id);
          clearTimeout(waiting.timer);
          if (p.status === "ok") waiting.resolve(p);
          else waiting.reject(p.error || { code: "error" });
        }
        break;
      }
      default:
        this.on.frame?.(frame);
    }
  }

  /** Passes a message on once, whichever way it came; `live` when it came as it was posted. */
  deliver(channel, message, live = false) {
    let seen = this.seen.get(channel);
    if (!seen) this.seen.set(channel, (seen = new Set()));
    if (seen.has(message.seq)) return;
    seen.add(message.seq);
    this.last.set(channel, Math.max(this.last.get(channel) ?? 0, message.seq));
    this.on.message(channel, message, live);
  }

  startPinging() {
    clearInterval(this.pinger);
    this.pinger = setInterval(() => {
      if (!this.live()) return;
      this.send("ping", {});
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => this.socket.close(4000, "no_pong"), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }
}
