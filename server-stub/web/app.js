// The Web App: keys, devices, UMS ID and audit pages over /api/v1, with the session cookie and
// the CSRF token on writes. Plain JavaScript, no framework; every value from the server is put
// into the page as text, never as markup.
'use strict';

const PAGE_SIZE = 100;

/** How often the devices page asks again for online and last seen. */
const DEVICES_REFRESH_MS = 5000;

const state = {
  account: '',
  rights: new Set(),
  csrf: '',
  // Keys: page `index` of the list sorted by `sort` (`order` asc or desc) and filtered by
  // `applied` (the filter last submitted, not what is typed since). `matching`: every key the
  // filter matches is selected, not only those ticked on this page. `created`: the IDs the last
  // Add made, for "Export these keys".
  keys: {
    index: 0, items: [], shown: false, selected: new Set(), total: 0, seq: 0,
    sort: 'id', order: 'asc', applied: {}, matching: false, created: null,
  },
  devices: { cursors: [null], index: 0, next: null, total: 0, seq: 0, search: '', folder: '', timer: null },
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
  if (response.status === 401 && !(method === 'POST' && path === '/api/v1/session')) {
    sessionEnded();
    throw new ApiError(401, 'unauthorized', 'Your session ended, sign in again.');
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

/// Gives every cell of `table` its column's name, which the narrow layout shows beside the value
/// (each row a card of labelled values).
function labelCells(table) {
  const names = Array.from(table.tHead.rows[0].cells).map((th) => th.textContent.trim());
  for (const row of table.tBodies[0].rows) {
    Array.from(row.cells).forEach((td, at) => {
      if (names[at]) td.dataset.label = names[at];
    });
  }
}

/// A count for people: 10,000.
function count(number) {
  return Number(number).toLocaleString('en-US');
}

function plural(number, one, many) {
  return count(number) + ' ' + (number === 1 ? one : many);
}

/// The session ended (it expired, was signed out elsewhere, or the account changed): say so, and
/// offer to sign in again, coming back to this page.
function sessionEnded() {
  const dialog = $('session-dialog');
  for (const open of document.querySelectorAll('dialog[open]')) {
    if (open !== dialog) open.close();
  }
  stopDeviceRefresh();
  if (!dialog.open) dialog.showModal();
  $('session-sign-in').focus();
}

/// To the sign-in page, which comes back to this page afterwards; `ended` says the session ended.
function signInAgain(ended) {
  location.replace('/?' + (ended === true ? 'ended=1&' : '') + 'return=' + encodeURIComponent(location.hash || '#keys'));
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
const PAGE_TITLE = {
  keys: 'First-Authentication Keys', devices: 'Devices', 'ums-id': 'UMS ID', audit: 'Audit',
};

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
  document.title = (page ? PAGE_TITLE[page] + ' · ' : '') + 'UMS stub';
  if (page !== 'devices') stopDeviceRefresh();
  if (page === 'keys') loadKeys();
  if (page === 'devices') { loadDevices(); startDeviceRefresh(); }
  if (page === 'ums-id') loadUmsId();
  if (page === 'audit') loadAudit();
  if (!page) {
    const banner = $('global-error');
    banner.hidden = false;
    banner.textContent = 'This account holds no right to any page.';
  }
}

// ---------------------------------------------------------------- keys

const KEY_TYPE_LABEL = { 'one-time': 'One-time', 'device-bound': 'Device-bound', mass: 'Mass deployment' };
const KEY_STATUS_LABEL = {
  active: 'Active', inactive: 'Inactive', used: 'Used', expired: 'Expired',
  not_yet_valid: 'Not yet valid', exhausted: 'Exhausted',
};
/** The statuses a key can go on a stick with (the export's rule on the server). */
const EXPORTABLE = new Set(['active', 'not_yet_valid']);
const DAY_MS = 24 * 60 * 60 * 1000;

/// A time as the API takes it (RFC 3339, whole seconds, UTC).
function rfc3339(date) {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/// The filter as typed in the form.
function typedKeyFilter() {
  return {
    type: $('filter-type').value,
    status: $('filter-status').value,
    unit_id: $('filter-unit').value.trim(),
    comment: $('filter-comment').value.trim(),
    // Keys that expire before the start of that day (UTC).
    expires_before: $('filter-expires-before').value ? $('filter-expires-before').value + 'T00:00:00Z' : '',
  };
}

/// The applied filter without its empty fields, as the key list's query.
function keyFilter() {
  const match = {};
  for (const [name, value] of Object.entries(state.keys.applied)) {
    if (value) match[name] = value;
  }
  return match;
}

/// The applied filter as the API's KeyMatch (for acting on every key it matches), which has no
/// expiry: with an expiry filter applied, "select all matching" is not offered.
function keyMatch() {
  const match = keyFilter();
  delete match.expires_before;
  return match;
}

function filtered() {
  return Object.keys(keyFilter()).length > 0;
}

/// Whether every key the filter matches can be acted on in one request.
function matchingOffered() {
  return !state.keys.applied.expires_before;
}

/// Says what the last action did (a status line, read out by screen readers).
function keysStatus(message, offerExport) {
  $('keys-status-text').textContent = message || '';
  $('keys-status-export').hidden = !offerExport || !may('keys:export');
}

function lastKeyPage() {
  return Math.max(0, Math.ceil(state.keys.total / PAGE_SIZE) - 1);
}

async function loadKeys() {
  const keys = state.keys;
  // Only the latest load draws: a slow answer to an older filter or page is dropped.
  const seq = ++keys.seq;
  show($('keys-error'), '');
  for (const id of ['keys-first', 'keys-prev', 'keys-next', 'keys-last']) $(id).disabled = true;
  try {
    const page = await json('GET', '/api/v1/keys' + query(Object.assign({}, keyFilter(), {
      sort: keys.sort, order: keys.order, limit: PAGE_SIZE, offset: keys.index * PAGE_SIZE, total: 'true',
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
    keys.total = page.total || 0;
    if (!keys.matching) keys.selected.clear();
    renderKeys();
    show($('keys-error'), revealError);
  } catch (error) {
    if (seq !== keys.seq) return;
    // Rows of another filter are not left standing under this one's error.
    keys.items = [];
    keys.total = 0;
    keys.selected.clear();
    keys.matching = false;
    renderKeys();
    $('keys-range').textContent = '';
    show($('keys-error'), error.message);
  }
}

function renderKeys() {
  const keys = state.keys;
  const table = $('keys-table');
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const key of keys.items) {
    const row = document.createElement('tr');
    row.dataset.id = key.id;
    const pick = document.createElement('input');
    pick.type = 'checkbox';
    pick.setAttribute('aria-label', 'Select key ' + key.id);
    pick.checked = keys.matching || keys.selected.has(key.id);
    pick.disabled = keys.matching;
    pick.addEventListener('change', () => {
      if (pick.checked) keys.selected.add(key.id); else keys.selected.delete(key.id);
      row.classList.toggle('selected', pick.checked);
      keyButtons();
    });
    row.classList.toggle('selected', pick.checked);
    const first = document.createElement('td');
    first.className = 'pick';
    first.appendChild(pick);
    row.appendChild(first);
    cell(row, key.id);
    cell(row, key.unit_id || '', 'mono');
    cell(row, key.key, 'mono key');
    cell(row, KEY_STATUS_LABEL[key.status] || key.status, 'status status-' + key.status);
    cell(row, time(key.created_at));
    cell(row, (key.expires_at ? time(key.expires_at) : 'Never') +
      (key.not_before ? ' (valid from ' + time(key.not_before) + ')' : ''), 'expires');
    cell(row, time(key.usage_date));
    cell(row, key.usage_limit ? count(key.usage_count) + ' of ' + count(key.usage_limit) : key.usage_count);
    cell(row, KEY_TYPE_LABEL[key.type] || key.type);
    cell(row, key.folder || '-', 'folder');
    cell(row, key.comment, 'comment');
    body.appendChild(row);
  }
  labelCells(table);
  const start = keys.index * PAGE_SIZE;
  const pages = lastKeyPage() + 1;
  $('keys-range').textContent = keys.items.length
    ? 'Keys ' + count(start + 1) + '–' + count(start + keys.items.length) + ' of ' + count(keys.total) +
      ' (page ' + count(keys.index + 1) + ' of ' + count(pages) + ')'
    : (keys.total ? 'No keys on this page' : (filtered() ? 'No key matches the filter' : 'No keys'));
  $('keys-first').disabled = keys.index === 0;
  $('keys-prev').disabled = keys.index === 0;
  $('keys-next').disabled = keys.index >= lastKeyPage();
  $('keys-last').disabled = keys.index >= lastKeyPage();
  for (const th of table.tHead.querySelectorAll('th[data-sort]')) {
    if (th.dataset.sort === keys.sort) {
      th.setAttribute('aria-sort', keys.order === 'asc' ? 'ascending' : 'descending');
    } else {
      th.removeAttribute('aria-sort');
    }
  }
  const toggle = $('key-show');
  toggle.textContent = keys.shown ? 'Hide keys' : 'Show keys';
  toggle.setAttribute('aria-pressed', String(keys.shown));
  keyButtons();
}

/// How many keys an action would act on now.
function selectedCount() {
  return state.keys.matching ? state.keys.total : state.keys.selected.size;
}

function keyButtons() {
  const keys = state.keys;
  const picked = keys.selected.size;
  const all = $('keys-all');
  all.checked = keys.matching || (picked > 0 && picked === keys.items.length);
  all.indeterminate = !keys.matching && picked > 0 && picked < keys.items.length;
  const many = selectedCount();
  const suffix = many > 0 ? ' (' + count(many) + ')' : '';
  $('key-edit').disabled = keys.matching || picked !== 1;
  $('key-delete').disabled = many === 0;
  $('key-activate').disabled = many === 0;
  $('key-deactivate').disabled = many === 0;
  $('key-delete').textContent = 'Delete' + suffix;
  $('key-activate').textContent = 'Activate' + suffix;
  $('key-deactivate').textContent = 'Deactivate' + suffix;
  // With the whole page ticked, offer every key the filter matches (Gmail's "select all").
  const line = $('keys-selection');
  const offer = $('keys-select-matching');
  if (keys.matching) {
    line.hidden = false;
    $('keys-selection-text').textContent = 'All ' + plural(keys.total, 'key', 'keys') +
      (filtered() ? ' matching the filter are selected.' : ' are selected.');
    offer.textContent = 'Clear the selection';
  } else if (picked > 0 && picked === keys.items.length && keys.total > picked && matchingOffered()) {
    line.hidden = false;
    $('keys-selection-text').textContent = 'All ' + plural(picked, 'key', 'keys') + ' on this page are selected.';
    offer.textContent = 'Select all ' + plural(keys.total, 'key', 'keys') +
      (filtered() ? ' matching the filter' : '');
  } else {
    line.hidden = true;
  }
}

function resetKeyPages() {
  state.keys.index = 0;
  state.keys.matching = false;
  state.keys.selected.clear();
}

$('key-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  state.keys.applied = typedKeyFilter();
  resetKeyPages();
  keysStatus('');
  loadKeys();
});
$('filter-clear').addEventListener('click', () => {
  $('key-filter').reset();
  state.keys.applied = {};
  resetKeyPages();
  keysStatus('');
  loadKeys();
});
function keyPage(index) {
  state.keys.index = Math.max(0, Math.min(index, lastKeyPage()));
  loadKeys();
}
$('keys-first').addEventListener('click', () => keyPage(0));
$('keys-prev').addEventListener('click', () => keyPage(state.keys.index - 1));
$('keys-next').addEventListener('click', () => keyPage(state.keys.index + 1));
$('keys-last').addEventListener('click', () => keyPage(lastKeyPage()));
for (const th of $('keys-table').tHead.querySelectorAll('th[data-sort]')) {
  th.querySelector('button').addEventListener('click', () => {
    const keys = state.keys;
    if (keys.sort === th.dataset.sort) {
      keys.order = keys.order === 'asc' ? 'desc' : 'asc';
    } else {
      keys.sort = th.dataset.sort;
      keys.order = 'asc';
    }
    keys.index = 0;
    if (!keys.matching) keys.selected.clear();
    loadKeys();
  });
}
$('keys-all').addEventListener('change', (event) => {
  const keys = state.keys;
  keys.selected.clear();
  keys.matching = false;
  if (event.target.checked) for (const key of keys.items) keys.selected.add(key.id);
  renderKeys();
});
$('keys-select-matching').addEventListener('click', () => {
  const keys = state.keys;
  keys.matching = !keys.matching;
  keys.selected.clear();
  if (!keys.matching) keysStatus('');
  renderKeys();
});
$('key-show').addEventListener('click', () => {
  state.keys.shown = !state.keys.shown;
  loadKeys();
});

const ACTION_DONE = { activate: 'Activated', deactivate: 'Deactivated', delete: 'Deleted' };
const STATUS_WHY = {
  active: 'already active', inactive: 'already inactive', used: 'already used', expired: 'expired',
  not_yet_valid: 'not valid yet', exhausted: 'exhausted',
};

/// "Deactivated 0 of 3: 3 keys were already used."
function changedMessage(outcome) {
  const done = ACTION_DONE[outcome.action];
  if (outcome.matched === 0) return done + ' nothing: no key matches.';
  if (outcome.changed === outcome.matched) {
    return done + ' ' + plural(outcome.changed, 'key', 'keys') + '.';
  }
  const why = outcome.unchanged.map((group) =>
    plural(group.count, 'key was', 'keys were') + ' ' + (STATUS_WHY[group.status] || group.status));
  return done + ' ' + count(outcome.changed) + ' of ' + count(outcome.matched) +
    (why.length ? ': ' + why.join(', ') : '') + '.';
}

/// What an action acts on: the keys ticked, or every key the filter matches.
function keySelection() {
  return state.keys.matching ? { filter: keyMatch() } : { ids: Array.from(state.keys.selected) };
}

function selectionWords() {
  const keys = state.keys;
  if (keys.matching) {
    return 'all ' + plural(keys.total, 'key', 'keys') + (filtered() ? ' matching the filter' : '');
  }
  const ids = Array.from(keys.selected);
  return plural(ids.length, 'key', 'keys') + (ids.length <= 10 ? ' (' + ids.join(', ') + ')' : '');
}

async function changeKeys(action) {
  show($('keys-error'), '');
  keysStatus('');
  const outcome = await json('POST', '/api/v1/keys/change', Object.assign({ action }, keySelection()));
  state.keys.matching = false;
  state.keys.selected.clear();
  if (action === 'delete') state.keys.index = 0;
  await loadKeys();
  keysStatus(changedMessage(outcome));
  // The button just used is disabled with the selection gone: focus goes to the result.
  $('keys-status').setAttribute('tabindex', '-1');
  $('keys-status').focus();
}

/// Asks before acting on more than the keys in view, and always before deleting.
function confirmKeys(action) {
  const words = selectionWords();
  if (action !== 'delete' && !state.keys.matching) {
    return changeKeys(action).catch((error) => show($('keys-error'), error.message));
  }
  const verb = action.charAt(0).toUpperCase() + action.slice(1);
  $('confirm-title').textContent = verb + ' keys';
  $('confirm-text').textContent = verb + ' ' + words + '?' +
    (action === 'delete' ? ' Devices can no longer enroll with them.' : '');
  $('confirm-yes').textContent = verb + ' ' + plural(selectedCount(), 'key', 'keys');
  $('confirm-yes').classList.toggle('danger', action === 'delete');
  confirmAction = () => changeKeys(action);
  openDialog($('confirm-dialog'));
  return Promise.resolve();
}
$('key-activate').addEventListener('click', (event) => once(event.target, () => confirmKeys('activate')));
$('key-deactivate').addEventListener('click', (event) => once(event.target, () => confirmKeys('deactivate')));
$('key-delete').addEventListener('click', () => confirmKeys('delete'));

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
$('create-expires').addEventListener('change', () => {
  $('create-expires-on').hidden = $('create-expires').value !== 'date';
  if ($('create-expires').value === 'date') $('create-expires-date').focus();
});
$('create-random').addEventListener('change', (event) => {
  $('create-password').disabled = event.target.checked;
  if (!event.target.checked) $('create-password').focus();
});
$('key-create').addEventListener('click', async () => {
  $('create-form').reset();
  $('create-password').disabled = true;
  $('create-expires-on').hidden = true;
  for (const field of $('create-form').querySelectorAll('[aria-invalid]')) field.removeAttribute('aria-invalid');
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

/// "IDs 101–600", or the first and last when they are not all in a row.
function idRange(ids) {
  if (ids.length === 0) return '';
  const sorted = ids.slice().sort((a, b) => a - b);
  const [first, last] = [sorted[0], sorted[sorted.length - 1]];
  if (ids.length === 1) return 'ID ' + first;
  return 'IDs ' + first + '–' + last + (last - first + 1 === ids.length ? '' : ', not all in a row');
}

/** The dialog's field for each member of a create request, to point at when the API refuses one. */
const CREATE_FIELD = {
  quantity: 'create-quantity', unit_ids: 'create-units', password: 'create-password',
  usage_limit: 'create-usage-limit', expires_at: 'create-expires', not_before: 'create-not-before',
  folder: 'create-folder', comment: 'create-comment',
};

/// Says a refusal in the dialog, marks the field it names and puts the focus there; what was
/// typed stays.
function createRefused(message, field) {
  show($('create-error'), message.replace(/^body: /, ''));
  const named = field || Object.keys(CREATE_FIELD).find((name) => new RegExp('\\b' + name + '\\b').test(message));
  let input = named ? $(CREATE_FIELD[named]) : null;
  if (named === 'expires_at' && $('create-expires').value === 'date') input = $('create-expires-date');
  if (input) {
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-errormessage', 'create-error');
    input.focus();
  }
}

/// The lifetime, folder and usage limit the dialog asks for, as the API's members; null (and the
/// refusal said) when a date is missing.
function createTerms(kind) {
  const terms = {};
  const expires = $('create-expires').value;
  if (expires === 'date') {
    const day = $('create-expires-date').value;
    if (!day) {
      createRefused('Expiry date: pick the last day the keys work, or choose Never or a number of days.',
        'expires_at');
      return null;
    }
    terms.expires_at = day + 'T23:59:59Z';
  } else if (expires !== 'never') {
    terms.expires_at = rfc3339(new Date(Date.now() + Number(expires) * DAY_MS));
  }
  const from = $('create-not-before').value;
  if (from) terms.not_before = from + 'T00:00:00Z';
  const folder = $('create-folder').value.trim();
  if (folder) terms.folder = folder;
  if (kind === 'mass') {
    const limit = $('create-usage-limit').value.trim();
    if (limit) terms.usage_limit = Number(limit);
  }
  return terms;
}

async function createKeys() {
  const error = $('create-error');
  show(error, '');
  for (const field of $('create-form').querySelectorAll('[aria-invalid]')) field.removeAttribute('aria-invalid');
  const comment = $('create-comment').value;
  let created;
  try {
    const kind = createKind();
    const terms = createTerms(kind);
    if (!terms) return;
    if (kind === 'one-time') {
      const quantity = Number($('create-quantity').value);
      if (!Number.isInteger(quantity) || quantity < 1 || quantity > 100000) {
        show(error, 'Quantity: a whole number from 1 to 100000.');
        $('create-quantity').focus();
        return;
      }
      created = await json('POST', '/api/v1/keys', Object.assign({ type: 'one-time', quantity, comment }, terms));
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
        created = await (await api('POST', '/api/v1/keys/import' + query(Object.assign({ comment }, terms)),
          body, 'text/csv')).json();
      } else if (unitIds.length > 0) {
        created = await json('POST', '/api/v1/keys',
          Object.assign({ type: 'device-bound', unit_ids: unitIds, comment }, terms));
      } else {
        show(error, 'Unit IDs: type at least one, import a CSV file, or select devices.');
        $('create-units').focus();
        return;
      }
    } else {
      const body = Object.assign({ type: 'mass', comment }, terms);
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
      created = await json('POST', '/api/v1/keys', body);
    }
  } catch (failure) {
    if (failure.status === 409 && createKind() === 'mass') {
      createRefused('Another key already has this key value; choose another one.', 'password');
    } else {
      createRefused(failure.message);
    }
    return;
  }
  $('create-dialog').close();
  const ids = created.ids;
  state.keys.created = ids;
  resetKeyPages();
  await loadKeys();
  keysStatus('Created ' + plural(ids.length, 'key', 'keys') + ' (' + idRange(ids) + ').', true);
  $('keys-status').setAttribute('tabindex', '-1');
  $('keys-status').focus();
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
    keysStatus('Saved the comment of key ' + id + '.');
  } catch (error) {
    show($('edit-error'), error.message);
  }
});

// Export: which keys (with how many, asked of the server before anything is written), and the
// servers devices will contact, prefilled with this server's public address(es). Check asks the
// server what the file would hold and whether it reaches each server with the UMS ID, before
// anything is written.
const exportState = { counts: {}, seq: 0, edited: false, selectedIds: [], checkSeq: 0 };

/// How many active keys match the applied filter (none when it asks for another status).
async function activeMatching() {
  const match = keyMatch();
  if (match.status && match.status !== 'active') return 0;
  const page = await json('GET', '/api/v1/keys' + query(Object.assign({}, match, {
    status: 'active', limit: 0, total: 'true',
  })));
  return page.total || 0;
}

/// How many keys have `status`.
async function keysWithStatus(status) {
  const page = await json('GET', '/api/v1/keys' + query({ status, limit: 0, total: 'true' }));
  return page.total || 0;
}

function setScope(id, text, enabled) {
  const radio = $(id);
  radio.disabled = !enabled;
  radio.parentElement.hidden = text === null;
  radio.parentElement.querySelector('span').textContent = text || '';
}

function exportScope() {
  return document.querySelector('input[name="export-scope"]:checked').value;
}

function showExportCount() {
  const scope = exportScope();
  const number = exportState.counts[scope];
  $('export-count').textContent = number === undefined ? ''
    : 'The file will hold ' + plural(number, 'key', 'keys') + '.';
}

function exportServers() {
  return $('export-servers').value.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
}

function showContact() {
  const servers = exportServers();
  $('export-contact').textContent = servers.length
    ? 'Devices will contact: ' + servers.join(', ')
    : 'Name at least one server: devices contact only the servers in the file.';
}

/// A check answers for the keys and servers it was asked about: a change clears it.
function clearExportCheck() {
  exportState.checkSeq += 1;
  $('export-check-summary').textContent = '';
  $('export-check-servers').replaceChildren();
  $('export-check-warning').textContent = '';
}

/// "3 keys (1 expired, 2 used)": why selected keys stay off the stick.
function leftOut(keys) {
  const why = {};
  for (const key of keys) why[key.status] = (why[key.status] || 0) + 1;
  return Object.entries(why).map(([status, number]) =>
    count(number) + ' ' + (KEY_STATUS_LABEL[status] || status).toLowerCase()).join(', ');
}

async function openExport(preferNew) {
  const keys = state.keys;
  const seq = ++exportState.seq;
  // Only the selected keys that can go on a stick are offered; the others are named.
  const picked = keys.matching ? [] : keys.items.filter((key) => keys.selected.has(key.id));
  const fit = picked.filter((key) => EXPORTABLE.has(key.status));
  const unfit = picked.filter((key) => !EXPORTABLE.has(key.status));
  exportState.selectedIds = fit.map((key) => key.id);
  const created = keys.created || [];
  exportState.counts = { selected: fit.length, new: created.length };
  setScope('export-selected', 'The selected keys (' + count(fit.length) + ')' +
    (unfit.length ? ', not ' + plural(unfit.length, 'key', 'keys') + ' that cannot go on a stick (' +
      leftOut(unfit) + ')' : ''), fit.length > 0);
  setScope('export-new', created.length ? 'The ' + plural(created.length, 'new key', 'new keys') +
    ' (' + idRange(created) + ')' : null, created.length > 0);
  const matching = keys.matching || (filtered() && matchingOffered());
  setScope('export-matching', matching ? 'Every active key matching the filter (counting…)' : null, matching);
  setScope('export-all', 'All active keys (counting…)', true);
  let pick = 'export-all';
  if (preferNew && created.length) pick = 'export-new';
  else if (keys.matching) pick = 'export-matching';
  else if (fit.length > 0) pick = 'export-selected';
  $(pick).checked = true;
  $('export-servers').value = '';
  exportState.edited = false;
  $('export-servers-note').textContent = '';
  clearExportCheck();
  openDialog($('export-dialog'));
  showExportCount();
  showContact();
  try {
    const [defaults, matched, active, notYetValid] = await Promise.all([
      json('GET', '/api/v1/keys/export/servers'),
      matching ? activeMatching() : Promise.resolve(null),
      keysWithStatus('active'),
      keysWithStatus('not_yet_valid'),
    ]);
    if (seq !== exportState.seq) return;
    // What the administrator typed meanwhile stays.
    if (!exportState.edited) {
      $('export-servers').value = defaults.servers.map((server) => server.host.includes(':')
        ? '[' + server.host + ']:' + server.port : server.host + ':' + server.port).join('\n');
    }
    $('export-servers-note').textContent = defaults.public_host_set ? ''
      : 'This server\'s config file sets no public_host: the name above is this machine\'s host name ' +
        'with the port it listens on. Devices must be able to resolve and reach it; name another if not.';
    // Without IDs the file holds every key that can go on a stick: active or not valid yet.
    const all = active + notYetValid;
    exportState.counts.all = all;
    setScope('export-all', (notYetValid ? 'All active and not yet valid keys (' : 'All active keys (') +
      count(all) + ')', all > 0);
    if (matched !== null) {
      exportState.counts.matching = matched;
      setScope('export-matching', 'Every active key matching the filter (' + count(matched) + ')', matched > 0);
    }
    showExportCount();
    showContact();
  } catch (error) {
    show($('export-error'), error.message);
  }
}
$('key-export').addEventListener('click', () => openExport(false));
$('keys-status-export').addEventListener('click', () => openExport(true));
for (const radio of document.querySelectorAll('input[name="export-scope"]')) {
  radio.addEventListener('change', () => {
    clearExportCheck();
    showExportCount();
  });
}
$('export-servers').addEventListener('input', () => {
  exportState.edited = true;
  clearExportCheck();
  showContact();
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

/// The request the dialog would send (format included), or null when it names no server (said).
function exportRequest() {
  const named = exportServers();
  if (named.length === 0) {
    show($('export-error'), 'Servers: name at least one server devices will contact.');
    $('export-servers').focus();
    return null;
  }
  const servers = named.map(parseServer);
  const scope = exportScope();
  const request = { servers, format: $('export-format').value };
  if (scope === 'selected') request.ids = exportState.selectedIds.slice();
  if (scope === 'new') request.ids = (state.keys.created || []).slice();
  if (scope === 'matching') request.filter = keyMatch();
  return { request, named, scope };
}

$('export-form').addEventListener('submit', (event) => {
  event.preventDefault();
  once($('export-go'), exportKeys);
});
$('export-check').addEventListener('click', () => once($('export-check'), checkExport));

const REACH_LABEL = {
  ok: 'OK', pin_mismatch: 'Pin mismatch', tls_failed: 'TLS failed', unreachable: 'Unreachable',
};

/// Asks the server what the file would hold and whether it reaches each server as devices would
/// judge it; says it per server. Exporting stays possible whatever it finds.
async function checkExport() {
  show($('export-error'), '');
  clearExportCheck();
  const seq = exportState.checkSeq;
  try {
    const asked = exportRequest();
    if (!asked) return;
    $('export-check-summary').textContent = 'Checking…';
    const report = await json('POST', '/api/v1/keys/export/check', asked.request);
    if (seq !== exportState.checkSeq) return;
    const list = $('export-check-servers');
    for (const server of report.servers) {
      const item = document.createElement('li');
      item.className = 'reach-' + server.reach;
      const name = server.host.includes(':') ? '[' + server.host + ']:' + server.port
        : server.host + ':' + server.port;
      const verdict = document.createElement('strong');
      verdict.textContent = REACH_LABEL[server.reach] || server.reach;
      item.append(name + ': ', verdict, ' (' + server.detail + ')');
      list.appendChild(item);
    }
    const refused = report.keys.filter((key) => !key.exportable);
    let summary = 'The file will hold ' + plural(report.exportable, 'key', 'keys');
    if (report.refused > 0) {
      summary += '; ' + plural(report.refused, 'key', 'keys') + ' named cannot go on a stick (' +
        leftOut(refused) + '), so the export would be refused';
    }
    $('export-check-summary').textContent = summary + '.';
    if (!report.servers.some((server) => server.reach === 'ok')) {
      $('export-check-warning').textContent = 'No server was reached with this UMS ID from here: ' +
        'devices may not be able to connect. Check the names above; you can still export.';
    }
  } catch (failure) {
    if (seq !== exportState.checkSeq) return;
    $('export-check-summary').textContent = '';
    show($('export-error'), failure.message);
  }
}

async function exportKeys() {
  const error = $('export-error');
  show(error, '');
  try {
    const asked = exportRequest();
    if (!asked) return;
    const file = { xml: 'icg.xml', html: 'icg.html', text: 'icg.txt' }[asked.request.format];
    const response = await api('POST', '/api/v1/keys/export', asked.request);
    await download(response, file);
    $('export-dialog').close();
    const number = exportState.counts[asked.scope];
    keysStatus('Exported ' + (number === undefined ? 'the keys' : plural(number, 'key', 'keys')) +
      ' to ' + file + ' for ' + asked.named.join(', ') + '.');
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

/// A time without seconds, for the narrow columns of the devices table.
function minute(text) {
  return time(text).replace(/:\d\d( UTC)$/, '$1');
}

async function loadDevices(quiet) {
  const devices = state.devices;
  const seq = ++devices.seq;
  if (!quiet) show($('devices-error'), '');
  try {
    const page = await json('GET', '/api/v1/devices' + query({
      limit: PAGE_SIZE, after: devices.cursors[devices.index], total: 'true', search: devices.search,
      folder: devices.folder,
    }));
    if (seq !== devices.seq) return;
    show($('devices-error'), '');
    devices.next = page.next_after;
    devices.total = page.total || 0;
    renderDevices(page.items);
    $('devices-refreshed').textContent = 'Updated ' + new Date().toLocaleTimeString('en-GB') +
      '; online and last seen refresh every ' + (DEVICES_REFRESH_MS / 1000) + ' s.';
  } catch (error) {
    if (seq !== devices.seq) return;
    show($('devices-error'), error.message);
    if (!quiet) $('devices-table').tBodies[0].replaceChildren();
  }
}

function commandButton(device, command, label) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'link';
  button.textContent = label;
  button.disabled = !device.online;
  button.setAttribute('aria-label', label + ' to ' + device.unit_id);
  button.addEventListener('click', () => once(button, async () => {
    show($('devices-error'), '');
    try {
      const sent = await json('POST', '/api/v1/devices/' + encodeURIComponent(device.unit_id) + '/commands',
        { command });
      show($('devices-status'), 'Sent ' + command + ' to ' + device.unit_id + ' through ' + sent.server + '.');
    } catch (error) {
      show($('devices-error'), error.message);
    }
  }));
  return button;
}

function renderDevices(items) {
  const devices = state.devices;
  const table = $('devices-table');
  const body = table.tBodies[0];
  // A refresh must not pull the focus out from under the keyboard.
  const focused = document.activeElement && body.contains(document.activeElement)
    ? document.activeElement.getAttribute('aria-label') : null;
  body.replaceChildren();
  for (const device of items) {
    const row = document.createElement('tr');
    row.dataset.unitId = device.unit_id;
    const facts = device.inventory || {};
    cell(row, device.unit_id, 'mono');
    cell(row, device.online ? 'Online (' + device.connected_to + ')' : 'Offline',
      device.online ? 'online' : 'offline');
    cell(row, facts.host_name || '-', 'wrap');
    cell(row, [facts.os_name, facts.os_version].filter(Boolean).join(' ') || '-', 'wrap');
    cell(row, (device.key_id === null || device.key_id === undefined ? 'deleted key'
      : 'Key ' + device.key_id) + ' (' + (KEY_TYPE_LABEL[device.key_type] || device.key_type) + ')');
    // The folder of the key it enrolled with; '-' when that key had none.
    cell(row, device.folder || '-', 'wrap folder');
    cell(row, minute(device.enrolled_at));
    cell(row, minute(device.not_after));
    cell(row, device.online ? 'Now (' + time(device.last_seen) + ')' : minute(device.last_seen), 'last-seen');
    const actions = cell(row, '', 'actions');
    if (may('devices:write')) {
      actions.appendChild(commandButton(device, 'renew-now', 'Send renew-now'));
      actions.appendChild(commandButton(device, 'inventory-now', 'Send inventory-now'));
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'link danger-link';
      remove.textContent = 'Delete';
      remove.setAttribute('aria-label', 'Delete device ' + device.unit_id);
      remove.addEventListener('click', () => {
        $('confirm-title').textContent = 'Delete device';
        $('confirm-text').textContent = 'Delete device ' + device.unit_id +
          '? It must enroll again with a key.';
        $('confirm-yes').textContent = 'Delete';
        $('confirm-yes').classList.add('danger');
        confirmAction = async () => {
          await api('DELETE', '/api/v1/devices/' + encodeURIComponent(device.unit_id));
          await loadDevices();
          show($('devices-status'), 'Deleted device ' + device.unit_id + '.');
          $('devices-range').focus();
        };
        openDialog($('confirm-dialog'));
      });
      actions.appendChild(remove);
    }
    body.appendChild(row);
  }
  labelCells(table);
  if (focused) {
    const again = Array.from(body.querySelectorAll('button')).find((b) => b.getAttribute('aria-label') === focused);
    if (again) again.focus();
  }
  const start = devices.index * PAGE_SIZE;
  $('devices-range').textContent = items.length
    ? 'Devices ' + count(start + 1) + '–' + count(start + items.length) + ' of ' + count(devices.total)
    : (devices.search || devices.folder ? 'No device matches the search' : 'No devices');
  $('devices-prev').disabled = devices.index === 0;
  $('devices-next').disabled = !devices.next;
}

function startDeviceRefresh() {
  stopDeviceRefresh();
  state.devices.timer = setInterval(() => {
    // Not while a dialog is open or the page is hidden.
    if (document.hidden || document.querySelector('dialog[open]')) return;
    loadDevices(true);
  }, DEVICES_REFRESH_MS);
}

function stopDeviceRefresh() {
  if (state.devices.timer) clearInterval(state.devices.timer);
  state.devices.timer = null;
}

$('devices-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  state.devices.search = $('devices-search').value.trim();
  state.devices.folder = $('devices-folder').value.trim();
  state.devices.cursors = [null];
  state.devices.index = 0;
  show($('devices-status'), '');
  loadDevices();
});
$('devices-clear').addEventListener('click', () => {
  $('devices-search').value = '';
  $('devices-folder').value = '';
  state.devices.search = '';
  state.devices.folder = '';
  state.devices.cursors = [null];
  state.devices.index = 0;
  loadDevices();
});
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
  const banner = $('ums-id-sync');
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
    $('ums-id-status').textContent = id.status || '';
    for (const element of document.querySelectorAll('#page-ums-id .local')) element.hidden = !id.local;
    $('ums-id-local').textContent = id.local ? id.local.short : '';
    $('ums-id-local-fingerprint').textContent = id.local ? id.local.fingerprint : '';
    const notInSync = id.status && id.status.startsWith('Not in sync');
    banner.hidden = !notInSync;
    banner.textContent = notInSync
      ? 'This server is not in sync with the Main UMS ID: it runs with its Local UMS ID and refuses ' +
        'enrollments and changes. Restart it with the cluster\'s secret.' : '';
    const servers = await json('GET', '/api/v1/servers');
    const table = $('servers-table');
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const server of servers) {
      const row = document.createElement('tr');
      cell(row, server.host_name);
      cell(row, server.server_status);
      cell(row, server.ums_id_status);
      cell(row, server.ums_id_short, 'mono');
      cell(row, server.fingerprint, 'mono wrap');
      body.appendChild(row);
    }
    labelCells(table);
  } catch (error) {
    show($('ums-id-error'), error.message);
  }
}
$('ums-id-export').addEventListener('click', async () => {
  show($('ums-id-error'), '');
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
    const table = $('audit-table');
    const body = table.tBodies[0];
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
    labelCells(table);
    $('audit-range').textContent = page.items.length ? page.items.length + ' entries' : 'No entries';
    $('audit-prev').disabled = audit.index === 0;
    $('audit-next').disabled = !audit.next;
  } catch (error) {
    if (seq !== audit.seq) return;
    $('audit-table').tBodies[0].replaceChildren();
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
  stopDeviceRefresh();
  try {
    await api('DELETE', '/api/v1/session');
  } finally {
    location.replace('/');
  }
});
$('session-sign-in').addEventListener('click', () => signInAgain(true));
// Escape does not dismiss it: every request fails until the next sign-in.
$('session-dialog').addEventListener('cancel', (event) => event.preventDefault());

(async function start() {
  let me;
  try {
    const response = await fetch('/api/v1/session', { credentials: 'same-origin' });
    if (!response.ok) {
      signInAgain();
      return;
    }
    me = await response.json();
  } catch (_) {
    signInAgain();
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
  // The status line's export offer shows only after an Add.
  $('keys-status-export').hidden = true;
  window.addEventListener('hashchange', route);
  route();
})();
