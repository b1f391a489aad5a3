// A real OAuth 2.1 / OpenID authorization server for patchbay's sign-in tests: node-oidc-provider.
//
// Usage: node provider.mjs CONFIG_JSON   (CONFIG_JSON: {"clients": [...], "cimd": bool, "accessTokenTTL": s,
//   "port": n, "jwks": {"keys": [private JWKs]}, "opaque": bool, "tokenClaims": {"<client_id>": {claims}}})
// Listens on 127.0.0.1 (``port``, else a free one) and prints "listening <issuer>" once it accepts requests.
// ``jwks`` are its signing keys (the first signs: restart it with a new key first to rotate keys),
// ``opaque`` makes access tokens for resources opaque (for introspection), ``tokenClaims`` adds claims to
// the access tokens a client gets (roles, a profile).
// Dynamic registration, PKCE (S256), resource indicators (JWT access tokens whose audience is the resource,
// any loopback http(s) URL), refresh-token rotation on every use, client credentials, revocation, and its
// own development login and consent pages (any login and password).
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(path.join(process.cwd(), 'package.json'));
const { default: Provider } = await import(require.resolve('oidc-provider'));

const options = JSON.parse(process.argv[2] || '{}');
const RESOURCE_SCOPES = 'mcp:read mcp:write mcp:admin';

function isLoopbackResource(indicator) {
  try {
    const url = new URL(indicator);
    return ['http:', 'https:'].includes(url.protocol) && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
  } catch {
    return false;
  }
}

const server = http.createServer();
await new Promise((resolve) => server.listen(options.port || 0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const configuration = {
  clients: options.clients || [],
  ...(options.jwks ? { jwks: options.jwks } : {}),
  extraTokenClaims: async (_ctx, token) => (options.tokenClaims || {})[token.clientId],
  scopes: ['openid', 'offline_access'],
  claims: { openid: ['sub'] },
  pkce: { required: () => true },
  rotateRefreshToken: () => true,
  clientBasedCORS: () => true,
  cookies: { keys: ['patchbay-test-cookie-key'] },
  ttl: {
    AccessToken: options.accessTokenTTL || 3600,
    ClientCredentials: options.accessTokenTTL || 3600,
    RefreshToken: 86400,
    Grant: 86400,
    Session: 86400,
    Interaction: 3600,
    AuthorizationCode: 600,
  },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (!isLoopbackResource(indicator)) {
          throw new Error(`unknown resource ${indicator}`);
        }
        return {
          scope: RESOURCE_SCOPES,
          audience: indicator,
          accessTokenFormat: options.opaque ? 'opaque' : 'jwt',
          accessTokenTTL: options.accessTokenTTL || 3600,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  issueRefreshToken: async (_ctx, client, code) =>
    client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
};
if (options.cimd) {
  // Client ID metadata documents: the test hosts one over HTTPS on 127.0.0.1 (its CA in NODE_EXTRA_CA_CERTS),
  // so the provider's SSRF guard against special-use addresses is left out of this fetch.
  configuration.features.clientIdMetadataDocument = { enabled: true, ack: 'draft-02', allowFetch: async () => true };
  configuration.fetch = (url, init) => {
    delete init.dispatcher;
    return globalThis.fetch(url, init);
  };
}

const provider = new Provider(issuer, configuration);
provider.proxy = false;
// Refresh-token reuse after rotation must fail loudly in the tests, not silently.
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
server.on('request', provider.callback());
process.stdout.write(`listening ${issuer}\n`);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
