// The Web App: keys, devices, UMS ID and audit pages over /api/v1, with the session cookie and
// the CSRF token on writes. Plain JavaScript, no framework; every value from the server is put
// into the page as text, never as markup.
'use strict';

const PAGE_SIZE = 100;

const state = {
  account: '',
  rights: new Set(),
  csrf: '',
  keys: { cursors: [null], index: 0, items: [], shown: false, selected: new Set(), next: null, total: 0, seq: 0 },
  devices: { cursors: [null], index: 0, next: null, total: 0, seq: 0 },
  audit: { cursors: [null], index: 0, next: null, seq: 0 },
};

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

/// Calls the API; throws an ApiError carrying the problem's detail on refusal. A 401 means the
/// session ended: back to the sign-in page.
async function api(method, path, body, contentType) {
  const headers = {};
  let payload;
  if (body !== undefined) {
    if (contentType) {
      headers['content-type'] = contentType;
      payload = body;
    } else {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
  }
  if (method !== 'GET') headers['x-csrf-token'] = state.csrf;
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
  } catch (failure) {
    throw new ApiError(0, 'network', 'The server cannot be reached: ' + failure.message);
  }
  if (response.status === 401 && path !== '/api/v1/session') {
    location.replace('/');
    throw new ApiError(401, 'unauthorized', 'The session ended; sign in again.');
  }
  if (!response.ok) {
    let problem = {};
    try { problem = await response.json(); } catch (_) { /* not a problem body */ }
    throw new ApiError(response.status, problem.code || '',
      problem.detail || problem.title || ('The server answered ' + response.status + '.'));
  }
  return response;
}

async function json(method, path, body) {
  const response = await api(method, path, body);
  return response.status === 204 ? null : response.json();
}

function may(right) {
  return state.rights.has(right);
}

function show(element, message) {
  element.textContent = message || '';
}

function time(text) {
  if (!text) return '';
  return text.replace('T', ' ').replace('Z', ' UTC');
}

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text === null || text === undefined ? '' : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function query(params) {
  const parts = [];
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') {
      parts.push(encodeURIComponent(name) + '=' + encodeURIComponent(value));
    }
  }
  return parts.length ? '?' + parts.join('&') : '';
}

