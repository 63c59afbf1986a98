// The module page's live part: the module's events over a websocket (devices/consumers.py),
// shown newest first in #event-feed; the connection badge, the twin view (#twin) and the
// simulator card (#simulator) follow them. Event data is shown as text, never as HTML.
(() => {
  const live = document.getElementById("live");
  if (!live) return;
  const status = document.getElementById("live-status");
  const feed = document.getElementById("event-feed");
  const badge = document.getElementById("connection-badge");
  const connectionState = document.getElementById("connection-state");
  const { deviceId, moduleId, twinUrl, simulatorUrl, renderedAt } = live.dataset;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socketUrl = `${scheme}://${location.host}/ws/modules/` +
    `${encodeURIComponent(deviceId)}/${encodeURIComponent(moduleId)}/`;

  const MAX_EVENTS = 200;
  const FIRST_RETRY_MS = 1000;
  const LAST_RETRY_MS = 10000;
  const REFRESH_DELAY_MS = 200; // events come in bursts (received, then reported): one fetch

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  // -- the feed ---------------------------------------------------------------------------
  function element(tag, className, text) {
    const node = document.createElement(tag);
    node.className = className;
    node.textContent = text;
    return node;
  }

  // Each event once (one replayed on connecting may also arrive live), newest first by the
  // time it happened (replayed ones may be older than some shown). False if already shown.
  const shown = new Set();
  function showEvent(event) {
    const key = `${event.type} ${event.at} ${event.version}`;
    if (shown.has(key)) return false;
    shown.add(key);
    const item = document.createElement("li");
    item.className = "event";
    item.dataset.key = key;
    item.dataset.type = event.type;
    item.dataset.version = event.version ?? "";
    const time = element("time", "event-at", String(event.at).replace("T", " ").replace("Z", " UTC"));
    time.dateTime = event.at;
    const head = document.createElement("div");
    head.className = "event-head";
    head.append(time, " ", element("code", "event-type", event.type));
    if (event.version !== null && event.version !== undefined) {
      head.append(" ", element("span", "event-version", `$version ${event.version}`));
    }
    item.append(head, element("pre", "event-patch", JSON.stringify(event.patch, null, 2)));
    const older = [...feed.children].find((li) => li.querySelector("time").dateTime <= event.at);
    feed.insertBefore(item, older ?? null);
    while (feed.children.length > MAX_EVENTS) {
      shown.delete(feed.lastElementChild.dataset.key);
      feed.lastElementChild.remove();
    }
    return true;
  }

  function showConnection(state) {
    for (const node of [badge, connectionState]) {
      if (node) node.textContent = state;
    }
    if (badge) badge.className = `badge badge-${state}`;
  }

  // -- refreshing parts of the page from their partial views ------------------------------
  // Replace the element #id with the same element of the page at url, as it is now; <details>
  // keep their open state. A part htmx is posting from (or swapped meanwhile) is left to htmx.
  const htmxBusy = (node) => node.matches(".htmx-request") || node.querySelector(".htmx-request");
  async function replaceFrom(id, url) {
    const current = document.getElementById(id);
    if (!current || htmxBusy(current)) return;
    let response;
    try {
      response = await fetch(url, { headers: { Accept: "text/html" } });
    } catch {
      return; // offline: the next change shows it again
    }
    if (!response.ok) return; // keep what is shown rather than an error page
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById(id);
    if (!fresh || document.getElementById(id) !== current || htmxBusy(current)) return;
    const open = [...current.querySelectorAll("details")].map((d) => d.open);
    fresh.querySelectorAll("details").forEach((d, i) => { if (i < open.length) d.open = open[i]; });
    const adopted = document.adoptNode(fresh);
    current.replaceWith(adopted);
    if (window.htmx) window.htmx.process(adopted);
  }

  // The twin view is asked for as of the newest event (?after=<its time>): the server reads
  // the twin once per event for all the pages open on the module, not once per page.
  // Events up to caughtUpTo are reflected in the page already (it was rendered then, or the
  // event was acted on): older replayed ones are only shown.
  let caughtUpTo = renderedAt;
  const timers = {};
  function refreshSoon(id, url) {
    clearTimeout(timers[id]);
    timers[id] = setTimeout(() => replaceFrom(id, url), REFRESH_DELAY_MS);
  }
  const refreshTwin = () =>
    refreshSoon("twin", `${twinUrl}?after=${encodeURIComponent(caughtUpTo)}`);
  const refreshSimulator = () => refreshSoon("simulator", simulatorUrl);

  // The simulator card follows the module's connection when it shows otherwise (a simulator
  // started or stopped elsewhere). One stopping reports "disconnected" just before its
  // process ends, so look again a few times; a card that already agrees (say, the answer to
  // this page's own Stop, with its message) is left alone.
  const FOLLOW_DELAYS_MS = [REFRESH_DELAY_MS, 1000, 3000, 6000];
  const simulatorState = () => document.querySelector("#simulator .simulator-state")?.dataset.state;
  function followSimulator(expected) {
    for (const delay of FOLLOW_DELAYS_MS) {
      setTimeout(() => {
        if (simulatorState() !== expected) replaceFrom("simulator", simulatorUrl);
      }, delay);
    }
  }

  const ON_EVENT = {
    "twin.desired_received": refreshTwin,
    "twin.reported_sent": refreshTwin,
    "module.connected": () => {
      showConnection("Connected");
      refreshTwin();
      followSimulator("running");
    },
    "module.disconnected": () => {
      showConnection("Disconnected");
      followSimulator("stopped");
    },
  };

  // The inline desired form wrote the twin (its answer carries HX-Trigger: twin-changed):
  // the twin as it is now, not as read for an earlier event.
  document.body.addEventListener("twin-changed", () => refreshSoon("twin", twinUrl));

  // -- the websocket, reconnecting with backoff --------------------------------------------
  // A browser cannot tell why a websocket was refused; a page can: it sends someone logged
  // out to the login page, and answers 403 to a user without a role. (The simulator card:
  // it does not read the hub.)
  async function signedOut() {
    try {
      const response = await fetch(simulatorUrl, { redirect: "manual" });
      return response.type === "opaqueredirect" || response.status === 403;
    } catch {
      return false; // the server is away: keep trying
    }
  }

  let retry = FIRST_RETRY_MS;
  let opened = false;

  function connect() {
    const socket = new WebSocket(socketUrl);
    socket.addEventListener("open", () => {
      retry = FIRST_RETRY_MS;
      setStatus("open", "Live");
      // What was missed meanwhile comes replayed (the server keeps a module's latest events);
      // the simulator card does not depend on events alone.
      if (opened) refreshSimulator();
      opened = true;
    });
    socket.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (!showEvent(event) || event.at <= caughtUpTo) return; // old news: shown only
      caughtUpTo = event.at;
      ON_EVENT[event.type]?.();
    });
    socket.addEventListener("close", async () => {
      if (await signedOut()) {
        setStatus("closed", "Disconnected: your session has ended. Reload the page to log in again.");
        return; // retrying would be refused the same way
      }
      setStatus("closed", `Disconnected: reconnecting in ${Math.round(retry / 1000)} s…`);
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, LAST_RETRY_MS);
    });
  }

  connect();
})();
