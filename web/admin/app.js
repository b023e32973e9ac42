// app.js — the admin dashboard. Talks to posternd's /api/v1 with the session cookie (set by
// POST /login) and the CSRF token (GET /api/v1/session) on every change. No framework, no
// build step; everything that comes from the server is put in the page as text, never as HTML.
'use strict';

const S = { csrf: null, screen: 'dashboard', timer: null, pending: false, lastOk: null };
const $ = (sel) => document.querySelector(sel);
const SVGNS = 'http://www.w3.org/2000/svg';
const API_TIMEOUT_MS = 15000;

class ApiError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}

// One API call. Changes carry X-CSRF-Token; every call is bounded in time (a database or node
// that does not answer shows as an error, not as a page that hangs).
async function api(method, path, body) {
  const headers = {};
  if (method !== 'GET') headers['X-CSRF-Token'] = S.csrf || '';
  let data;
  if (body instanceof ArrayBuffer) { data = body; headers['Content-Type'] = 'application/octet-stream'; }
  else if (body !== undefined) { data = JSON.stringify(body); headers['Content-Type'] = 'application/json'; }
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), API_TIMEOUT_MS);
  let r;
  try {
    r = await fetch(path, { method, headers, body: data, credentials: 'same-origin', cache: 'no-store', signal: ctl.signal });
  } catch (e) {
    throw new ApiError(0, 'posternd did not answer (' + (e.name === 'AbortError' ? 'timed out' : e.message) + ')');
  } finally {
    clearTimeout(t);
  }
  let j = null;
  const text = await r.text();
  try { j = text ? JSON.parse(text) : null; } catch (e) { j = text; }
  if (r.status === 401 && path !== '/login') { showLogin('Your session has ended: log in again.'); }
  if (!r.ok) {
    let msg = (j && j.error) || ('HTTP ' + r.status);
    if (r.status === 503) msg = 'Database unavailable: ' + msg;
    if (r.status === 403 && !(j && j.error)) msg = 'refused (403): the page has no valid CSRF token';
    throw new ApiError(r.status, msg, j);
  }
  return j;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function row(tbody, cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? '' : String(c);
    tr.appendChild(td);
  }
  if (cells.length === 1) tr.firstChild.colSpan = 99;  // a message in place of the rows
  tbody.appendChild(tr);
  return tr;
}
function button(text, cls, onclick) {
  const b = el('button', text, cls);
  b.type = 'button';
  b.addEventListener('click', onclick);
  return b;
}
function clear(sel) { const e = typeof sel === 'string' ? $(sel) : sel; while (e.firstChild) e.removeChild(e.firstChild); return e; }
function flash(text, isError) {
  const f = $('#flash');
  f.textContent = text;
  f.className = 'flash' + (isError ? ' error' : ' ok');
  f.hidden = false;
}
function fmtTime(unix) { return unix ? new Date(unix * 1000).toISOString().replace('.000', '') : '-'; }
function fmtAge(s) {
  if (s === null || s === undefined) return '-';
  if (s >= 86400) return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  if (s >= 3600) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  return Math.floor(s / 60) + 'm';
}
// Runs an action, shows its outcome, refreshes the screen.
async function act(what, fn) {
  try {
    const j = await fn();
    flash(what + ': ' + ((j && (j.message || j.result)) || 'done'));
    return j;
  } catch (e) {
    flash(what + ' failed: ' + e.message, true);
    return null;
  } finally {
    refresh();
  }
}
function readFile(input, asText) {
  return new Promise((resolve, reject) => {
    const f = input.files && input.files[0];
    if (!f) return resolve(null);
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(new Error('cannot read ' + f.name));
    if (asText) r.readAsText(f); else r.readAsArrayBuffer(f);
  });
}
function b64(buf) {
  const bytes = new Uint8Array(buf);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

// --- login ---------------------------------------------------------------------------------

function showLogin(msg) {
  S.csrf = null;
  $('#app').hidden = true;
  $('#nav').hidden = true;
  $('#login-screen').hidden = false;
  $('#login-error').textContent = msg || '';
  if (S.timer) { clearTimeout(S.timer); S.timer = null; }
}
function showApp() {
  $('#login-screen').hidden = true;
  $('#app').hidden = false;
  $('#nav').hidden = false;
  route();
}
async function start() {
  try {
    const s = await api('GET', '/api/v1/session');
    S.csrf = s.csrf;
    showApp();
  } catch (e) {
    if (e.status !== 401) showLogin('Cannot reach posternd: ' + e.message);
  }
}
$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('#login-error').textContent = '';
  try {
    const j = await api('POST', '/login', { password: $('#password').value });
    $('#password').value = '';
    S.csrf = j.csrf;
    showApp();
  } catch (e) {
    $('#login-error').textContent = e.status === 401 ? 'Wrong password.' : e.message;
  }
});
$('#logout').addEventListener('click', async () => {
  try { await api('POST', '/logout'); } catch (e) { /* the session is gone either way */ }
  showLogin('Logged out.');
});

