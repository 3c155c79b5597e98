// The gateway protocol v1 over one WebSocket per tab: `connect` first, then `req`/`res` pairs
// and `event`s. It reconnects by itself (then each `onOpen` hook runs again, so views resubscribe
// and resume after the last `seq` they saw) and renews its access token before it expires.

import { accessToken, ApiError } from "./api.js";

class Gateway {
  constructor() {
    this.socket = null;
    this.ready = null; // a promise of the connected socket
    this.connected = false; // connect answered and every open hook run
    this.nextId = 1;
    this.waiting = new Map(); // request id -> {resolve, reject}
    this.listeners = new Map(); // event name -> Set of functions
    this.openHooks = new Set();
    this.token = null;
    this.retry = 500;
    this.stopped = false;
    setInterval(() => this.renew(), 30_000);
  }

  /** Connects (once); resolves when `connect` was answered. */
  open() {
    if (!this.ready) this.ready = this.dial();
    return this.ready;
  }

  async dial() {
    this.token = await accessToken();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws`);
    this.socket = socket;
    // A socket that fails to open closes too: `closed` schedules the next try.
    socket.onclose = () => this.closed(socket);
    socket.onmessage = (message) => this.receive(JSON.parse(message.data));
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new ApiError(0, "offline", "The live connection failed."));
    });
    await this.send(socket, "connect", { version: "1", clientType: "web", token: this.token });
    this.retry = 500;
    document.body.classList.remove("offline");
    for (const hook of this.openHooks) hook();
    this.connected = true;
    return socket;
  }

  closed(socket) {
    if (socket !== this.socket) return;
    for (const { reject } of this.waiting.values()) {
      reject(new ApiError(0, "offline", "The live connection dropped; retrying."));
    }
    this.waiting.clear();
    this.ready = null;
    this.socket = null;
    this.connected = false;
    if (this.stopped) return;
    document.body.classList.add("offline");
    setTimeout(() => this.open().catch(() => {}), this.retry);
    this.retry = Math.min(this.retry * 2, 10_000);
  }

  send(socket, method, params) {
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      socket.send(JSON.stringify({ type: "req", id, method, params }));
    });
  }

  receive(frame) {
    if (frame.type === "res") {
      const waiter = this.waiting.get(frame.id);
      this.waiting.delete(frame.id);
      if (!waiter) return;
      if (frame.ok) waiter.resolve(frame.payload);
      else {
        const code = frame.errorCode || "refused";
        waiter.reject(new ApiError(400, code, frame.error || code, frame.details));
      }
    } else if (frame.type === "event") {
      const payload = { ...frame.payload, seq: frame.seq };
      for (const listener of this.listeners.get(frame.event) || []) listener(payload);
      for (const listener of this.listeners.get("*") || []) listener(frame.event, payload);
    }
  }

  /** Calls `method`; the answer's payload, or an `ApiError` with the refusal's message. */
  async request(method, params = {}) {
    const socket = await this.open();
    return this.send(socket, method, params);
  }

  /** Calls `listener(payload)` for each `event` (`*`: `listener(name, payload)` for all). */
  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(listener);
    return () => this.listeners.get(event).delete(listener);
  }

  /** Runs `hook` now if connected, and after every (re)connection; returns its remover. */
  onOpen(hook) {
    this.openHooks.add(hook);
    // Connected: run it now. Connecting: the connection runs it when `connect` is answered.
    if (this.connected) hook();
    else this.open().catch(() => {});
    return () => this.openHooks.delete(hook);
  }

  /** Gives the open socket a fresh access token before the one it holds expires. */
  async renew() {
    if (!this.socket || this.stopped) return;
    const token = await accessToken().catch(() => null);
    if (token && token !== this.token) {
      this.token = token;
      await this.request("auth.refresh", { token }).catch(() => {});
    }
  }

  /** Closes for good (signing out). */
  stop() {
    this.stopped = true;
    if (this.socket) this.socket.close();
  }
}

export const gateway = new Gateway();
