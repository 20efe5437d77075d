// The sign-in page: name and password give a session cookie; the app lives under /app/. After a
// session ended, it says so and returns to the page the app was on (`?ended=1&return=#devices`).
// A server not in sync with the Main UMS ID signs nobody in: it says so at the top.
'use strict';

(async function () {
  const params = new URLSearchParams(location.search);
  // Only a page of the app, never another address.
  const back = /^#[a-z-]{1,32}$/.test(params.get('return') || '') ? params.get('return') : '';
  const app = '/app/' + back;
  if (params.get('ended') === '1') document.getElementById('signin-ended').hidden = false;
  // Already signed in: straight to the app.
  try {
    const response = await fetch('/api/v1/session', { credentials: 'same-origin' });
    if (response.ok) {
      location.replace(app);
      return;
    }
    if (response.status === 503) {
      let problem = {};
      try { problem = await response.json(); } catch (_) { /* not a problem body */ }
      const banner = document.getElementById('signin-sync');
      banner.textContent = problem.detail || 'This server is not in sync with the Main UMS ID.';
      banner.hidden = false;
    }
  } catch (_) {
    // The form below still works.
  }
  const form = document.getElementById('signin-form');
  const error = document.getElementById('signin-error');
  form.addEventListener('submit', async function (event) {
    event.preventDefault();
    error.textContent = '';
    const name = document.getElementById('signin-name').value.trim();
    const password = document.getElementById('signin-password').value;
    if (!name || !password) {
      error.textContent = 'Enter your name and password.';
      return;
    }
    const button = document.getElementById('signin-submit');
    button.disabled = true;
    try {
      const response = await fetch('/api/v1/session', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: name, password: password }),
      });
      if (response.ok) {
        location.replace(app);
        return;
      }
      let problem = {};
      try { problem = await response.json(); } catch (_) { /* not JSON */ }
      if (response.status === 429) {
        const wait = response.headers.get('retry-after');
        error.textContent = 'Too many failed sign-ins; try again' + (wait ? ' in ' + wait + ' s.' : ' later.');
      } else if (response.status === 401) {
        error.textContent = 'The name or the password is wrong.';
      } else {
        error.textContent = problem.detail || problem.title || ('The server answered ' + response.status + '.');
      }
    } catch (failure) {
      error.textContent = 'The server cannot be reached: ' + failure.message;
    } finally {
      button.disabled = false;
    }
  });
})();