// --- screens -------------------------------------------------------------------------------

function route() {
  const name = (location.hash || '#dashboard').slice(1);
  S.screen = document.getElementById('screen-' + name) ? name : 'dashboard';
  for (const s of document.querySelectorAll('.screen')) s.hidden = s.id !== 'screen-' + S.screen;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('current', a.dataset.screen === S.screen);
  refresh();
}
window.addEventListener('hashchange', route);

const loaders = {
  dashboard: loadDashboard, certificates: loadCerts, licenses: loadLicenses, patterns: loadPatterns,
  queue: loadQueue, quarantine: loadQuarantine,
};
// Loads the current screen; the dashboard again every 2 s (one request round at a time).
async function refresh() {
  if (S.csrf === null || $('#app').hidden) return;
  if (S.timer) { clearTimeout(S.timer); S.timer = null; }
  if (S.pending) { S.again = true; return; }
  S.pending = true;
  try {
    await loaders[S.screen]();
  } catch (e) {
    if (e.status !== 401) flash(e.message, true);
  } finally {
    S.pending = false;
  }
  if (S.again) { S.again = false; return refresh(); }
  if (S.screen === 'dashboard' && S.csrf !== null) S.timer = setTimeout(refresh, 2000);
}

// Each part of a screen loads on its own: one that fails (503 while the database is down)
// says so in place, the others still show.
async function part(promise, onOk, onErr) {
  try { onOk(await promise); return true; } catch (e) { if (e.status === 401) throw e; onErr(e); return false; }
}

// --- dashboard -----------------------------------------------------------------------------

const SEED000_HINT = 'Workaround A: serve the admin and EUQ consoles with the default_mta certificate ' +
  '(the same as posternctl cert assign default_mta --role admin,euq). The console keeps running; nothing restarts.';

async function workaroundA() {
  const j = await act('Workaround A (default_mta to the admin and EUQ consoles)',
    () => api('POST', '/api/v1/certificates/default_mta/assign', { roles: ['admin', 'euq'] }));
  if (j) flash('Workaround A applied: the admin and EUQ consoles now serve default_mta.');
}

