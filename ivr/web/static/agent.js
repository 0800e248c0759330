// The agent screen pop: asks GET /api/calls/<ref> with the agent's token every few seconds and
// shows what the API allows. Customer data is only ever set as text (textContent), never parsed
// as HTML; before authentication nothing but the verdict is shown, whatever the answer holds.
"use strict";

(() => {
  const TOKEN_KEY = "ivr.agent.token";
  const NO_CALL = "No call to show for this reference and token.";
  const UNREACHABLE = "Cannot reach the call service; trying again.";
  const LEVELS = { one_factor: "One factor", two_factor: "Two factors" };
  const METHODS = {
    pin: "PIN",
    passcode: "Spoken passcode",
    sms_otp: "Code by text message",
    email_otp: "Code by email",
    callback: "Call back to the number on file",
    service_code: "Service code from the website",
  };

  // The profile fields in the order an agent reads them; any other field follows, as named.
  const FIELDS = [
    ["first_name", "First name"],
    ["name", "Full name"],
    ["account", "Account number"],
    ["account_status", "Account status"],
    ["phone", "Phone"],
    ["email", "Email"],
    ["address", "Address"],
  ];

  const body = document.body;
  const pollMs = Number(body.dataset.pollMs) || 2000;
  const api = body.dataset.api;
  const $ = (id) => document.getElementById(id);
  const signin = $("signin");
  const lookup = $("lookup");
  const status = $("status");
  const call = $("call");

  let generation = 0;
  let timer = 0;
  let inFlight = null;

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  function refFromFragment() {
    return (new URLSearchParams(location.hash.slice(1)).get("ref") || "").trim();
  }

  function say(text) {
    status.textContent = text;
  }

  function clearCall() {
    call.hidden = true;
    call.removeAttribute("data-state");
    $("verdict").textContent = "";
    $("assurance").textContent = "";
    $("methods").replaceChildren();
    $("fields").replaceChildren();
  }

  function stop() {
    generation += 1;
    clearTimeout(timer);
    if (inFlight) inFlight.abort();
    inFlight = null;
  }

  function label(key) {
    const known = FIELDS.find(([name]) => name === key);
    if (known) return known[1];
    const words = String(key).replaceAll("_", " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function rank(key) {
    const at = FIELDS.findIndex(([name]) => name === key);
    return at === -1 ? FIELDS.length : at;
  }

  function clock(at) {
    const when = typeof at === "string" ? new Date(at) : null;
    if (when === null || Number.isNaN(when.getTime())) return null;
    return when.toLocaleTimeString([], {
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hourCycle: "h23",
    });
  }

  function render(data) {
    const level = LEVELS[data.assurance];
    const authenticated = data.authenticated === true && level !== undefined;
    say("");
    call.hidden = false;
    call.dataset.state = authenticated ? "authenticated" : "unauthenticated";
    const facts = call.querySelectorAll(".facts, #fields-heading, #fields");
    for (const part of facts) part.hidden = !authenticated;
    if (!authenticated) {
      $("verdict").textContent =
        "Not authenticated: the caller has not proven who they are yet. " +
        "Do not discuss or change the account.";
      $("assurance").textContent = "";
      $("methods").replaceChildren();
      $("fields").replaceChildren();
      return;
    }
    $("verdict").textContent = "Authenticated";
    $("assurance").textContent = level;

    const methods = (Array.isArray(data.methods) ? data.methods : []).map((proof) => {
      const item = document.createElement("li");
      item.textContent = METHODS[proof.method] || String(proof.method);
      const shown = clock(proof.at);
      if (shown !== null) {
        const time = document.createElement("time");
        time.dateTime = proof.at;
        time.textContent = shown;
        item.append(" at ", time);
      }
      return item;
    });
    $("methods").replaceChildren(...methods);

    const given = data.fields && typeof data.fields === "object" ? Object.entries(data.fields) : [];
    given.sort(([a], [b]) => rank(a) - rank(b));
    const rows = given.flatMap(([key, value]) => {
      const term = document.createElement("dt");
      term.textContent = label(key);
      const detail = document.createElement("dd");
      detail.textContent = value === null || value === undefined ? "" : String(value);
      return [term, detail];
    });
    if (rows.length === 0) {
      const none = document.createElement("dd");
      none.textContent = "Nothing more for your role at this assurance.";
      rows.push(none);
    }
    $("fields").replaceChildren(...rows);
  }

  async function poll(ref, round) {
    const controller = new AbortController();
    inFlight = controller;
    const giveUp = setTimeout(() => controller.abort(), pollMs * 2);
    try {
      const response = await fetch(api + encodeURIComponent(ref), {
        headers: { Authorization: `Bearer ${token()}`, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
        signal: controller.signal,
      });
      const data = response.status === 200 ? await response.json() : null;
      if (round !== generation) return;
      if (data !== null && data.ref === ref) {
        render(data);
      } else {
        clearCall();
        say(response.status >= 500 || response.status === 429 ? UNREACHABLE : NO_CALL);
      }
    } catch {
      if (round !== generation) return;
      clearCall();
      say(UNREACHABLE);
    } finally {
      clearTimeout(giveUp);
    }
    if (round === generation) timer = setTimeout(() => poll(ref, round), pollMs);
  }

  function start() {
    stop();
    clearCall();
    const signedIn = token() !== "";
    signin.hidden = signedIn;
    lookup.hidden = !signedIn;
    if (!signedIn) {
      say("Sign in with your agent token.");
      $("token").focus();
      return;
    }
    const ref = $("ref").value.trim();
    if (!ref) {
      say("Enter the call reference from the task.");
      return;
    }
    say("Looking up the call…");
    poll(ref, generation);
  }

  signin.addEventListener("submit", (event) => {
    event.preventDefault();
    const given = $("token").value.trim();
    $("token").value = "";
    if (!/^[\x21-\x7e]+$/.test(given)) {
      say("That is not an agent token.");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, given);
    start();
  });

  lookup.addEventListener("submit", (event) => {
    event.preventDefault();
    const ref = $("ref").value.trim();
    history.replaceState(null, "", ref ? `#ref=${encodeURIComponent(ref)}` : location.pathname);
    start();
  });

  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    start();
  });

  window.addEventListener("hashchange", () => {
    $("ref").value = refFromFragment();
    start();
  });

  $("ref").value = refFromFragment();
  start();
})();
