// Test OAuth 2.0 / OpenID Connect authorization server for mailoauth's integration tests.
//
// Built on the npm package `oidc-provider` (see package.json for the pinned version).
// Mimics Microsoft's identity platform where it matters to an IMAP/SMTP OAuth client:
// one resource per access token, resource named by the scope prefix, JWT access tokens
// with typ "JWT", rotating refresh tokens that can be redeemed for another resource.
// Login and consent are automatic (no HTML forms); see README.md.
//
// stdout: exactly one JSON line once listening; everything else goes to stderr.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as querystring from 'node:querystring';

import Provider, { errors } from 'oidc-provider';

// ---------------------------------------------------------------------------
// Configuration from the environment
// ---------------------------------------------------------------------------

function intEnv(name, dflt) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`oauth-server: ${name} must be a non-negative integer, got ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return n;
}

const PORT = intEnv('PORT', 0);
const ACCESS_TOKEN_TTL = intEnv('ACCESS_TOKEN_TTL', 3600) || 3600;
const REFRESH_TOKEN_TTL = intEnv('REFRESH_TOKEN_TTL', 14 * 24 * 3600) || 14 * 24 * 3600;
const DEVICE_INTERVAL = intEnv('DEVICE_INTERVAL', 1);
const TOKEN_DELAY_MS = intEnv('TOKEN_DELAY_MS', 0);
const LOGIN_AS = process.env.LOGIN_AS || undefined;
const APP_CERT_PEM = process.env.APP_CERT_PEM || undefined;
const SIGNING_KEY_PEM = process.env.SIGNING_KEY_PEM || undefined;
// Set STRICT_OFFLINE_ACCESS=1 to get oidc-provider's OIDC behaviour back (offline_access is
// dropped unless the authorization request carries prompt=consent).
const STRICT_OFFLINE_ACCESS = ['1', 'true', 'yes'].includes((process.env.STRICT_OFFLINE_ACCESS || '').toLowerCase());
// Set NO_ID_TOKEN=1 to play an authorization server that never names the user in its token
// answers: id_token is removed from every token response (userinfo at /me still answers).
const NO_ID_TOKEN = ['1', 'true', 'yes'].includes((process.env.NO_ID_TOKEN || '').toLowerCase());
// Set REGISTRATION=1 to offer RFC 7591 dynamic client registration (open, no initial
// access token) at /reg, named as registration_endpoint in the discovery document.
// REGISTRATION=confidential does the same and makes every registered client confidential, as
// RFC 7591 lets a server replace requested metadata: the answer carries a client_secret that
// the token endpoint then requires, although the request asked for token_endpoint_auth_method none.
const REGISTRATION_MODE = (process.env.REGISTRATION || '').toLowerCase();
const REGISTRATION = ['1', 'true', 'yes', 'confidential'].includes(REGISTRATION_MODE);
const REGISTRATION_CONFIDENTIAL = REGISTRATION_MODE === 'confidential';
const DEFAULT_USER = 'alice@example.test';

const log = (...args) => process.stderr.write(`oauth-server: ${args.join(' ')}\n`);

// ---------------------------------------------------------------------------
// Resources and scopes (Microsoft style: scope = "<resource>/<name>")
// ---------------------------------------------------------------------------

const RESOURCES = {
  'https://outlook.test': {
    // delegated scopes (user flows)
    user: ['IMAP.AccessAsUser.All', 'POP.AccessAsUser.All', 'SMTP.Send'],
    // scopes a client-credentials (app-only) client may request
    app: ['.default'],
    // what `.default` stands for in the `roles` claim of app-only tokens
    appRoles: ['IMAP.AccessAsApp', 'POP.AccessAsApp', 'SMTP.SendAsApp'],
  },
  // Microsoft's own resource name, so an account on the Microsoft preset (scopes
  // https://outlook.office.com/...) can log in here; see the Microsoft-shaped paths below.
  'https://outlook.office.com': {
    user: ['IMAP.AccessAsUser.All', 'POP.AccessAsUser.All', 'SMTP.Send'],
    app: ['.default'],
    appRoles: ['IMAP.AccessAsApp', 'POP.AccessAsApp', 'SMTP.SendAsApp'],
  },
  'https://graph.test': {
    user: ['Mail.Read'],
    app: ['.default'],
    appRoles: ['Mail.Read'],
  },
};

const OIDC_SCOPES = ['openid', 'email', 'offline_access'];

function resourceOfScope(scope) {
  for (const resource of Object.keys(RESOURCES)) {
    if (scope.startsWith(`${resource}/`)) return resource;
  }
  return undefined;
}

// resources named by a space separated scope string, in order of first appearance
function resourcesOfScopes(scope) {
  const out = [];
  for (const s of String(scope || '').split(' ').filter(Boolean)) {
    const r = resourceOfScope(s);
    if (r && !out.includes(r)) out.push(r);
  }
  return out;
}

function isAppOnlyClient(client) {
  return !!client
    && client.grantTypeAllowed('client_credentials')
    && !client.grantTypeAllowed('authorization_code')
    && !client.grantTypeAllowed('urn:ietf:params:oauth:grant-type:device_code');
}

function allUserResourceScopes(resource) {
  return RESOURCES[resource].user.map((s) => `${resource}/${s}`);
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

function loadSigningKey() {
  let keyObject;
  if (SIGNING_KEY_PEM) {
    keyObject = crypto.createPrivateKey(fs.readFileSync(SIGNING_KEY_PEM));
  } else {
    ({ privateKey: keyObject } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }));
  }
  const jwk = keyObject.export({ format: 'jwk' });
  if (jwk.kty !== 'RSA') throw new Error('SIGNING_KEY_PEM must be an RSA private key');
  // RFC 7638 thumbprint as kid: deterministic for a given key and filesystem safe.
  const thumb = crypto.hash('sha256', JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n }), 'base64url');
  const publicPem = crypto.createPublicKey(keyObject).export({ type: 'spki', format: 'pem' });
  return { jwk: { ...jwk, kid: thumb, use: 'sig', alg: 'RS256' }, kid: thumb, publicPem };
}

function appCertJwks(path) {
  const pem = fs.readFileSync(path);
  const cert = new crypto.X509Certificate(pem);
  const pub = cert.publicKey.export({ format: 'jwk' });
  if (pub.kty !== 'RSA') throw new Error('APP_CERT_PEM must hold an RSA certificate');
  const x5tS256 = crypto.hash('sha256', cert.raw, 'base64url');
  const x5t = crypto.hash('sha1', cert.raw, 'base64url');
  const sha1hex = crypto.hash('sha1', cert.raw, 'hex').toUpperCase();
  const base = { kty: pub.kty, n: pub.n, e: pub.e, use: 'sig' };
  // The same key several times: without kid (matches an assertion with no kid header) and
  // under the kids a client might plausibly send (x5t#S256, x5t, MSAL's upper-case SHA-1 hex).
  // No `alg` member, so both RS256 and PS256 assertions verify.
  return {
    keys: [
      { ...base },
      { ...base, kid: x5tS256 },
      { ...base, kid: x5t },
      { ...base, kid: sha1hex },
    ],
  };
}

const signing = loadSigningKey();

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

// http://localhost/ is what the Microsoft preset sends (the "Mobile and desktop applications"
// registration of FACTS §1), any port.
const LOOPBACK_HTTP_REDIRECTS = ['http://127.0.0.1/callback', 'http://localhost/callback', 'http://localhost/'];
// oidc-provider refuses to register https://localhost or https://127.0.0.1 for native clients
// ("claimed HTTPS URIs must not be using localhost") and only ignores the port of http
// loopback URIs. These are accepted through the redirectUriAllowed patch below instead.
const LOOPBACK_HTTPS_REDIRECTS = ['https://localhost/callback', 'https://127.0.0.1/callback'];

const USER_GRANTS = ['authorization_code', 'refresh_token'];
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

const clients = [
  {
    client_id: 'native-public',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: [...USER_GRANTS, DEVICE_GRANT],
    response_types: ['code'],
    redirect_uris: LOOPBACK_HTTP_REDIRECTS,
  },
  {
    client_id: 'confidential',
    client_secret: 'test-secret',
    application_type: 'native',
    // client_secret_basic is accepted as well: oidc-provider treats post and basic alike
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: USER_GRANTS,
    response_types: ['code'],
    redirect_uris: LOOPBACK_HTTP_REDIRECTS,
  },
  {
    client_id: 'app-secret',
    client_secret: 'app-secret-value',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  },
];

// A confidential web client for mailoauth-serve, whose callback is
// {base}/oauth/callback on the port its test chose.
if (process.env.SERVE_REDIRECT_URI) {
  clients.push({
    client_id: 'web-service',
    client_secret: 'web-service-secret',
    application_type: 'web',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: USER_GRANTS,
    response_types: ['code'],
    redirect_uris: [process.env.SERVE_REDIRECT_URI],
  });
}

if (APP_CERT_PEM) {
  clients.push({
    client_id: 'app-cert',
    token_endpoint_auth_method: 'private_key_jwt',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    jwks: appCertJwks(APP_CERT_PEM),
  });
}

const HTTPS_LOOPBACK_CLIENTS = new Set(['native-public', 'confidential']);

// ---------------------------------------------------------------------------
// Storage: an unbounded in-memory adapter. oidc-provider's bundled one is an LRU capped at
// 1000 entries (a long test could lose live refresh tokens) and prints a warning. Payloads
// are kept by reference, so a synchronous read-modify-write (see widenRefreshToken) cannot
// interleave with another request's consume().
// ---------------------------------------------------------------------------

const store = new Map(); // key -> { value, expiresAt }
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);

function storeGet(key) {
  const e = store.get(key);
  if (!e) return undefined;
  if (e.expiresAt !== undefined && e.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return e.value;
}
function storeSet(key, value, expiresIn) {
  store.set(key, { value, expiresAt: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined });
}
setInterval(() => {
  const now = Date.now();
  for (const [k, e] of store) if (e.expiresAt !== undefined && e.expiresAt <= now) store.delete(k);
}, 60_000).unref();

class MemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    if (this.model === 'Session') storeSet(`sessionUid:${payload.uid}`, id, expiresIn);
    if (GRANTABLE.has(this.model) && payload.grantId) {
      const gk = `grant:${payload.grantId}`;
      const members = storeGet(gk) || new Set();
      members.add(key);
      storeSet(gk, members);
    }
    if (payload.userCode) storeSet(`userCode:${payload.userCode}`, id, expiresIn);
    storeSet(key, payload, expiresIn);
  }

  async find(id) {
    return storeGet(this.key(id));
  }

  // synchronous variant used by the middleware
  peek(id) {
    return storeGet(this.key(id));
  }

  async findByUid(uid) {
    const id = storeGet(`sessionUid:${uid}`);
    return id === undefined ? undefined : storeGet(this.key(id));
  }

  async findByUserCode(userCode) {
    const id = storeGet(`userCode:${userCode}`);
    return id === undefined ? undefined : storeGet(this.key(id));
  }

  async consume(id) {
    const payload = storeGet(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const gk = `grant:${grantId}`;
    for (const key of storeGet(gk) || []) store.delete(key);
    store.delete(gk);
  }
}

const adapters = new Map();
function adapterFor(model) {
  if (!adapters.has(model)) adapters.set(model, new MemoryAdapter(model));
  return adapters.get(model);
}

// ---------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------

function sourceScope(ctx) {
  const e = ctx.oidc.entities;
  return e.RefreshToken?.scope || e.AuthorizationCode?.scope || e.DeviceCode?.scope || '';
}

const configuration = {
  adapter: adapterFor,
  clients,
  jwks: { keys: [signing.jwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: OIDC_SCOPES,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
  },
  // put the scope-granted claims (email) into the ID token even when userinfo exists
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: id, email_verified: true };
      },
    };
  },
  interactions: {
    url(ctx, interaction) {
      return `/interaction/${interaction.uid}`;
    },
  },
  routes: {
    authorization: '/auth',
    token: '/token',
    device_authorization: '/device/auth',
    code_verification: '/device',
    revocation: '/token/revocation',
    introspection: '/token/introspection',
    jwks: '/jwks',
    userinfo: '/me',
    end_session: '/session/end',
  },
  pkce: {
    // oidc-provider 9 only supports S256; required for public clients (and optional otherwise)
    required(ctx, client) {
      return client.clientAuthMethod === 'none';
    },
  },
  rotateRefreshToken: true,
  // refresh tokens for every client allowed to use them whenever offline_access survived
  // (see the prompt=consent rewrite below), never for app-only clients
  async issueRefreshToken(ctx, client, code) {
    return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
  },
  ttl: {
    AccessToken: () => ACCESS_TOKEN_TTL,
    ClientCredentials: () => ACCESS_TOKEN_TTL,
    RefreshToken: () => REFRESH_TOKEN_TTL,
    IdToken: 3600,
    AuthorizationCode: 600,
    DeviceCode: 900,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: REGISTRATION },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // no `resource` parameter: derive the resource(s) from the scope prefixes; at the token
      // endpoint pick the one named first by the request's scope (or the grant's scope)
      async defaultResource(ctx, client, oneOf) {
        if (oneOf) {
          const wanted = resourcesOfScopes(ctx.oidc.params.scope || sourceScope(ctx))
            .filter((r) => oneOf.includes(r));
          return wanted[0] ?? oneOf[0];
        }
        const rs = resourcesOfScopes(ctx.oidc.params.scope);
        if (rs.length === 0) return undefined;
        return rs.length === 1 ? rs[0] : rs;
      },
      // an access token for a resource even when openid is among the scopes
      async useGrantedResource() {
        return true;
      },
      async getResourceServerInfo(ctx, resourceIndicator, client) {
        const r = RESOURCES[resourceIndicator];
        if (!r) throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        const appOnly = isAppOnlyClient(client);
        const names = appOnly ? r.app : r.user;
        const scope = names.map((s) => `${resourceIndicator}/${s}`);
        if (appOnly && ctx?.oidc?.params?.scope) {
          const bad = ctx.oidc.params.scope.split(' ')
            .filter((s) => resourceOfScope(s) === resourceIndicator && !scope.includes(s));
          if (bad.length) {
            throw new errors.InvalidScope('app-only clients must request <resource>/.default', bad.join(' '));
          }
        }
        return {
          scope: scope.join(' '),
          accessTokenFormat: 'jwt',
          accessTokenTTL: ACCESS_TOKEN_TTL,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  formats: {
    customizers: {
      async jwt(ctx, token, jwt) {
        jwt.header = { ...(jwt.header || {}), typ: 'JWT' };
        const p = jwt.payload;
        const scopes = String(p.scope || '').split(' ').filter(Boolean);
        const shortName = (s) => {
          const r = resourceOfScope(s);
          return r ? s.slice(r.length + 1) : s;
        };
        if (token.kind === 'ClientCredentials') {
          const roles = [];
          for (const s of scopes) {
            const r = resourceOfScope(s);
            const names = r && shortName(s) === '.default' ? RESOURCES[r].appRoles : [shortName(s)];
            for (const n of names) if (!roles.includes(n)) roles.push(n);
          }
          p.roles = roles.join(' ');
          p.appid = token.clientId;
        } else if (token.accountId) {
          p.upn = token.accountId;
          p.scp = scopes.map(shortName).join(' ');
          p.appid = token.clientId;
        }
      },
    },
  },
};

// ---------------------------------------------------------------------------
// Helpers for the extra middleware
// ---------------------------------------------------------------------------

const stats = { token_requests: 0, by_grant_type: {} };
function resetStats() {
  stats.token_requests = 0;
  stats.by_grant_type = {};
}

// device_code value -> { interval (s), last (ms epoch or undefined), expires (ms epoch) }
const deviceState = new Map();
function gcDeviceState() {
  const now = Date.now();
  for (const [k, v] of deviceState) if (v.expires < now) deviceState.delete(k);
}

const locks = new Map(); // key -> tail of the queue (Promise)
async function withLock(key, fn) {
  if (key === undefined) return fn();
  const previous = locks.get(key) || Promise.resolve();
  let release;
  const mine = new Promise((resolve) => { release = resolve; });
  const tail = previous.then(() => mine);
  locks.set(key, tail);
  await previous;
  try {
    return await fn();
  } finally {
    release();
    if (locks.get(key) === tail) locks.delete(key);
  }
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function readRawBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req.iterator({ destroyOnReturn: false })) {
    size += chunk.length;
    if (size > 56 * 1024) throw new Error('request entity too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function sendOAuthError(ctx, status, error, description) {
  ctx.status = status;
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { error, error_description: description };
}

// Microsoft issues multi-resource refresh tokens: a refresh request may name a scope of
// another resource the user consented to. oidc-provider only allows a subset of the refresh
// token's own scope, so widen the stored refresh token first when every requested scope is
// already granted (our consent grants all scopes of all resources). The stored payload is
// patched synchronously, after the last await, so a concurrent consume() cannot be undone.
async function widenRefreshToken(provider, value, scopeParam) {
  const first = adapterFor('RefreshToken').peek(value);
  if (!first || first.consumed || !first.grantId) return;
  const grant = await provider.Grant.find(first.grantId);
  if (!grant) return;

  const payload = adapterFor('RefreshToken').peek(value);
  if (!payload || payload.consumed) return;
  const have = String(payload.scope || '').split(' ').filter(Boolean);
  const missing = scopeParam.split(' ').filter((s) => s && !have.includes(s));
  if (missing.length === 0) return;
  const grantedOIDC = new Set(grant.getOIDCScope().split(' '));
  const resources = Array.isArray(payload.resource) ? [...payload.resource]
    : (payload.resource ? [payload.resource] : []);
  for (const s of missing) {
    const r = resourceOfScope(s);
    if (r) {
      if (!grant.getResourceScope(r).split(' ').includes(s)) return;
      if (!resources.includes(r)) resources.push(r);
    } else if (!grantedOIDC.has(s)) {
      return;
    }
  }
  payload.scope = [...have, ...missing].join(' ');
  payload.resource = resources.length === 1 ? resources[0] : resources;
}

// ---------------------------------------------------------------------------
// Automated interactions (login + admin-style consent)
// ---------------------------------------------------------------------------

async function handleInteraction(provider, ctx) {
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  let result;

  if (prompt.name === 'login') {
    const accountId = LOGIN_AS || params.login_hint || DEFAULT_USER;
    result = { login: { accountId, remember: true } };
  } else if (prompt.name === 'consent') {
    const accountId = session?.accountId;
    let grant;
    if (details.grantId) grant = await provider.Grant.find(details.grantId);
    if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });

    const oidcScopes = new Set(OIDC_SCOPES);
    for (const s of prompt.details.missingOIDCScope || []) oidcScopes.add(s);
    grant.addOIDCScope([...oidcScopes].join(' '));
    if (prompt.details.missingOIDCClaims?.length) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    // admin consent: every delegated scope of every resource
    for (const resource of Object.keys(RESOURCES)) {
      grant.addResourceScope(resource, allUserResourceScopes(resource).join(' '));
    }
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    result = { consent: { grantId } };
  } else {
    result = { error: 'access_denied', error_description: `unsupported prompt ${prompt.name}` };
  }

  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  ctx.status = 303;
  ctx.set('Location', returnTo);
  ctx.set('Cache-Control', 'no-store');
  ctx.body = '';
}

// ---------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------

const server = http.createServer();

server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration);

  // https loopback redirect URIs with any port (see LOOPBACK_HTTPS_REDIRECTS)
  const ClientProto = provider.Client.prototype;
  const originalRedirectUriAllowed = ClientProto.redirectUriAllowed;
  ClientProto.redirectUriAllowed = function redirectUriAllowed(value) {
    if (originalRedirectUriAllowed.call(this, value)) return true;
    if (!HTTPS_LOOPBACK_CLIENTS.has(this.clientId)) return false;
    const u = URL.parse(value);
    if (!u || u.protocol !== 'https:' || !['localhost', '127.0.0.1'].includes(u.hostname)) return false;
    if (u.username || u.password || u.hash) return false;
    u.port = '';
    return LOOPBACK_HTTPS_REDIRECTS.includes(u.href);
  };

  // test routes, interactions, token endpoint instrumentation
  provider.use(async (ctx, next) => {
    // Microsoft's endpoint shapes, {tenant}/oauth2/v2.0/{authorize,token,devicecode}, lead to
    // this server's own (any tenant: this server has one), so the Microsoft preset works here
    // with only its login host replaced (MAILOAUTH_MICROSOFT_LOGIN_HOST in mailoauth's tests).
    const ms = /^\/[A-Za-z0-9.-]+\/oauth2\/v2\.0\/(authorize|token|devicecode)$/.exec(ctx.path);
    if (ms) ctx.path = { authorize: '/auth', token: '/token', devicecode: '/device/auth' }[ms[1]];

    const { path, method } = ctx;

    if (REGISTRATION_CONFIDENTIAL && path === '/reg' && method === 'POST' && ctx.is('application/json')) {
      let meta;
      try {
        meta = JSON.parse(await readRawBody(ctx.req));
      } catch (err) {
        sendOAuthError(ctx, 400, 'invalid_client_metadata', 'the request body is not JSON');
        return;
      }
      meta.token_endpoint_auth_method = 'client_secret_post';
      ctx.req.body = JSON.stringify(meta); // read by oidc-provider as its body (see /token)
    }

    if (path.startsWith('/test/')) {
      ctx.set('Cache-Control', 'no-store');
      if (path === '/test/stats' && method === 'GET') {
        ctx.body = stats;
        return;
      }
      if (path === '/test/reset-stats' && method === 'POST') {
        resetStats();
        ctx.body = stats;
        return;
      }
      if (path === '/test/signing-key' && method === 'GET') {
        ctx.body = { kid: signing.kid, alg: 'RS256', pem: signing.publicPem };
        return;
      }
      ctx.status = 404;
      ctx.body = { error: 'not_found' };
      return;
    }

    if (path.startsWith('/interaction/') && method === 'GET') {
      await handleInteraction(provider, ctx);
      return;
    }

    if (path === '/auth' && method === 'GET' && !STRICT_OFFLINE_ACCESS) {
      // Issue refresh tokens for offline_access without prompt=consent (as Microsoft does):
      // oidc-provider drops offline_access unless prompt contains consent, so add it.
      const q = new URLSearchParams(ctx.querystring);
      const scope = (q.get('scope') || '').split(' ');
      const prompt = (q.get('prompt') || '').split(' ').filter(Boolean);
      if (scope.includes('offline_access') && !prompt.includes('consent') && !prompt.includes('none')) {
        prompt.push('consent');
        q.set('prompt', prompt.join(' '));
        ctx.querystring = q.toString();
      }
    }

    if (path === '/device/auth' && method === 'POST') {
      await next();
      if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object' && ctx.body.device_code) {
        ctx.body.interval = DEVICE_INTERVAL;
        // Like Microsoft's endpoint: no verification_uri_complete.
        if (process.env.DEVICE_NO_COMPLETE_URI) delete ctx.body.verification_uri_complete;
        gcDeviceState();
        deviceState.set(ctx.body.device_code, {
          interval: DEVICE_INTERVAL,
          last: undefined,
          expires: Date.now() + (ctx.body.expires_in || 900) * 1000,
        });
      }
      return;
    }

    if (path === '/token' && method === 'POST') {
      let body = {};
      if (ctx.is('application/x-www-form-urlencoded')) {
        let raw;
        try {
          raw = await readRawBody(ctx.req);
        } catch (err) {
          stats.token_requests += 1;
          sendOAuthError(ctx, 400, 'invalid_request', 'failed to parse the request body');
          return;
        }
        ctx.req.body = raw; // oidc-provider falls back to req.body once the stream is consumed
        body = querystring.parse(raw);
      }
      const gt = typeof body.grant_type === 'string' ? body.grant_type : '(none)';
      stats.token_requests += 1;
      stats.by_grant_type[gt] = (stats.by_grant_type[gt] || 0) + 1;

      if (TOKEN_DELAY_MS > 0) {
        await sleep(TOKEN_DELAY_MS);
        // A client killed during the artificial delay never reached "the server": drop
        // its request (crash tests aim their kills here; a real server would have
        // answered long before).
        if (ctx.req.socket.destroyed || ctx.req.socket.readyState !== 'open') {
          log('client went away during TOKEN_DELAY_MS; request dropped');
          ctx.respond = false;
          return;
        }
      }

      if (gt === DEVICE_GRANT && typeof body.device_code === 'string') {
        const st = deviceState.get(body.device_code);
        if (st) {
          const now = Date.now();
          const early = st.last !== undefined && now - st.last < st.interval * 1000 - 20;
          st.last = now;
          if (early) {
            st.interval += 5; // RFC 8628 section 3.5
            sendOAuthError(ctx, 400, 'slow_down', `polling too fast; interval is now ${st.interval} seconds`);
            return;
          }
        }
      }

      // One request at a time per refresh token / code / device code: oidc-provider reads a
      // token and marks it consumed several awaits apart, so two concurrent requests with the
      // same refresh token could both succeed. Serialised, the second one is a replay
      // (invalid_grant, grant revoked), which is what concurrency tests must be able to see.
      const grantValue = body.refresh_token || body.code || body.device_code;
      const lockKey = typeof grantValue === 'string' ? `${gt}:${grantValue}` : undefined;

      await withLock(lockKey, async () => {
        if (gt === 'refresh_token' && typeof body.refresh_token === 'string'
          && typeof body.scope === 'string' && body.scope) {
          try {
            await widenRefreshToken(provider, body.refresh_token, body.scope);
          } catch (err) {
            log('widenRefreshToken failed:', err?.stack || String(err));
          }
        }
        await next();
      });
      if (NO_ID_TOKEN && ctx.body && typeof ctx.body === 'object') delete ctx.body.id_token;

      // forget the polling state once the device code reached a final answer
      if (gt === DEVICE_GRANT && typeof body.device_code === 'string') {
        const error = ctx.body && typeof ctx.body === 'object' ? ctx.body.error : undefined;
        if (ctx.status === 200 || (error && error !== 'authorization_pending' && error !== 'slow_down')) {
          deviceState.delete(body.device_code);
        }
      }
      return;
    }

    await next();
  });

  for (const event of ['grant.error', 'authorization.error', 'device_authorization.error',
    'code_verification.error', 'revocation.error', 'introspection.error', 'server_error',
    'jwks.error', 'discovery.error', 'userinfo.error', 'device_resume.error', 'resume.error']) {
    provider.on(event, (ctx, err) => {
      const e = err || ctx;
      log(`${event}: ${e?.error || e?.name || ''} ${e?.error_description || e?.message || ''}`
        + `${e?.error_detail ? ` (${e.error_detail})` : ''}`);
      if (event === 'server_error') log(e?.stack || '');
    });
  }

  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

server.on('error', (err) => {
  log('listen failed:', err.message);
  process.exit(1);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