async function loadDashboard() {
  const [health, alerts, roles, lic, pat, thr, events] = await Promise.allSettled([
    api('GET', '/api/v1/health'), api('GET', '/api/v1/alerts'), api('GET', '/api/v1/roles'),
    api('GET', '/api/v1/licenses'), api('GET', '/api/v1/patterns'), api('GET', '/api/v1/stats/throughput'),
    api('GET', '/api/v1/events?limit=15')]);
  for (const r of [health, alerts, roles, lic, pat, thr, events])
    if (r.status === 'rejected' && r.reason.status === 401) throw r.reason;
  const list = clear('#alerts');
  const items = [];  // shown errors first, then warnings, then notices; seed 000's alert on top
  const add = (cls, text, code, extra) => {
    const li = el('li', null, 'alert ' + cls);
    li.dataset.code = code;
    li.appendChild(el('span', text, 'alert-text'));
    if (extra) for (const x of extra) li.appendChild(x);
    const rank = (code === 'CERT_INVALID_IN_USE' ? 0 : code === 'DATABASE_UNAVAILABLE' ? 1 : 2) * 10 +
      (cls === 'error' ? 0 : cls === 'warning' ? 1 : 2);
    items.push([rank, items.length, li]);
  };
  // Database.
  const dbdown = health.status === 'fulfilled' && health.value.database !== 'up';
  const banner = $('#dbdown');
  banner.hidden = !dbdown;
  banner.textContent = dbdown ? 'Database unavailable: mail flows on the cached state; events, certificates and ' +
    'the quarantine index wait for it. This page shows what it can.' : '';
  if (dbdown) add('error', 'Database unavailable (DATABASE_UNAVAILABLE): the control-plane database does not answer.', 'DATABASE_UNAVAILABLE');
  if (health.status === 'rejected') add('error', 'posternd health: ' + health.reason.message, 'HEALTH');
  // License notices first from the licenses themselves (their exact texts; they show without
  // the database too), then every open alert not already shown.
  const shown = new Set();
  if (lic.status === 'fulfilled') {
    for (const l of lic.value.licenses || []) {
      if (!l.notice || shown.has(l.notice)) continue;
      shown.add(l.notice);
      add(l.state === 'not activated' ? 'info' : l.state === 'expiring' ? 'warning' : 'error', l.notice,
        'LICENSE_' + l.license.toUpperCase());
    }
  }
  if (alerts.status === 'fulfilled') {
    for (const a of alerts.value) {
      if (shown.has(a.text) || (dbdown && a.code === 'DATABASE_UNAVAILABLE')) continue;
      shown.add(a.text);
      const extra = [];
      if (a.code === 'CERT_INVALID_IN_USE') {
        extra.push(el('p', SEED000_HINT, 'hint'));
        extra.push(button('Apply workaround A', 'primary', workaroundA));
        extra[1].id = 'workaround-a';
      }
      add(a.severity === 'info' ? 'info' : a.severity === 'warning' ? 'warning' : 'error', a.text, a.code, extra);
    }
  } else if (!dbdown) {
    add('error', 'Alerts: ' + alerts.reason.message, 'ALERTS');
  }
  if (pat.status === 'fulfilled') {
    const p = pat.value;
    if (p.stale) add('error', 'Patterns are stale: updates are refused by the antivirus license; scanning goes on with the installed patterns.', 'PATTERNS_STALE');
    if (p.last_error) add('warning', 'The last pattern update failed: ' + p.last_error + (p.last_result ? ' (' + p.last_result + ')' : ''), 'PATTERNS_UPDATE_FAILED');
    const inst = p.installed;
    const engine = p.engine && p.engine.loaded ? 'engine loaded' : 'no engine loaded' + (p.engine && p.engine.error ? ': ' + p.engine.error : '');
    $('#dash-patterns').textContent = (inst ? 'bundle version ' + inst.version + ', issued ' + fmtTime(inst.issued_at) +
      ' (age ' + fmtAge(inst.age_seconds) + ')' : 'no signed bundle installed') + ' · ' + engine + (p.stale ? ' · STALE' : '');
  } else {
    $('#dash-patterns').textContent = pat.reason.message;
  }
  items.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (const [, , li] of items) list.appendChild(li);
  if (!list.firstChild) list.appendChild(el('li', 'No alerts.', 'alert none'));
  // Certificates per role.
  const rb = clear('#roles tbody');
  if (roles.status === 'fulfilled') {
    for (const r of roles.value) {
      const tr = row(rb, [r.role, r.certificate || '(none)', r.fingerprint || '', r.not_after || '', r.generation || '']);
      tr.children[2].className = 'fp';
      tr.dataset.role = r.role;
    }
  } else row(rb, [roles.reason.message]);
  // Licenses.
  const lb = clear('#dash-licenses tbody');
  if (lic.status === 'fulfilled') {
    for (const l of lic.value.licenses || [])
      row(lb, [l.name, l.state, l.expires || '-', l.state === 'grace' ? l.grace_days_left + ' (grace)' : (l.days_left ?? '-')]);
  } else row(lb, [lic.reason.message]);
  // Queue.
  if (health.status === 'fulfilled') {
    $('#dash-queue').textContent = health.value.queue + ' messages queued';
    $('#status').textContent = 'node ' + health.value.node + ' · database ' + health.value.database +
      ' · updated ' + new Date().toISOString().slice(11, 19) + ' UTC';
    $('#status').dataset.ok = '1';
  }
  // Throughput.
  if (thr.status === 'fulfilled') drawThroughput(thr.value);
  else { clear('#throughput'); $('#throughput-totals').textContent = thr.reason.message; }
  // Events.
  const eb = clear('#events tbody');
  if (events.status === 'fulfilled') for (const e of events.value) row(eb, [e.at, e.severity, e.code, e.queue_id, e.text]);
  else row(eb, [events.reason.message]);
}

