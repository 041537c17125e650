// Scripted "user agent" standing in for the human at the browser in mailoauth's tests.
//
//   node browser.mjs URL
//       GET URL and follow redirects (cookie jar, relative Location, max 20 hops), including
//       the final redirect to the program's loopback listener (http://127.0.0.1:PORT/... or
//       https://localhost:PORT/... with a self-signed certificate: certificate errors are
//       ignored for loopback hosts only). Prints the final URL and HTTP status; exit 0 when
//       the last response was 2xx, else 1.
//
//   node browser.mjs --stop-before-redirect URL
//       Like the above, but stop at the first redirect that leaves the authorization
//       server's origin and print that URL instead of visiting it: what a person copies
//       from the address bar to paste into `mailoauth login` when the listener is
//       unreachable (SSH without port forwarding).
//
//   node browser.mjs --device ISSUER USER_CODE [--deny]
//       Acts on the device verification page: GET ISSUER/device, submit the user code form,
//       confirm (or abort with --deny), follow the login/consent redirects to the end.
//       Exit 0 when the last page was 2xx and (without --deny) reports success.
//
// Uses only Node built-ins (fetch for http, node:https for loopback https).

import * as https from 'node:https';

const MAX_HOPS = 20;
const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

const err = (...a) => process.stderr.write(`browser: ${a.join(' ')}\n`);

// ---------------------------------------------------------------------------
// Cookie jar (enough for oidc-provider: host-only cookies, path prefix, expiry)
// ---------------------------------------------------------------------------

class CookieJar {
  #cookies = []; // { name, value, host, path, expires }

  store(url, setCookieHeaders) {
    const u = new URL(url);
    for (const header of setCookieHeaders) {
      const parts = header.split(';').map((s) => s.trim());
      const eq = parts[0].indexOf('=');
      if (eq <= 0) continue;
      const name = parts[0].slice(0, eq);
      const value = parts[0].slice(eq + 1);
      let path = '/';
      let expires;
      for (const attr of parts.slice(1)) {
        const i = attr.indexOf('=');
        const k = (i === -1 ? attr : attr.slice(0, i)).toLowerCase();
        const v = i === -1 ? '' : attr.slice(i + 1);
        if (k === 'path' && v.startsWith('/')) path = v;
        else if (k === 'expires') expires = Date.parse(v);
        else if (k === 'max-age') expires = Date.now() + Number(v) * 1000;
      }
      this.#cookies = this.#cookies.filter((c) => !(c.name === name && c.host === u.host && c.path === path));
      if (expires === undefined || expires > Date.now()) {
        this.#cookies.push({ name, value, host: u.host, path, expires });
      }
    }
  }

  header(url) {
    const u = new URL(url);
    const now = Date.now();
    const matching = this.#cookies.filter((c) => c.host === u.host
      && (c.expires === undefined || c.expires > now)
      && (u.pathname === c.path || u.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)));
    // longer paths first (RFC 6265 5.4)
    matching.sort((a, b) => b.path.length - a.path.length);
    return matching.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

// ---------------------------------------------------------------------------
// One HTTP request without following redirects
// ---------------------------------------------------------------------------

function httpsLoopbackRequest(url, { method, headers, body }) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, headers, rejectUnauthorized: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const setCookie = res.headers['set-cookie'] || [];
        resolve({
          status: res.statusCode,
          location: res.headers.location,
          setCookie: Array.isArray(setCookie) ? setCookie : [setCookie],
          text: Buffer.concat(chunks).toString('utf8'),
        });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(30000, () => req.destroy(new Error('timeout')));
    if (body) req.write(body);
    req.end();
  });
}

async function request(jar, url, { method = 'GET', form } = {}) {
  const u = new URL(url);
  const headers = { 'user-agent': 'mailoauth-test-browser/1' , accept: 'text/html,*/*' };
  const cookie = jar.header(url);
  if (cookie) headers.cookie = cookie;
  let body;
  if (form) {
    body = new URLSearchParams(form).toString();
    headers['content-type'] = 'application/x-www-form-urlencoded';
  }

  if (u.protocol === 'https:' && LOOPBACK.has(u.hostname)) {
    if (body) headers['content-length'] = Buffer.byteLength(body);
    const r = await httpsLoopbackRequest(url, { method, headers, body });
    jar.store(url, r.setCookie);
    return r;
  }

  const res = await fetch(url, {
    method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(30000),
  });
  jar.store(url, res.headers.getSetCookie());
  return {
    status: res.status,
    location: res.headers.get('location') || undefined,
    text: await res.text(),
  };
}

// follow redirects starting with a response already obtained; returns the last response+url
async function follow(jar, url, res, hopsUsed = 0, stopOutside = null) {
  let hops = hopsUsed;
  let current = url;
  let r = res;
  while (r.status >= 300 && r.status < 400 && r.location) {
    hops += 1;
    if (hops > MAX_HOPS) throw new Error(`more than ${MAX_HOPS} redirects`);
    const next = new URL(r.location, current).href;
    if (stopOutside && new URL(next).origin !== stopOutside) return { url: next, res: null, hops };
    current = next;
    err(`-> ${r.status} ${current}`);
    r = await request(jar, current);
  }
  return { url: current, res: r, hops };
}

