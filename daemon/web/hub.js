// The link to the appliance's hub (docs/protocol/websocket.md): one WebSocket that reconnects
// with backoff after a sleep or a WiFi drop and resumes every channel from the last `seq` it
// saw, so no message is missed or shown twice.

const PING_EVERY_MS = 25_000; // under the server's 90 s silence limit
const PONG_WITHIN_MS = 10_000; // a link that does not answer is dead, even if the OS thinks not
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const PAGE = 500; // the most a sync.request returns

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
    this.last = new Map(); // channel → highest seq delivered
    this.seen = new Map(); // channel → Set of seqs delivered (sync.response and message.new overlap)
    this.epoch = null;
    this.attempt = 0;
    this.nextId = 1;
    this.socket = null;
    this.stopped = false;
  }

  /** Reads `channels` from now on (and everything in them not yet seen). */
  subscribe(channels) {
    for (const c of channels) this.channels.add(c);
    if (this.live()) this.sendSubscribe(channels);
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
  }

  live() {
    return this.socket?.readyState === WebSocket.OPEN && this.welcomed;
  }

  connect() {
    if (this.stopped) return;
    this.on.state("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/ws?token=${encodeURIComponent(this.token)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    this.welcomed = false;
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => this.closed(socket, event);
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
    this.welcomed = false;
    if (this.stopped) return;
    if (event.code === 1008 && ENDED.has(event.reason)) {
      this.stopped = true;
      this.on.ended(event.reason);
      return;
    }
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
        break;
      case "sync.response":
        for (const m of p.messages || []) this.deliver(p.channel, m);
        if (p.too_large || p.has_more) {
          this.send("sync.request", { channel: p.channel, last_seq: this.last.get(p.channel) ?? 0, limit: PAGE });
        }
        break;
      case "message.new":
        this.deliver(p.channel, p);
        break;
      case "pong":
        clearTimeout(this.pongTimer);
        break;
      default:
        this.on.frame?.(frame);
    }
  }

  deliver(channel, message) {
    let seen = this.seen.get(channel);
    if (!seen) this.seen.set(channel, (seen = new Set()));
    if (seen.has(message.seq)) return;
    seen.add(message.seq);
    this.last.set(channel, Math.max(this.last.get(channel) ?? 0, message.seq));
    this.on.message(channel, message);
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