const SERIES = [['in', 'messages in'], ['delivered', 'delivered'], ['deferred', 'deferred'], ['bounced', 'bounced'],
  ['rejected', 'rejected by the gate']];

function drawThroughput(t) {
  const box = clear('#throughput');
  const W = 640, H = 170, L = 36, B = 20, T = 8;
  const mins = t.minutes || [];
  let max = 1;
  for (const m of mins) for (const [k] of SERIES) max = Math.max(max, m[k]);
  const svg = document.createElementNS(SVGNS, 'svg');
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('role', 'img');
  const x = (i) => L + (W - L - 8) * i / Math.max(1, mins.length - 1);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const line = (x1, y1, x2, y2, cls) => {
    const l = document.createElementNS(SVGNS, 'line');
    l.setAttribute('x1', x1); l.setAttribute('y1', y1); l.setAttribute('x2', x2); l.setAttribute('y2', y2);
    l.setAttribute('class', cls);
    svg.appendChild(l);
  };
  const text = (tx, ty, s, cls) => {
    const e = document.createElementNS(SVGNS, 'text');
    e.setAttribute('x', tx); e.setAttribute('y', ty); e.setAttribute('class', cls || 'axis-label');
    e.textContent = s;
    svg.appendChild(e);
  };
  line(L, y(0), W - 8, y(0), 'axis');
  line(L, T, L, y(0), 'axis');
  text(2, y(max) + 4, String(max));
  text(2, y(0), '0');
  if (mins.length) {
    text(L, H - 4, new Date(mins[0].t * 1000).toISOString().slice(11, 16));
    text(W - 48, H - 4, new Date(mins[mins.length - 1].t * 1000).toISOString().slice(11, 16));
  }
  for (const [k] of SERIES) {
    const pl = document.createElementNS(SVGNS, 'polyline');
    pl.setAttribute('points', mins.map((m, i) => x(i).toFixed(1) + ',' + y(m[k]).toFixed(1)).join(' '));
    pl.setAttribute('class', 'series s-' + k);
    pl.dataset.series = k;
    pl.dataset.total = String(mins.reduce((a, m) => a + m[k], 0));
    svg.appendChild(pl);
  }
  box.appendChild(svg);
  const legend = el('ul', null, 'legend');
  for (const [k, label] of SERIES) {
    const li = el('li', null);
    li.appendChild(el('span', '', 'swatch s-' + k));
    li.appendChild(document.createTextNode(label));
    legend.appendChild(li);
  }
  box.appendChild(legend);
  const tot = t.totals || {};
  $('#throughput-totals').textContent = 'last hour: ' + SERIES.map(([k, label]) => label + ' ' + (tot[k] || 0)).join(' · ');
}

// --- certificates --------------------------------------------------------------------------

