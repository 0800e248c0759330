// The browser phone: the page sends what the caller does and shows what the server played.
// The server signs every webhook; this page only carries the call it was handed (`call`,
// signed by the server) from one answer to the next. Everything is set as text, never as HTML.
"use strict";

(function () {
  const api = document.body.dataset.api;
  const $ = (id) => document.getElementById(id);
  const state = {
    call: null, waiting: null, ended: true, onHold: false, busy: false, keys: "",
    outboxAfter: 0, rings: 0, answered: 0,
  };

  async function post(path, body) {
    const response = await fetch(api + path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    return data;
  }

  function line(kind, text) {
    const item = document.createElement("li");
    item.className = kind;
    item.textContent = text;
    $("transcript").append(item);
    item.scrollIntoView({ block: "nearest" });
  }

  function twiml(entry) {
    const item = document.createElement("li");
    item.className = "twiml";
    const request = document.createElement("div");
    request.className = "request";
    request.textContent = entry.request;
    const body = document.createElement("pre");
    body.textContent = entry.body;
    item.append(request, body);
    $("transcript").append(item);
  }

  function setStatus(text, kind) {
    $("status").textContent = text;
    $("status").dataset.state = kind;
  }

  function show(view) {
    state.call = view.call;
    state.waiting = view.waiting;
    state.ended = view.waiting === null;
    state.onHold = view.on_hold;
    view.twiml.forEach(twiml);
    view.lines.forEach((l) => line(l.kind, l.text));
    if (view.waiting) {
      const ways = [];
      if (view.waiting.dtmf) {
        const end = view.waiting.finish_on_key ? `, end with ${view.waiting.finish_on_key}` : "";
        const count = view.waiting.num_digits ? `${view.waiting.num_digits} key(s)` : "keys";
        ways.push(count + end);
      }
      if (view.waiting.speech) ways.push("speech");
      setStatus(`The IVR is listening: ${ways.join(" or ")}.`, "waiting");
    } else if (view.outcome === "enqueued") {
      const hold = view.on_hold ? " (on hold: Hang up ends the call)" : "";
      setStatus(`In queue ${view.queue}${hold}.`, "enqueued");
    } else if (view.outcome === "error") {
      setStatus("The service failed the call.", "error");
    } else {
      setStatus("The call has ended.", "ended");
    }
    refresh();
  }

  function refresh() {
    const listening = !state.busy && state.waiting !== null;
    const dtmf = listening && state.waiting.dtmf;
    const speech = listening && state.waiting.speech;
    document.querySelectorAll("#keypad .key").forEach((b) => { b.disabled = !dtmf; });
    $("send-keys").disabled = !dtmf || state.keys === "";
    $("clear-keys").disabled = !dtmf || state.keys === "";
    $("silence").disabled = !listening;
    $("words").disabled = $("confidence").disabled = $("say").disabled = !speech;
    $("dial-button").disabled = state.busy;
    $("hangup").disabled = state.busy || state.call === null || (state.ended && !state.onHold);
    $("answer-callback").disabled = state.busy || !state.ended || state.rings <= state.answered;
    $("save-button").disabled = state.busy || state.call === null || !state.ended;
    $("display").textContent = state.keys;
  }

  async function move(path, body) {
    state.busy = true;
    refresh();
    try {
      const view = await post(path, Object.assign({ call: state.call }, body));
      if (path === "/callback") state.answered = state.rings;
      show(view);
    } catch (error) {
      line("error", `(${error.message})`);
    } finally {
      state.busy = false;
      refresh();
    }
  }

  function sendKeys() {
    const keys = state.keys;
    state.keys = "";
    if (keys) move("/answer", { keys: keys });
  }

  function press(key) {
    state.keys += key;
    const w = state.waiting;
    const digits = state.keys.replace(/[#]$/, "").length;
    if ((w.finish_on_key && key === w.finish_on_key) || (w.num_digits && digits >= w.num_digits)) {
      sendKeys();
    } else {
      refresh();
    }
  }

  $("dial").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("transcript").replaceChildren();
    $("saved").textContent = "";
    state.keys = "";
    state.call = null;
    state.busy = true;
    refresh();
    try {
      const view = await post("/dial", { from: $("from").value.trim(), stir_verstat: $("verstat").value });
      state.outboxAfter = view.outbox_from;
      state.rings = state.answered = 0;
      $("outbox").replaceChildren();
      show(view);
    } catch (error) {
      line("error", `(${error.message})`);
    } finally {
      state.busy = false;
      refresh();
    }
  });
  document.querySelectorAll("#keypad .key").forEach((button) => {
    button.addEventListener("click", () => press(button.dataset.key));
  });
  $("send-keys").addEventListener("click", sendKeys);
  $("clear-keys").addEventListener("click", () => { state.keys = ""; refresh(); });
  $("silence").addEventListener("click", () => move("/answer", { silence: true }));
  $("speak").addEventListener("submit", (event) => {
    event.preventDefault();
    const words = $("words").value.trim();
    if (!words) return;
    $("words").value = "";
    move("/answer", { say: words, confidence: Number($("confidence").value) });
  });
  $("hangup").addEventListener("click", () => move("/hangup", {}));
  $("answer-callback").addEventListener("click", () => {
    line("ring", "(you answer the call back)");
    move("/callback", {});
  });
  $("show-twiml").addEventListener("change", (event) => {
    document.body.classList.toggle("show-twiml", event.target.checked);
  });
  $("save").addEventListener("submit", async (event) => {
    event.preventDefault();
    const saved = $("saved");
    try {
      const result = await post("/save", { call: state.call, name: $("scenario-name").value.trim() });
      saved.dataset.state = "saved";
      saved.textContent = `Saved ${result.file}\nReplay it: ${result.command}`;
    } catch (error) {
      saved.dataset.state = "error";
      saved.textContent = error.message;
    }
  });

  async function pollOutbox() {
    try {
      const response = await fetch(`${api}/outbox?after=${state.outboxAfter}`);
      if (response.ok) {
        const data = await response.json();
        data.messages.forEach((m) => {
          const item = document.createElement("li");
          item.className = m.channel;
          const channel = document.createElement("span");
          channel.className = "channel";
          const names = { sms: "Text to", email: "Email to", call: "Call back to" };
          channel.textContent = `${names[m.channel] || m.channel} ${m.to}`;
          const text = m.subject ? `${m.subject}: ${m.body}` : m.body;
          item.append(channel, document.createTextNode(text));
          $("outbox").append(item);
          if (m.channel === "call" && state.call !== null) {
            state.rings += 1;
            line("ring", `(the phone on file ${m.to} rings: answer the call back)`);
          }
        });
        state.outboxAfter = Math.max(state.outboxAfter, data.count);
        refresh();
      }
    } catch (error) {
      // the dev server restarting; the next poll tries again
    }
    window.setTimeout(pollOutbox, 1000);
  }

  refresh();
  pollOutbox();
})();
