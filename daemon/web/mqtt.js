// A small MQTT 3.1.1 client over WebSocket (subprotocol `mqtt`), for the signage display: it
// connects with the device's own credentials, leaves a retained last will, subscribes at QoS 0,
// hears PUBLISH, keeps the link alive with PINGREQ, and reconnects with backoff forever. It does
// only what a display needs (no QoS 1 or 2 of its own, no persistent session); the broker's topic
// rights decide what it may read (docs/protocol/mqtt-topics.md).

const KEEPALIVE_SECS = 30;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30_000;

const utf8 = new TextEncoder();
const text = new TextDecoder();

/** MQTT's variable-length "remaining length". */
function length(n) {
  const out = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return out;
}

/** A length-prefixed UTF-8 string (or bytes). */
function str(s) {
  const bytes = typeof s === "string" ? utf8.encode(s) : s;
  return [bytes.length >> 8, bytes.length & 0xff, ...bytes];
}

function packet(type, body) {
  return new Uint8Array([type, ...length(body.length), ...body]);
}

/**
 * Connects to `url` as `username`/`password` with client id `clientId`. `will` is
 * `{topic, payload}` (retained, QoS 1), `topics` the filters to subscribe to; `on` has
 * `message(topic, payloadText)` and `state("connecting"|"live"|"offline")`.
 */
export function connectMqtt({ url, clientId, username, password, will, topics, on }) {
  let socket = null;
  let buffer = new Uint8Array(0);
  let attempt = 0;
  let pinger = null;
  let packetId = 1;
  let stopped = false;

  function send(bytes) {
    if (socket?.readyState === WebSocket.OPEN) socket.send(bytes);
  }

  function connect() {
    if (stopped) return;
    on.state("connecting");
    socket = new WebSocket(url, "mqtt");
    socket.binaryType = "arraybuffer";
    buffer = new Uint8Array(0);
    socket.onopen = () => {
      // Flags: user name, password, will retain, will QoS 1, will, clean session.
      const flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02;
      send(packet(0x10, [
        ...str("MQTT"), 4, flags, KEEPALIVE_SECS >> 8, KEEPALIVE_SECS & 0xff,
        ...str(clientId), ...str(will.topic), ...str(will.payload), ...str(username), ...str(password),
      ]));
    };
    socket.onmessage = (event) => {
      const chunk = new Uint8Array(event.data);
      const joined = new Uint8Array(buffer.length + chunk.length);
      joined.set(buffer);
      joined.set(chunk, buffer.length);
      buffer = joined;
      readPackets();
    };
    socket.onclose = () => {
      clearInterval(pinger);
      if (stopped) return;
      on.state("offline");
      const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt++);
      setTimeout(connect, ceiling * (0.5 + Math.random() / 2));
    };
  }

  /** Takes every whole packet off the buffer (packets may span or share WebSocket messages). */
  function readPackets() {
    for (;;) {
      if (buffer.length < 2) return;
      let size = 0;
      let multiplier = 1;
      let i = 1;
      for (;; i++) {
        if (i >= buffer.length) return; // the length itself is not all here yet
        size += (buffer[i] & 0x7f) * multiplier;
        multiplier *= 128;
        if (!(buffer[i] & 0x80)) break;
        if (i >= 4) return socket.close(); // malformed
      }
      const start = i + 1;
      if (buffer.length < start + size) return;
      handle(buffer[0], buffer.subarray(start, start + size));
      buffer = buffer.slice(start + size);
    }
  }

  function handle(header, body) {
    switch (header >> 4) {
      case 2: // CONNACK
        if (body[1] !== 0) {
          on.state("refused");
          return socket.close();
        }
        attempt = 0;
        on.state("live");
        send(packet(0x82, [packetId >> 8, packetId & 0xff, ...topics.flatMap((t) => [...str(t), 0])]));
        packetId = (packetId % 65535) + 1;
        pinger = setInterval(() => send(packet(0xc0, [])), (KEEPALIVE_SECS * 1000) / 2);
        break;
      case 3: { // PUBLISH
        const topicLength = (body[0] << 8) | body[1];
        const topic = text.decode(body.subarray(2, 2 + topicLength));
        const qos = (header >> 1) & 3;
        let at = 2 + topicLength;
        if (qos > 0) {
          send(packet(0x40, [body[at], body[at + 1]])); // PUBACK (we subscribe at QoS 0)
          at += 2;
        }
        on.message(topic, text.decode(body.subarray(at)));
        break;
      }
      default: // SUBACK, PINGRESP: nothing to do
    }
  }

  connect();
  return {
    /** Publishes `payload` on `topic` at QoS 0 (retained if asked). */
    publish(topic, payload, retain = false) {
      send(packet(retain ? 0x31 : 0x30, [...str(topic), ...utf8.encode(payload)]));
    },
    stop() {
      stopped = true;
      send(packet(0xe0, []));
      socket?.close();
    },
  };
}