/// Saves a response body as a download named `name`.
async function download(response, name) {
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/// Runs `work` with `button` disabled, so a second click cannot send the request twice.
async function once(button, work) {
  if (button.disabled) return;
  button.disabled = true;
  try {
    await work();
  } finally {
    button.disabled = false;
  }
}

function openDialog(dialog) {
  for (const error of dialog.querySelectorAll('.error')) error.textContent = '';
  dialog.showModal();
}

for (const dialog of document.querySelectorAll('dialog')) {
  for (const cancel of dialog.querySelectorAll('button.cancel')) {
    cancel.addEventListener('click', () => dialog.close());
  }
}

// ---------------------------------------------------------------- navigation

const PAGES = ['keys', 'devices', 'ums-id', 'audit'];
const PAGE_RIGHT = { keys: 'keys:read', devices: 'devices:read', 'ums-id': 'server:admin', audit: 'audit:read' };

function route() {
  let page = location.hash.replace('#', '');
  if (!PAGES.includes(page) || !may(PAGE_RIGHT[page])) {
    page = PAGES.find((candidate) => may(PAGE_RIGHT[candidate]));
  }
  for (const candidate of PAGES) {
    $('page-' + candidate).hidden = candidate !== page;
  }
  for (const link of document.querySelectorAll('header nav a')) {
    if (link.dataset.page === page) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (page === 'keys') loadKeys();
  if (page === 'devices') loadDevices();
  if (page === 'ums-id') loadUmsId();
  if (page === 'audit') loadAudit();
  if (!page) {
    const banner = $('global-error');
    banner.hidden = false;
    banner.textContent = 'This account holds no right to any page.';
  }
}

// ---------------------------------------------------------------- keys

function keyFilter() {
  return {
    type: $('filter-type').value,
    status: $('filter-status').value,
    unit_id: $('filter-unit').value.trim(),
    comment: $('filter-comment').value.trim(),
  };
}

async function loadKeys() {
  const keys = state.keys;
  // Only the latest load draws: a slow answer to an older filter or page is dropped.
  const seq = ++keys.seq;
  show($('keys-error'), '');
  $('keys-prev').disabled = true;
  $('keys-next').disabled = true;
  try {
    const page = await json('GET', '/api/v1/keys' + query(Object.assign(keyFilter(), {
      limit: PAGE_SIZE, after: keys.cursors[keys.index], total: 'true',
    })));
    let items = page.items;
    let revealError = '';
    if (keys.shown && items.length > 0) {
      try {
        items = await json('POST', '/api/v1/keys/reveal', { ids: items.map((key) => key.id) });
      } catch (error) {
        keys.shown = false;
        revealError = error.message;
      }
    }
    if (seq !== keys.seq) return;
    keys.items = items;
    keys.next = page.next_after;
    keys.total = page.total || 0;
    keys.selected.clear();
    renderKeys();
    show($('keys-error'), revealError);
  } catch (error) {
    if (seq !== keys.seq) return;
    show($('keys-error'), error.message);
    $('keys-prev').disabled = keys.index === 0;
    $('keys-next').disabled = !keys.next;
  }
}

function renderKeys() {
  const keys = state.keys;
  const body = $('keys-table').tBodies[0];
  body.replaceChildren();
  for (const key of keys.items) {
    const row = document.createElement('tr');
    row.dataset.id = key.id;
    const pick = document.createElement('input');
    pick.type = 'checkbox';
    pick.setAttribute('aria-label', 'Select key ' + key.id);
    pick.checked = keys.selected.has(key.id);
    pick.addEventListener('change', () => {
      if (pick.checked) keys.selected.add(key.id); else keys.selected.delete(key.id);
      row.classList.toggle('selected', pick.checked);
      keyButtons();
    });
    row.classList.toggle('selected', pick.checked);
    const first = document.createElement('td');
    first.appendChild(pick);
    row.appendChild(first);
    cell(row, key.id);
    cell(row, key.unit_id || '');
    cell(row, key.key, 'mono key');
    cell(row, key.status.charAt(0).toUpperCase() + key.status.slice(1), 'status status-' + key.status);
    cell(row, time(key.usage_date));
    cell(row, key.usage_count);
    cell(row, { 'one-time': 'One-time', 'device-bound': 'Device-bound', mass: 'Mass deployment' }[key.type] || key.type);
    cell(row, key.comment, 'comment');
    body.appendChild(row);
  }
  const start = keys.index * PAGE_SIZE;
  $('keys-range').textContent = keys.items.length
    ? 'Keys ' + (start + 1) + '–' + (start + keys.items.length) + ' of ' + keys.total
    : (keys.total ? 'No keys on this page' : 'No keys');
  $('keys-prev').disabled = keys.index === 0;
  $('keys-next').disabled = !keys.next;
  $('keys-all').checked = false;
  const toggle = $('key-show');
  toggle.textContent = keys.shown ? 'Hide keys' : 'Show keys';
  toggle.setAttribute('aria-pressed', String(keys.shown));
  keyButtons();
}

function keyButtons() {
  const count = state.keys.selected.size;
  const all = $('keys-all');
  all.checked = count > 0 && count === state.keys.items.length;
  all.indeterminate = count > 0 && count < state.keys.items.length;
  $('key-edit').disabled = count !== 1;
  $('key-delete').disabled = count === 0;
  $('key-activate').disabled = count === 0;
  $('key-deactivate').disabled = count === 0;
}

$('key-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  state.keys.cursors = [null];
  state.keys.index = 0;
  loadKeys();
});
$('filter-clear').addEventListener('click', () => {
  $('key-filter').reset();
  state.keys.cursors = [null];
  state.keys.index = 0;
  loadKeys();
});
$('keys-prev').addEventListener('click', () => {
  if (state.keys.index > 0) { state.keys.index -= 1; loadKeys(); }
});
$('keys-next').addEventListener('click', () => {
  if (!state.keys.next) return;
  state.keys.cursors[state.keys.index + 1] = state.keys.next;
  state.keys.index += 1;
  loadKeys();
});
$('keys-all').addEventListener('change', (event) => {
  const keys = state.keys;
  keys.selected.clear();
  if (event.target.checked) for (const key of keys.items) keys.selected.add(key.id);
  for (const row of $('keys-table').tBodies[0].rows) {
    const on = keys.selected.has(Number(row.dataset.id));
    row.classList.toggle('selected', on);
    row.querySelector('input').checked = on;
  }
  keyButtons();
});
$('key-show').addEventListener('click', () => {
  state.keys.shown = !state.keys.shown;
  loadKeys();
});

async function changeKeys(action) {
  show($('keys-error'), '');
  try {
    await api('POST', '/api/v1/keys/' + action, { ids: Array.from(state.keys.selected) });
    await loadKeys();
    // The button just used is disabled with the selection gone: focus goes to the result.
    $('keys-range').focus();
  } catch (error) {
    show($('keys-error'), error.message);
  }
}
$('key-activate').addEventListener('click', (event) => once(event.target, () => changeKeys('activate')));
$('key-deactivate').addEventListener('click', (event) => once(event.target, () => changeKeys('deactivate')));

$('key-delete').addEventListener('click', () => {
  const ids = Array.from(state.keys.selected);
  $('confirm-text').textContent = 'Delete ' + ids.length + (ids.length === 1 ? ' key' : ' keys') +
    ' (' + ids.join(', ') + ')? Devices can no longer enroll with ' + (ids.length === 1 ? 'it' : 'them') + '.';
  confirmAction = async () => {
    await api('POST', '/api/v1/keys/delete', { ids });
    await loadKeys();
    $('keys-range').focus();
  };
  openDialog($('confirm-dialog'));
});

// Create: the three options of the UMS dialog.
/** The fewest characters of a typed mass-deployment key (ums-stub's mass_key_floor). */
const MIN_TYPED_MASS_KEY_CHARS = 16;

function createKind() {
  return document.querySelector('input[name="create-kind"]:checked').value;
}
for (const radio of document.querySelectorAll('input[name="create-kind"]')) {
  radio.addEventListener('change', () => {
    for (const part of $('create-form').querySelectorAll('[data-kind]')) {
      part.hidden = part.dataset.kind !== createKind();
    }
  });
}
$('create-random').addEventListener('change', (event) => {
  $('create-password').disabled = event.target.checked;
  if (!event.target.checked) $('create-password').focus();
});
$('key-create').addEventListener('click', async () => {
  $('create-form').reset();
  $('create-password').disabled = true;
  for (const part of $('create-form').querySelectorAll('[data-kind]')) part.hidden = part.dataset.kind !== 'one-time';
  openDialog($('create-dialog'));
  // Devices the server knows, to select from.
  const list = $('create-devices');
  list.replaceChildren();
  $('create-select').hidden = !may('devices:read');
  if (may('devices:read')) {
    try {
      const page = await json('GET', '/api/v1/devices?limit=1000');
      if (page.items.length === 0) list.textContent = 'No enrolled devices yet.';
      for (const device of page.items) {
        const label = document.createElement('label');
        const box = document.createElement('input');
        box.type = 'checkbox';
        box.value = device.unit_id;
        label.appendChild(box);
        label.appendChild(document.createTextNode(device.unit_id +
          (device.inventory ? ' (' + device.inventory.host_name + ')' : '')));
        list.appendChild(label);
      }
    } catch (error) {
      list.textContent = error.message;
    }
  }
});
$('create-form').addEventListener('submit', (event) => {
  event.preventDefault();
  once($('create-add'), createKeys);
});

async function createKeys() {
  const error = $('create-error');
  show(error, '');
  const comment = $('create-comment').value;
  try {
    const kind = createKind();
    if (kind === 'one-time') {
      const quantity = Number($('create-quantity').value);
      if (!Number.isInteger(quantity) || quantity < 1 || quantity > 100000) {
        show(error, 'Quantity: a whole number from 1 to 100000.');
        $('create-quantity').focus();
        return;
      }
      await json('POST', '/api/v1/keys', { type: 'one-time', quantity, comment });
    } else if (kind === 'device-bound') {
      const file = $('create-csv').files[0];
      const typed = $('create-units').value.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
      const picked = Array.from($('create-devices').querySelectorAll('input:checked')).map((box) => box.value);
      // Typed and selected unit IDs once each; with a CSV file, all go in one request, so the
      // keys are created all together or not at all.
      const unitIds = Array.from(new Set(typed.concat(picked)));
      if (file) {
        const text = (await file.text()).replace(/\s+$/, '');
        const body = unitIds.length ? text + '\n' + unitIds.join('\n') + '\n' : text + '\n';
        await api('POST', '/api/v1/keys/import' + query({ comment }), body, 'text/csv');
      } else if (unitIds.length > 0) {
        await json('POST', '/api/v1/keys', { type: 'device-bound', unit_ids: unitIds, comment });
      } else {
        show(error, 'Unit IDs: type at least one, import a CSV file, or select devices.');
        $('create-units').focus();
        return;
      }
    } else {
      const body = { type: 'mass', comment };
      if (!$('create-random').checked) {
        const password = $('create-password').value;
        if (!password) {
          show(error, 'Key: type the key, or generate a random one.');
          $('create-password').focus();
          return;
        }
        // The server's floor for a typed mass key: the length is checked here, before anything
        // is sent; how guessable it is only the server estimates, and its refusal says why.
        if (Array.from(password).length < MIN_TYPED_MASS_KEY_CHARS) {
          show(error, 'Key: a typed mass-deployment key has at least ' + MIN_TYPED_MASS_KEY_CHARS +
            ' characters, or generate a random one.');
          $('create-password').focus();
          return;
        }
        body.password = password;
      }
      await json('POST', '/api/v1/keys', body);
    }
    $('create-dialog').close();
    state.keys.cursors = [null];
    state.keys.index = 0;
    await loadKeys();
  } catch (failure) {
    show(error, failure.status === 409 && createKind() === 'mass'
      ? 'Another key already has this key value; choose another one.'
      : failure.message);
  }
}

$('key-edit').addEventListener('click', () => {
  const id = Array.from(state.keys.selected)[0];
  const key = state.keys.items.find((item) => item.id === id);
  $('edit-title').textContent = 'Edit key ' + id;
  $('edit-comment').value = key ? key.comment : '';
  openDialog($('edit-dialog'));
});
$('edit-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const id = Array.from(state.keys.selected)[0];
  try {
    await json('PATCH', '/api/v1/keys/' + id, { comment: $('edit-comment').value });
    $('edit-dialog').close();
    await loadKeys();
  } catch (error) {
    show($('edit-error'), error.message);
  }
});

