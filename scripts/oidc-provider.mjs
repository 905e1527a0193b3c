// scripts/oidc-provider.mjs — one OpenID Connect provider (npm `oidc-provider`, panva's
// node-oidc-provider) for AutomateIQ's tests; `scripts/services up oidc` runs two of these.
//
// Environment (all required):
//   AIQ_OIDC_PORT          the port to listen on, on 127.0.0.1; the issuer is http://127.0.0.1:<port>
//   AIQ_OIDC_ISSUER_NAME   a or b: which fixed set of clients this instance knows
//   AIQ_OIDC_NODE_MODULES  the node_modules folder `oidc-provider` is loaded from (this repo
//                          holds no third-party code; scripts/services installs it with npm)
//
// Signing key: a fresh RSA 2048 key made at every start (kid = its RFC 7638 thumbprint),
// RS256, published at /jwks (the discovery document's jwks_uri). So a restart rotates the key.
//
// Only the client credentials grant is on. POST /token with grant_type=client_credentials
// and scope=api, the client authenticated by HTTP Basic (client_secret_basic), returns an
// RS256 JWT access token (header typ at+jwt, kid) for resource urn:aiq:api (the default when
// the request names none) whose payload holds iss (the issuer), aud "automateiq",
// sub and client_id (the client's id), iat, exp (10 minutes later), jti, scope "api", and the
// client's claims below.
//
// Clients (grant_types client_credentials only, no redirect URIs, no response types):
//   issuer a:  acme-admin  secret acme-admin-secret  claims {org: "org-acme", groups: ["aiq-admins", "everyone"]}
//              acme-user   secret acme-user-secret   claims {org: "org-acme", groups: ["everyone"]}
//              no-org      secret no-org-secret      claims {groups: ["aiq-admins"]}  (no org claim)
//   issuer b:  beta-admin  secret beta-admin-secret  claims {groups: ["beta-admins"]}
//              beta-user   secret beta-user-secret   claims {groups: ["staff"]}
//
// Issuer a also signs people in to the web console: the public client aiq-console
// (authorization code with PKCE S256, no secret, application_type native with the redirect
// URI http://127.0.0.1/, so any port of the loopback address is accepted as RFC 8252
// asks) and oidc-provider's own development login and consent pages, which take any login
// name and password. A login name below gets its claims in the access token (a JWT for
// urn:aiq:api, as above); any other gets none. CORS answers the console's origin (any
// loopback http origin) for this client only.
//   issuer a people:  ada@acme  claims {org: "org-acme", groups: ["aiq-admins", "everyone"]}
//                     bob@acme  claims {org: "org-acme", groups: ["everyone"]}
//
// Logs (stdout): one line once listening (version, issuer, kid), one per refused token request
// or server error, one at stop; oidc-provider itself warns twice at start (stderr): Node 20 is
// not the LTS it asks for (22; it runs on 20.18+), and its in-memory store is for development.
// That store is all the state there is: tokens are gone at a restart.
import * as crypto from "node:crypto";
import * as http from "node:http";
import * as path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const RESOURCE = "urn:aiq:api";
const AUDIENCE = "automateiq";

const CLIENTS = {
  a: {
    "acme-admin": { secret: "acme-admin-secret", claims: { org: "org-acme", groups: ["aiq-admins", "everyone"] } },
    "acme-user": { secret: "acme-user-secret", claims: { org: "org-acme", groups: ["everyone"] } },
    "no-org": { secret: "no-org-secret", claims: { groups: ["aiq-admins"] } },
  },
  b: {
    "beta-admin": { secret: "beta-admin-secret", claims: { groups: ["beta-admins"] } },
    "beta-user": { secret: "beta-user-secret", claims: { groups: ["staff"] } },
  },
};

const PEOPLE = {
  a: {
    "ada@acme": { org: "org-acme", groups: ["aiq-admins", "everyone"] },
    "bob@acme": { org: "org-acme", groups: ["everyone"] },
  },
  b: {},
};
const CONSOLE_CLIENT = "aiq-console";
const LOOPBACK_ORIGIN = /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/;

function fail(message) {
  console.error(`oidc-provider.mjs: ${message}`);
  process.exit(2);
}

