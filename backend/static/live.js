// The WebSocket client: one socket to /ws, reconnecting by itself with
// exponential backoff and jitter, a watchdog for silent deaths, and on every
// new connection the credential first (`auth`: never in the URL, where logs
// would keep it), then the list of followed orders.
//
// Events: "status" {state: connecting|live|reconnecting|offline, attempt},
// "message" {message} for every server message except ping/pong and the
// answer to `auth`, which is "auth" {principal} or "auth" {error}. A `batch`
// (changes the node applied together, in one frame) is handed on as its
// messages, one "message" event each, in order.

const BASE_DELAY_MS = 400;
const MAX_DELAY_MS = 5000;
const DEAD_AFTER_MS = 40000;
const CLIENT_PING_MS = 20000;
const OFFLINE_AFTER_ATTEMPTS = 8;

export class LiveClient extends EventTarget {
  /** credential({renew}): the token to send (renewed first if renew), or null. */
  constructor({ credential = async () => null, url = defaultUrl() } = {}) {
    super();
    this.url = url;
    this.credential = credential;
    this.socket = null;
    this.authPending = false; // an `auth` is out and its answer not in yet
    this.renewToken = false; // the server said the token expired: renew before sending it again
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
    if (this.follows.delete(orderId)) this.send({ type: "unfollow", order_id: orderId });
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
    clearInterval(this.pinger);
    this.pinger = setInterval(() => this.send({ type: "ping" }), CLIENT_PING_MS);
    this.authenticate();
  }

  /** Send the credential (a new sign-in, a renewed token), then the follows, which may
   *  need it. Without a credential the socket stays anonymous: the catalog only. */
  async authenticate({ refollow = true } = {}) {
    const socket = this.socket;
    const renew = this.renewToken;
    this.renewToken = false;
    let token = null;
    try {
      token = await this.credential({ renew });
    } catch {
      token = null; // renewing failed: go on anonymous; the session says why
    }
    if (socket !== this.socket) return;
    if (token && this.send({ type: "auth", token })) this.authPending = true;
    if (!refollow) return;
    for (const orderId of this.follows) this.send({ type: "follow", order_id: orderId });
  }

  /** Sign-out: the server keeps a socket's principal, so only a new socket forgets it. */
  restart() {
    if (this.socket) this.drop(this.socket, 0);
    else this.open();
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
    if (message?.type === "batch" && Array.isArray(message.messages)) {
      for (const one of message.messages) this.handle(socket, one);
    } else {
      this.handle(socket, message);
    }
  }

  handle(socket, message) {
    if (socket !== this.socket) return; // an earlier message of the batch left it
    switch (message?.type) {
      case "ping":
      case "pong":
        return;
      case "snapshot":
        this.attempt = 0;
        this.setState("live");
        break;
      case "reconnect":
        // The server is about to close this socket (lifetime cap, an expired token):
        // go before it does, after a short random pause so a whole node's clients do
        // not return at once.
        if (message.reason === "token_expired") this.renewToken = true;
        this.drop(socket, 100 + Math.random() * 900);
        return;
      case "auth":
        this.authPending = false;
        this.dispatchEvent(new CustomEvent("auth", { detail: { principal: message.principal } }));
        return;
      case "error":
        if (this.authPending) {
          // The first answer after an `auth` answers it (the server reads in order).
          // Anything but UNAUTHENTICATED comes from a node that does not read `auth`:
          // it serves the catalog anyway, so say nothing.
          this.authPending = false;
          if (message.code === "UNAUTHENTICATED")
            this.dispatchEvent(new CustomEvent("auth", { detail: { error: message } }));
          return;
        }
        break;
      default:
        break;
    }
    this.dispatchEvent(new CustomEvent("message", { detail: { message } }));
  }

  onClose(socket) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.authPending = false;
    this.stopTimers();
    this.scheduleRetry();
  }

  /** Leave this socket for good and connect again after delayMs. */
  drop(socket, delayMs) {
    if (socket === this.socket) this.socket = null;
    this.authPending = false;
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