$('key-export').addEventListener('click', () => {
  const count = state.keys.selected.size;
  $('export-selected').disabled = count === 0;
  $('export-selected').parentElement.lastChild.textContent = ' The selected keys (' + count + ')';
  (count > 0 ? $('export-selected') : $('export-all')).checked = true;
  openDialog($('export-dialog'));
});

/// `HOST`, `HOST:PORT` or `[IPV6]:PORT` as the API's {host, port}.
function parseServer(text) {
  let host = text;
  let port = 8443;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracket) {
    host = bracket[1];
    if (bracket[2]) port = Number(bracket[2]);
  } else if ((text.match(/:/g) || []).length === 1) {
    const [name, number] = text.split(':');
    host = name;
    port = Number(number);
  }
  if (!host || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ApiError(422, 'invalid', 'Servers: "' + text + '" is not HOST or HOST:PORT (port 1 to 65535).');
  }
  return { host, port };
}

$('export-form').addEventListener('submit', (event) => {
  event.preventDefault();
  once($('export-form').querySelector('button[type=submit]'), exportKeys);
});

async function exportKeys() {
  const format = $('export-format').value;
  const error = $('export-error');
  try {
    const servers = $('export-servers').value.split(/\r?\n/).map((line) => line.trim()).filter(Boolean).map(parseServer);
    const ids = $('export-selected').checked ? Array.from(state.keys.selected) : [];
    const response = await api('POST', '/api/v1/keys/export', { ids, servers, format });
    await download(response, { xml: 'icg.xml', html: 'icg.html', text: 'icg.txt' }[format]);
    $('export-dialog').close();
  } catch (failure) {
    show(error, failure.message);
  }
}