// ---------------------------------------------------------------------------
// HTML form scraping (oidc-provider's device pages)
// ---------------------------------------------------------------------------

function parseForms(html) {
  const forms = [];
  const formRe = /<form\b([^>]*)>([\s\S]*?)<\/form>/gi;
  let m;
  while ((m = formRe.exec(html))) {
    const attrs = m[1];
    const action = /action="([^"]*)"/i.exec(attrs)?.[1];
    const id = /id="([^"]*)"/i.exec(attrs)?.[1];
    const method = (/method="([^"]*)"/i.exec(attrs)?.[1] || 'get').toUpperCase();
    const fields = {};
    const inputRe = /<input\b([^>]*)>/gi;
    let im;
    while ((im = inputRe.exec(m[2]))) {
      const name = /name="([^"]*)"/i.exec(im[1])?.[1];
      if (!name) continue;
      const value = /value="([^"]*)"/i.exec(im[1])?.[1] ?? '';
      fields[name] = decodeEntities(value);
    }
    forms.push({ id, action: action && decodeEntities(action), method, fields });
  }
  return forms;
}

function decodeEntities(s) {
  return s.replace(/&quot;/g, '"').replace(/&#39;|&#x27;/g, "'").replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

// ---------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------

async function authorize(startUrl) {
  const jar = new CookieJar();
  const first = await request(jar, startUrl);
  const { url, res } = await follow(jar, startUrl, first);
  process.stdout.write(`${url}\n${res.status}\n`);
  if (res.status < 200 || res.status >= 300) {
    err(`final response ${res.status}: ${res.text.slice(0, 500)}`);
    return 1;
  }
  return 0;
}

async function device(issuer, userCode, deny) {
  const jar = new CookieJar();
  const base = issuer.replace(/\/+$/, '');
  const pageUrl = `${base}/device`;

  let r = await request(jar, pageUrl);
  if (r.status !== 200) throw new Error(`GET ${pageUrl}: ${r.status}`);
  const inputForm = parseForms(r.text).find((f) => 'user_code' in f.fields || f.id === 'op.deviceInputForm');
  if (!inputForm) throw new Error('no user code form on the device page');
  const action1 = new URL(inputForm.action || pageUrl, pageUrl).href;

  r = await request(jar, action1, { method: 'POST', form: { ...inputForm.fields, user_code: userCode } });
  if (r.status !== 200) throw new Error(`submitting the user code: ${r.status} ${r.text.slice(0, 300)}`);
  const confirmForm = parseForms(r.text).find((f) => f.id === 'op.deviceConfirmForm' || 'confirm' in f.fields);
  if (!confirmForm) {
    throw new Error(`no confirmation form (wrong or used code?): ${r.text.replace(/<style[\s\S]*?<\/style>/g, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300)}`);
  }
  const action2 = new URL(confirmForm.action || pageUrl, action1).href;
  const fields = { ...confirmForm.fields };
  if (deny) {
    delete fields.confirm;
    fields.abort = 'yes';
  }

  r = await request(jar, action2, { method: 'POST', form: fields });
  const { url, res } = await follow(jar, action2, r, 0);
  const text = res.text.replace(/<style[\s\S]*?<\/style>/g, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim();
  process.stdout.write(`${url}\n${res.status}\n`);
  err(`final page: ${text.slice(0, 200)}`);
  if (res.status < 200 || res.status >= 300) return 1;
  if (deny) return 0;
  return /success/i.test(text) ? 0 : 1;
}

async function stopBeforeRedirect(startUrl) {
  const jar = new CookieJar();
  const first = await request(jar, startUrl);
  const { url, res } = await follow(jar, startUrl, first, 0, new URL(startUrl).origin);
  if (res !== null) {
    err(`never left the authorization server (final ${res.status})`);
    return 1;
  }
  process.stdout.write(`${url}\n`);
  return 0;
}

async function main(argv) {
  if (argv[0] === '--stop-before-redirect' && argv.length === 2) return stopBeforeRedirect(argv[1]);
  if (argv[0] === '--device') {
    const rest = argv.slice(1);
    const deny = rest.includes('--deny');
    const [issuer, userCode] = rest.filter((a) => a !== '--deny');
    if (!issuer || !userCode) throw new Error('usage: browser.mjs --device ISSUER USER_CODE [--deny]');
    return device(issuer, userCode, deny);
  }
  if (argv.length !== 1) throw new Error('usage: browser.mjs URL | --device ISSUER USER_CODE [--deny]');
  return authorize(argv[0]);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    err(e?.message || String(e));
    process.exit(1);
  },
);
