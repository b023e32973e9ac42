// euq.js — the end-user quarantine console (admin/euq_console.h has the API). No inline script:
// the page's Content-Security-Policy allows files from this origin only.
"use strict";
(function () {
  const $ = (s) => document.querySelector(s);
  let csrf = "";

  function show(id, on) { $(id).classList.toggle("hidden", !on); }
  function status(text, kind) {
    const s = $("#status");
    s.textContent = text;
    s.className = kind || "";
    show("#status", !!text);
  }

  // fetch with a bound: the console says what is wrong instead of hanging.
  async function api(method, path, body) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 15000);
    const opt = { method, headers: {}, credentials: "same-origin", signal: ctl.signal };
    if (body !== undefined) { opt.headers["Content-Type"] = "application/json"; opt.body = JSON.stringify(body); }
    if (method !== "GET" && csrf) opt.headers["X-CSRF-Token"] = csrf;
    try {
      const r = await fetch(path, opt);
      let j = {};
      try { j = await r.json(); } catch (e) { j = { error: "unreadable answer (HTTP " + r.status + ")" }; }
      return { status: r.status, body: j };
    } catch (e) {
      return { status: 0, body: { error: "the quarantine console does not answer; try again in a minute" } };
    } finally {
      clearTimeout(timer);
    }
  }

  function signedOut() {
    show("#console", false); show("#signout", false); $("#whoami").textContent = "";
    show("#signin", true);
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function button(td, id, label, fn) {
    const b = document.createElement("button");
    b.type = "button"; b.id = id; b.textContent = label;
    b.addEventListener("click", fn);
    td.appendChild(b);
  }

  async function preview(id) {
    const r = await api("GET", "/api/messages/" + encodeURIComponent(id));
    if (r.status !== 200) return status(r.body.error || "cannot show it", "error");
    $("#preview-id").textContent = id;
    $("#preview-headers").textContent = r.body.headers || "";
    show("#preview", true);
  }

  async function act(id, action) {
    const r = await api("POST", "/api/messages/" + encodeURIComponent(id) + "/" + action, {});
    if (r.status !== 200) return status(r.body.error || ("cannot " + action + " it"), "error");
    status(action === "release" ? "Released: the message " + id + " is on its way to you." : "Deleted: " + id + ".", "ok");
    show("#preview", false);
    await list();
  }

  async function list() {
    const r = await api("GET", "/api/messages");
    if (r.status === 401) return signedOut();
    if (r.status !== 200) return status(r.body.error || "cannot list the quarantine", "error");
    const tb = $("#messages tbody");
    tb.textContent = "";
    for (const m of r.body.messages) {
      const tr = document.createElement("tr");
      tr.id = "m-" + m.id;
      cell(tr, m.from || "<>");
      cell(tr, m.subject || "(no subject)", "subject");
      cell(tr, m.date);
      cell(tr, m.verdict, "verdict");
      const td = cell(tr, "", "actions");
      button(td, "preview-" + m.id, "Headers", () => preview(m.id));
      button(td, "release-" + m.id, "Release", () => act(m.id, "release"));
      button(td, "delete-" + m.id, "Delete", () => act(m.id, "delete"));
      tb.appendChild(tr);
    }
    show("#empty", r.body.messages.length === 0);
    show("#messages", r.body.messages.length !== 0);
  }

  async function signedIn(me) {
    csrf = me.csrf;
    $("#whoami").textContent = me.address;
    $("#address-shown").textContent = me.address;
    show("#signin", false); show("#console", true); show("#signout", true);
    if (me.database === "down") status("The database is unavailable: sign-in and digest links cannot be checked right now.", "error");
    await list();
  }

  async function start() {
    $("#signin-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      $("#signin-result").textContent = "";
      const r = await api("POST", "/api/signin", { address: $("#address").value });
      if (r.status === 200) { status("", ""); $("#signin-result").textContent = r.body.message; }
      else status(r.body.error || "cannot send the link", "error");
    });
    $("#signout").addEventListener("click", async () => {
      await api("POST", "/api/signout", {});
      csrf = ""; status("Signed out.", "ok"); signedOut();
    });

    const q = new URLSearchParams(location.search);
    const signin = q.get("signin"), link = q.get("link");
    if (signin || link) history.replaceState(null, "", "/");  // the token leaves the address bar
    if (signin) {
      const r = await api("POST", "/api/session", { token: signin });
      if (r.status === 200) { status("Signed in.", "ok"); return signedIn({ address: r.body.address, csrf: r.body.csrf }); }
      status(r.body.error || "this sign-in link is not valid", "error");
      return signedOut();
    }
    if (link) {
      const r = await api("POST", "/api/link", { token: link });
      if (r.status === 200)
        status(r.body.released ? "Released: the message " + r.body.released + " is on its way to you."
                               : "Deleted: " + r.body.deleted + ".", "ok");
      else status(r.body.error || "this link is not valid", "error");
    }
    const me = await api("GET", "/api/me");
    if (me.status === 200) return signedIn(me.body);
    if (me.status !== 401) status(me.body.error || "the console cannot be reached", "error");
    signedOut();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