// ---------------------------------------------------------------- confirmation

let confirmAction = null;
$('confirm-form').addEventListener('submit', (event) => {
  event.preventDefault();
  once($('confirm-yes'), async () => {
    try {
      if (confirmAction) await confirmAction();
      $('confirm-dialog').close();
    } catch (error) {
      show($('confirm-error'), error.message);
    }
  });
});

// ---------------------------------------------------------------- devices

async function loadDevices() {
  const devices = state.devices;
  const seq = ++devices.seq;
  show($('devices-error'), '');
  $('devices-prev').disabled = true;
  $('devices-next').disabled = true;
  try {
    const page = await json('GET', '/api/v1/devices' + query({
      limit: PAGE_SIZE, after: devices.cursors[devices.index], total: 'true',
    }));
    if (seq !== devices.seq) return;
    devices.next = page.next_after;
    devices.total = page.total || 0;
    const body = $('devices-table').tBodies[0];
    body.replaceChildren();
    for (const device of page.items) {
      const row = document.createElement('tr');
      const facts = device.inventory || {};
      cell(row, device.unit_id, 'mono');
      cell(row, device.online ? 'Online (' + device.connected_to + ')' : 'Offline');
      cell(row, facts.host_name || '-');
      cell(row, [facts.os_name, facts.os_version].filter(Boolean).join(' ') || '-');
      cell(row, time(device.enrolled_at));
      cell(row, device.key_type);
      cell(row, time(device.not_after));
      cell(row, time(device.last_seen));
      const actions = cell(row, '');
      if (may('devices:write')) {
        const remove = document.createElement('button');
        remove.type = 'button';
        remove.className = 'link';
        remove.textContent = 'Delete';
        remove.setAttribute('aria-label', 'Delete device ' + device.unit_id);
        remove.addEventListener('click', () => {
          $('confirm-text').textContent = 'Delete device ' + device.unit_id +
            '? It must enroll again with a key.';
          confirmAction = async () => {
            await api('DELETE', '/api/v1/devices/' + encodeURIComponent(device.unit_id));
            await loadDevices();
            $('devices-range').focus();
          };
          openDialog($('confirm-dialog'));
        });
        actions.appendChild(remove);
      }
      body.appendChild(row);
    }
    const start = devices.index * PAGE_SIZE;
    $('devices-range').textContent = page.items.length
      ? 'Devices ' + (start + 1) + '–' + (start + page.items.length) + ' of ' + devices.total
      : 'No devices';
    $('devices-prev').disabled = devices.index === 0;
    $('devices-next').disabled = !devices.next;
  } catch (error) {
    show($('devices-error'), error.message);
  }
}
$('devices-prev').addEventListener('click', () => {
  if (state.devices.index > 0) { state.devices.index -= 1; loadDevices(); }
});
$('devices-next').addEventListener('click', () => {
  if (!state.devices.next) return;
  state.devices.cursors[state.devices.index + 1] = state.devices.next;
  state.devices.index += 1;
  loadDevices();
});