const port = Number(process.env.AIQ_OIDC_PORT);
const name = process.env.AIQ_OIDC_ISSUER_NAME;
const nodeModules = process.env.AIQ_OIDC_NODE_MODULES;
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`AIQ_OIDC_PORT=${process.env.AIQ_OIDC_PORT} is no port`);
if (!Object.hasOwn(CLIENTS, name ?? "")) fail(`AIQ_OIDC_ISSUER_NAME=${name} is none of: ${Object.keys(CLIENTS).join(", ")}`);
if (!nodeModules || !path.isAbsolute(nodeModules)) fail(`AIQ_OIDC_NODE_MODULES=${nodeModules} is no absolute path`);

// Resolved from the folder that holds node_modules, the way `require` there would.
const require = createRequire(path.join(path.dirname(nodeModules), "noop.js"));
const packageJson = require.resolve("oidc-provider/package.json");
const { version } = require(packageJson);
const { default: Provider, errors } = await import(pathToFileURL(require.resolve("oidc-provider")).href);

const issuer = `http://127.0.0.1:${port}`;
const clients = CLIENTS[name];
const people = PEOPLE[name];
const signsPeopleIn = Object.keys(people).length > 0;

// A fresh signing key; kid = the JWK thumbprint (RFC 7638: SHA-256 over e, kty, n in order).
const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = privateKey.export({ format: "jwk" });
const kid = crypto.createHash("sha256").update(JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n })).digest("base64url");

const provider = new Provider(issuer, {
  jwks: { keys: [{ ...jwk, kid, use: "sig", alg: "RS256" }] },
  clients: Object.entries(clients).map(([id, { secret }]) => ({
    client_id: id,
    client_secret: secret,
    grant_types: ["client_credentials"],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: "client_secret_basic",
  })).concat(signsPeopleIn ? [{
    client_id: CONSOLE_CLIENT,
    application_type: "native",
    grant_types: ["authorization_code"],
    response_types: ["code"],
    redirect_uris: ["http://127.0.0.1/"],
    token_endpoint_auth_method: "none",
  }] : []),
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  clientBasedCORS: (_ctx, origin, client) => client.clientId === CONSOLE_CLIENT && LOOPBACK_ORIGIN.test(origin),
  cookies: { keys: [crypto.randomBytes(32).toString("base64url")] },
  routes: { jwks: "/jwks", token: "/token" },
  ttl: { ClientCredentials: 600 },
  features: {
    devInteractions: { enabled: signsPeopleIn },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
        return { scope: "api", audience: AUDIENCE, accessTokenFormat: "jwt", jwt: { sign: { alg: "RS256" } } };
      },
    },
  },
  // The client's own claims in every access token issued to it (sub, iss, aud, ... are set by
  // the library after these and cannot be overridden from here).
  extraTokenClaims: async (_ctx, token) => {
    if (token.accountId) {
      return Object.hasOwn(people, token.accountId) ? structuredClone(people[token.accountId]) : undefined;
    }
    const clientId = token.clientId ?? token.client?.clientId;
    const claims = Object.hasOwn(clients, clientId ?? "") ? clients[clientId].claims : undefined;
    return claims ? structuredClone(claims) : undefined;
  },
});

// Who asked: the authenticated client, else the id in the Basic header (authentication failed).
function requester(ctx) {
  if (ctx.oidc?.client) return ctx.oidc.client.clientId;
  const basic = /^basic (.+)$/i.exec(ctx.get("authorization"));
  if (!basic) return "(no client)";
  const id = Buffer.from(basic[1], "base64").toString().split(":")[0];
  return `${JSON.stringify(id)} (not authenticated)`;
}

provider.on("grant.error", (ctx, error) => {
  console.log(`token request by ${requester(ctx)} refused: ${error.error ?? error.name}: ${error.error_description ?? error.message}`);
});
provider.on("server_error", (_ctx, error) => {
  console.log(`server error: ${error.stack ?? error}`);
});

const server = http.createServer(provider.callback());
server.on("error", (error) => fail(`cannot listen on 127.0.0.1:${port}: ${error.message}`));
server.listen(port, "127.0.0.1", () => {
  console.log(`oidc-provider ${version}: issuer ${name} ${issuer} listening (kid ${kid}; clients ${Object.keys(clients).join(", ")})`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    console.log(`issuer ${name}: ${signal}, stopping`);
    process.exit(0);
  });
}