let assignName = null;
async function loadCerts() {
  $('#certs-error').textContent = '';
  await part(api('GET', '/api/v1/certificates'), (j) => {
    const list = Array.isArray(j) ? j : (j.certificates || []);
    const tb = clear('#certs tbody');
    for (const c of list) {
      const actions = el('span', null, 'actions');
      actions.appendChild(button('Export', 'small', () => exportCert(c.name)));
      if (c.kind !== 'csr' && c.kind !== 'file') actions.appendChild(button('Assign…', 'small', () => openAssign(c.name)));
      if (c.status !== 'in use') actions.appendChild(button('Delete', 'small danger', () =>
        act('Delete ' + c.name, () => api('DELETE', '/api/v1/certificates/' + encodeURIComponent(c.name)))));
      const tr = row(tb, [c.name, c.kind, c.status, c.valid ? 'yes' : 'no' + (c.invalid_reason ? ' (' + c.invalid_reason + ')' : ''),
        c.subject, c.not_after || '', (c.roles || []).join(', '), actions]);
      tr.dataset.name = c.name;
    }
  }, (e) => { $('#certs-error').textContent = e.message; });
}
function openAssign(name) {
  assignName = name;
  $('#assign-name').textContent = name;
  for (const c of document.querySelectorAll('.assign-role')) c.checked = false;
  $('#assign-box').hidden = false;
}
$('#assign-cancel').addEventListener('click', () => { $('#assign-box').hidden = true; });
$('#assign-ok').addEventListener('click', () => {
  const roles = [...document.querySelectorAll('.assign-role')].filter((c) => c.checked).map((c) => c.value);
  $('#assign-box').hidden = true;
  act('Assign ' + assignName + ' to ' + roles.join(', '),
    () => api('POST', '/api/v1/certificates/' + encodeURIComponent(assignName) + '/assign', { roles }));
});
async function exportCert(name) {
  try {
    const j = await api('POST', '/api/v1/certificates/' + encodeURIComponent(name) + '/export', {});
    const out = $('#cert-export');
    out.textContent = (j.cert_pem || '') + (j.chain_pem || '');
    out.hidden = false;
    flash('Exported ' + name + ' (the certificate and its chain, below).');
  } catch (e) { flash('Export failed: ' + e.message, true); }
}
$('#csr-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const body = {};
  for (const k of ['name', 'key', 'country', 'state', 'locality', 'organisation', 'unit', 'cn', 'email'])
    if (f.elements[k].value) body[k] = f.elements[k].value;
  const sans = f.elements.sans.value.split(',').map((s) => s.trim()).filter(Boolean);
  if (sans.length) body.sans = sans;
  const j = await act('CSR ' + body.name, () => api('POST', '/api/v1/certificates/csr', body));
  if (j && j.csr_pem) { $('#csr-out').textContent = j.csr_pem; $('#csr-out').hidden = false; }
});
$('#import-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('#import-cert');
  const f = input.files && input.files[0];
  if (!f) return flash('Choose a certificate file first.', true);
  const body = { filename: f.name };
  if (/\.(p12|pfx)$/i.test(f.name)) body.pkcs12 = b64(await readFile(input, false));
  else body.cert_pem = await readFile(input, true);
  const key = await readFile($('#import-key'), true);
  if (key) body.key_pem = key;
  if ($('#import-pass').value) body.passphrase = $('#import-pass').value;
  if ($('#import-name').value) body.name = $('#import-name').value;
  await act('Import ' + f.name, () => api('POST', '/api/v1/certificates/import', body));
  $('#import-pass').value = '';
});
$('#backup-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const j = await act('Backup', () => api('POST', '/api/v1/certificates/backup', { password: $('#backup-pass').value }));
  $('#backup-pass').value = '';
  if (j && j.file) {
    const bin = atob(j.file);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; ++i) bytes[i] = bin.charCodeAt(i);
    const a = $('#backup-link');
    a.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
    a.hidden = false;
  }
});
$('#restore-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const data = await readFile($('#restore-file'), false);
  if (!data) return flash('Choose a backup file first.', true);
  await act('Restore', async () => {
    const j = await api('POST', '/api/v1/certificates/restore', { file: b64(data), password: $('#restore-pass').value });
    return { message: j.entries + ' entries and ' + j.bindings + ' bindings restored' };
  });
  $('#restore-pass').value = '';
});

// --- licenses ------------------------------------------------------------------------------