// ---------------------------------------------------------------- UMS ID

async function loadUmsId() {
  show($('ums-id-error'), '');
  try {
    const id = await json('GET', '/api/v1/ums-id');
    $('ums-id-short').textContent = id.short;
    $('ums-id-fingerprint').textContent = id.fingerprint;
    const parts = $('ums-id-parts');
    parts.replaceChildren();
    for (const part of id.parts) {
      const item = document.createElement('li');
      item.textContent = part;
      parts.appendChild(item);
    }
    $('ums-id-token').textContent = id.communication_token;
    $('ums-id-created').textContent = time(id.created_at);
    const servers = await json('GET', '/api/v1/servers');
    const body = $('servers-table').tBodies[0];
    body.replaceChildren();
    for (const server of servers) {
      const row = document.createElement('tr');
      cell(row, server.host_name);
      cell(row, server.server_status);
      cell(row, server.ums_id_status);
      cell(row, server.ums_id_short, 'mono');
      cell(row, server.fingerprint, 'mono');
      body.appendChild(row);
    }
  } catch (error) {
    show($('ums-id-error'), error.message);
  }
}
$('ums-id-export').addEventListener('click', async () => {
  try {
    await download(await api('GET', '/api/v1/ums-id/certificate'), 'ums-id.crt');
  } catch (error) {
    show($('ums-id-error'), error.message);
  }
});

