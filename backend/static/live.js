// The WebSocket client: one socket to /ws, reconnecting by itself with
// exponential backoff and jitter, a watchdog for silent deaths, and the list
// of followed orders re-sent on every new connection.
//
// Events: "status" {state: connecting|live|reconnecting|offline, attempt},
// "message" {message} for every server message except ping/pong.

const BASE_DELAY_MS = 400;
const MAX_DELAY_MS = 5000;
const DEAD_AFTER_MS = 40000;
const CLIENT_PING_MS = 20000;
const OFFLINE_AFTER_ATTEMPTS = 8;

export class LiveClient extends EventTarget {
  constructor(url = defaultUrl()) {
    super();
    this.url = url;
    this.socket = null;
    this.attempt = 0;
    this.state = "connecting";
    this.follows = new Set();
    this.retryTimer = null;
    this.watchdog = null;
    this.pinger = null;
    window.addEventListener("online", () => this.reconnectNow());
    window.addEventListener("offline", () => this.setState("offline"));
  }

  start() {
    this.open();
  }

  follow(orderId) {
    this.follows.add(orderId);
    this.send({ type: "follow", order_id: orderId });
  }

  unfollow(orderId) {
    this.follows.delete(orderId);
  }

  send(message) {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  open() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => this.onOpen(socket));
    socket.addEventListener("message", (event) => this.onMessage(socket, event));
    socket.addEventListener("close", () => this.onClose(socket));
  }

  onOpen(socket) {
    if (socket !== this.socket) return;
    this.armWatchdog();
    for (const orderId of this.follows) this.send({ type: "follow", order_id: orderId });
    clearInterval(this.pinger);
    this.pinger = setInterval(() => this.send({ type: "ping" }), CLIENT_PING_MS);
  }

  onMessage(socket, event) {
    if (socket !== this.socket) return;
    this.armWatchdog();
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    switch (message?.type) {
      case "ping":
      case "pong":
        return;
      case "snapshot":
        this.attempt = 0;
        this.setState("live");
        break;
      case "reconnect":
        // The server is about to close this socket (lifetime cap): go before it does,
        // after a short random pause so a whole node's clients do not return at once.
        this.drop(socket, 100 + Math.random() * 900);
        return;
      default:
        break;
    }
    this.dispatchEvent(new CustomEvent("message", { detail: { message } }));
  }

  onClose(socket) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.stopTimers();
    this.scheduleRetry();
  }

  /** Leave this socket for good and connect again after delayMs. */
  drop(socket, delayMs) {
    if (socket === this.socket) this.socket = null;
    this.stopTimers();
    socket.close();
    clearTimeout(this.retryTimer);
    this.setState("reconnecting");
    this.retryTimer = setTimeout(() => this.open(), delayMs);
  }

  reconnectNow() {
    if (this.socket?.readyState === WebSocket.OPEN) return;
    if (this.socket) this.drop(this.socket, 0);
    else this.open();
  }

  scheduleRetry() {
    this.attempt += 1;
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** (this.attempt - 1));
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    const offline = !navigator.onLine || this.attempt > OFFLINE_AFTER_ATTEMPTS;
    this.setState(offline ? "offline" : "reconnecting");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  armWatchdog() {
    clearTimeout(this.watchdog);
    const socket = this.socket;
    this.watchdog = setTimeout(() => {
      if (socket === this.socket) this.drop(socket, 0);
    }, DEAD_AFTER_MS);
  }

  stopTimers() {
    clearTimeout(this.watchdog);
    clearInterval(this.pinger);
  }

  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { state, attempt: this.attempt } }));
  }
}

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}