async function loadLicenses() {
  $('#licenses-error').textContent = '';
  await part(api('GET', '/api/v1/licenses'), (j) => {
    const notes = clear('#license-notices');
    const tb = clear('#licenses tbody');
    for (const l of j.licenses || []) {
      if (l.notice) { const li = el('li', l.notice, 'alert ' + (l.state === 'not activated' ? 'info' : 'warning')); li.dataset.license = l.license; notes.appendChild(li); }
      let cell = '';
      if (l.can_activate) {
        cell = el('span', null, 'inline');
        const inp = el('input');
        inp.id = 'code-' + l.license;
        inp.placeholder = 'activation code';
        cell.appendChild(inp);
        const b = button('Activate', 'small', () => act('Activate ' + l.name,
          () => api('POST', '/api/v1/licenses/' + l.license + '/activate', { code: inp.value.trim() })));
        b.id = 'activate-' + l.license;
        cell.appendChild(b);
      }
      const tr = row(tb, [l.name, l.state, l.code || '-', l.expires || '-', l.days_left ?? '-', l.grace_end || '-',
        l.grace_days_left ?? '-', cell]);
      tr.dataset.license = l.license;
    }
    $('#license-hide-optional').hidden = !!j.hide_optional;
    $('#license-show-optional').hidden = !j.hide_optional;
  }, (e) => { $('#licenses-error').textContent = e.message; });
}
async function licenseAction(what, path, done) {
  try {
    const j = await api('POST', path);
    $('#license-result').textContent = j.message || done || 'done';
    flash(what + ': ' + (j.message || done || 'done'));
  } catch (e) {
    // update-status answers 502 with its message when the server cannot be reached.
    const msg = (e.body && e.body.message) || e.message;
    $('#license-result').textContent = msg;
    flash(what + ': ' + msg, true);
  }
  refresh();
}
$('#license-update-status').addEventListener('click', () => licenseAction('Update status', '/api/v1/licenses/update-status'));
$('#license-hide-optional').addEventListener('click', () => licenseAction('Hide optional notices', '/api/v1/licenses/hide-optional',
  'The notices of optional licenses that are not activated are hidden.'));
$('#license-show-optional').addEventListener('click', () => licenseAction('Show optional notices', '/api/v1/licenses/show-optional',
  'The notices of optional licenses that are not activated are shown.'));

// --- patterns ------------------------------------------------------------------------------

async function loadPatterns() {
  $('#patterns-error').textContent = '';
  await part(api('GET', '/api/v1/patterns'), (p) => {
    const dl = clear('#patterns');
    const item = (k, v) => { dl.appendChild(el('dt', k)); dl.appendChild(el('dd', v)); };
    const i = p.installed;
    item('Installed', i ? 'version ' + i.version + ', issued ' + fmtTime(i.issued_at) + ' (age ' + fmtAge(i.age_seconds) + ')' : 'none');
    if (i) item('Signer', i.signer + ', expires ' + fmtTime(i.signer_not_after) + ' (' + i.signer_days_left + ' days)');
    item('Updates', p.updates_allowed ? 'allowed' : 'refused by the antivirus license (patterns are stale)');
    item('Server', p.server || '(none)');
    item('Last check', fmtTime(p.last_check) + ', last success ' + fmtTime(p.last_success));
    item('Last result', p.last_result || '-');
    item('Engine', p.engine && p.engine.loaded ? 'loaded' : 'not loaded' + (p.engine && p.engine.error ? ': ' + p.engine.error : ''));
  }, (e) => { $('#patterns-error').textContent = e.message; });
}
function patternsResult(j) {
  return j ? (j.result || '') + (j.version !== undefined ? ' (version ' + j.version + ')' : '') + (j.error ? ': ' + j.error : '') : '';
}
$('#patterns-update').addEventListener('click', async () => {
  try {
    const j = await api('POST', '/api/v1/patterns/update');
    $('#patterns-result').textContent = 'Update: ' + patternsResult(j);
  } catch (e) {
    $('#patterns-result').textContent = 'Update failed: ' + (e.body ? patternsResult(e.body) || e.message : e.message);
  }
  refresh();
});
$('#bundle-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const data = await readFile($('#bundle-file'), false);
  if (!data) return flash('Choose a bundle file first.', true);
  try {
    const j = await api('POST', '/api/v1/patterns/import', data);
    $('#patterns-result').textContent = 'Import: ' + patternsResult(j);
  } catch (e) {
    $('#patterns-result').textContent = 'Import failed: ' + (e.body ? patternsResult(e.body) || e.message : e.message);
  }
  refresh();
});