// ---------------------------------------------------------------- audit

async function loadAudit() {
  const audit = state.audit;
  const seq = ++audit.seq;
  show($('audit-error'), '');
  $('audit-prev').disabled = true;
  $('audit-next').disabled = true;
  try {
    const page = await json('GET', '/api/v1/audit' + query({
      unit_id: $('audit-unit').value.trim(),
      outcome: $('audit-outcome').value.trim(),
      actor: $('audit-actor').value.trim(),
      order: 'newest',
      limit: PAGE_SIZE,
      after: audit.cursors[audit.index],
    }));
    if (seq !== audit.seq) return;
    audit.next = page.next_after;
    const body = $('audit-table').tBodies[0];
    body.replaceChildren();
    for (const entry of page.items) {
      const row = document.createElement('tr');
      cell(row, entry.id);
      cell(row, time(entry.at));
      cell(row, entry.event);
      cell(row, entry.actor);
      cell(row, entry.source);
      cell(row, entry.unit_id || '');
      cell(row, entry.key_id === null ? '' : entry.key_id);
      cell(row, entry.outcome);
      cell(row, entry.detail, 'detail');
      body.appendChild(row);
    }
    $('audit-range').textContent = page.items.length ? page.items.length + ' entries' : 'No entries';
    $('audit-prev').disabled = audit.index === 0;
    $('audit-next').disabled = !audit.next;
  } catch (error) {
    show($('audit-error'), error.message);
  }
}
$('audit-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  state.audit.cursors = [null];
  state.audit.index = 0;
  loadAudit();
});
$('audit-prev').addEventListener('click', () => {
  if (state.audit.index > 0) { state.audit.index -= 1; loadAudit(); }
});
$('audit-next').addEventListener('click', () => {
  if (!state.audit.next) return;
  state.audit.cursors[state.audit.index + 1] = state.audit.next;
  state.audit.index += 1;
  loadAudit();
});

// ---------------------------------------------------------------- start

$('sign-out').addEventListener('click', async () => {
  try {
    await api('DELETE', '/api/v1/session');
  } finally {
    location.replace('/');
  }
});

(async function start() {
  let me;
  try {
    const response = await fetch('/api/v1/session', { credentials: 'same-origin' });
    if (!response.ok) {
      location.replace('/');
      return;
    }
    me = await response.json();
  } catch (_) {
    location.replace('/');
    return;
  }
  state.account = me.account;
  state.rights = new Set(me.rights);
  state.csrf = me.csrf_token || '';
  $('account-name').textContent = me.account;
  // Controls the account has no right for are not offered (the server refuses them anyway).
  for (const element of document.querySelectorAll('[data-right]')) {
    element.hidden = !may(element.dataset.right);
  }
  window.addEventListener('hashchange', route);
  route();
})();