// --- queue ---------------------------------------------------------------------------------

async function loadQueue() {
  $('#queue-error').textContent = '';
  await part(api('GET', '/api/v1/queue?limit=200'), (j) => {
    $('#queue-total').textContent = j.total + ' messages' + (j.next_after ? ' (the first ' + j.messages.length + ' shown)' : '');
    const tb = clear('#queue tbody');
    for (const m of j.messages) {
      const id = m.queue_id;
      const a = el('span', null, 'actions');
      const q = (verb) => '/api/v1/queue/' + id + '/' + verb;
      a.appendChild(button('Show', 'small', async () => {
        try { const s = await api('GET', '/api/v1/queue/' + id); $('#queue-show').textContent = JSON.stringify(s, null, 2); $('#queue-show').hidden = false; }
        catch (e) { flash(e.message, true); }
      }));
      a.appendChild(button('Flush', 'small', () => act('Flush ' + id, () => api('POST', q('flush')))));
      a.appendChild(button(m.held ? 'Release' : 'Hold', 'small', () => act((m.held ? 'Release ' : 'Hold ') + id, () => api('POST', q(m.held ? 'release' : 'hold')))));
      a.appendChild(button('Delete', 'small danger', () => act('Delete ' + id, () => api('DELETE', '/api/v1/queue/' + id))));
      const tr = row(tb, [id, m.from || '<>', (m.recipients || []).map((r) => r.address + ' (' + r.state + ')').join(', '), m.size, m.attempts, m.held ? 'yes' : 'no', a]);
      tr.dataset.qid = id;
    }
  }, (e) => { $('#queue-error').textContent = e.message; });
}
$('#queue-flush-all').addEventListener('click', () => act('Flush the whole queue', () => api('POST', '/api/v1/queue/flush')));
$('#queue-refresh').addEventListener('click', () => refresh());

// --- quarantine ----------------------------------------------------------------------------

async function loadQuarantine() {
  $('#quarantine-error').textContent = '';
  const q = new URLSearchParams();
  for (const [k, sel] of [['rcpt', '#q-rcpt'], ['sender', '#q-sender'], ['signature', '#q-signature']])
    if ($(sel).value) q.set(k, $(sel).value);
  await part(api('GET', '/api/v1/quarantine' + (q.toString() ? '?' + q : '')), (j) => {
    const tb = clear('#quarantine tbody');
    for (const e of j.entries || []) {
      const a = el('span', null, 'actions');
      a.appendChild(button('Headers', 'small', async () => {
        try { const s = await api('GET', '/api/v1/quarantine/' + e.id); $('#quarantine-headers').textContent = s.headers; $('#quarantine-headers').hidden = false; }
        catch (x) { flash(x.message, true); }
      }));
      a.appendChild(button('Release', 'small', () => act('Release ' + e.id, () => api('POST', '/api/v1/quarantine/' + e.id + '/release'))));
      a.appendChild(button('Delete', 'small danger', () => act('Delete ' + e.id, () => api('DELETE', '/api/v1/quarantine/' + e.id))));
      const tr = row(tb, [e.id, e.received_at, e.sender || '<>', (e.recipients || []).join(', '), e.subject, e.signature, a]);
      tr.dataset.qid = e.id;
    }
    if (!(j.entries || []).length) row(tb, ['(nothing in the quarantine matches)']);
  }, (e) => { $('#quarantine-error').textContent = e.message; });
}
$('#quarantine-search').addEventListener('submit', (ev) => { ev.preventDefault(); refresh(); });

start();
