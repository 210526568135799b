"use strict";

// Reference express-session + connect-redis (or connect-pg-simple) application used by the
// sessiongate integration tests. Configured only through environment
// variables (see README section in the header below):
//
//   PORT               listen port on 127.0.0.1 (0 = pick a free port; default 0)
//   REDIS_URL          required; redis://host:port/db, rediss://..., or
//                      unix:///abs/path/redis.sock[?db=N]
//   REDIS_CLUSTER      optional; a JSON array of redis:// seed URLs: node-redis's cluster
//                      client instead of REDIS_URL (which is then not read)
//   PG_URL             optional; postgres://user@host:port/db: connect-pg-simple 10 on that
//                      database instead of Redis (REDIS_URL and REDIS_CLUSTER are then not read)
//   PG_SCHEMA, PG_TABLE  connect-pg-simple `schemaName` / `tableName` (default public / session)
//   SESSION_SECRETS    required; JSON array of strings (first signs, all verify)
//   COOKIE_NAME        express-session `name` (default "connect.sid")
//   SESSION_PREFIX     connect-redis `prefix` (default "sess:")
//   COOKIE_MAX_AGE_MS  optional integer -> cookie.maxAge (absent = browser-session cookie)
//   SAME_SITE          optional -> cookie.sameSite ("lax", "strict", "none", "true", "false")
//   STORE_TTL          optional integer seconds -> connect-redis `ttl` (default 86400)
//   BACKEND_NAME       optional, echoed in responses (default "express")
//   TRUST_PROXY        "1" -> app.set("trust proxy", true): req.hostname and req.protocol
//                      believe X-Forwarded-Host / X-Forwarded-Proto
//
// Once listening, exactly one line `LISTENING <port>` is printed to stdout.

const http = require("node:http");
const express = require("express");
const session = require("express-session");
const { RedisStore } = require("connect-redis");
const { createClient, createCluster } = require("redis");
const methodOverride = require("method-override");
const multer = require("multer");

function fail(msg) {
  process.stderr.write(`interop-express: ${msg}\n`);
  process.exit(2);
}

function optInt(name) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return undefined;
  if (!/^-?\d+$/.test(raw.trim())) fail(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  return Number.parseInt(raw, 10);
}

// ---- configuration ----------------------------------------------------------

const port = optInt("PORT") ?? 0;
const backend = process.env.BACKEND_NAME || "express";
const cookieName = process.env.COOKIE_NAME || "connect.sid";
const prefix = process.env.SESSION_PREFIX ?? "sess:";
const maxAge = optInt("COOKIE_MAX_AGE_MS");
const storeTtl = optInt("STORE_TTL");

let secrets;
try {
  secrets = JSON.parse(process.env.SESSION_SECRETS ?? "");
} catch (e) {
  fail(`SESSION_SECRETS must be a JSON array of strings: ${e.message}`);
}
if (!Array.isArray(secrets) || secrets.length === 0 || !secrets.every((s) => typeof s === "string" && s.length > 0)) {
  fail("SESSION_SECRETS must be a non-empty JSON array of non-empty strings");
}

let sameSite;
if (process.env.SAME_SITE) {
  const v = process.env.SAME_SITE.trim().toLowerCase();
  if (v === "true") sameSite = true;
  else if (v === "false") sameSite = undefined;
  else if (["lax", "strict", "none"].includes(v)) sameSite = v;
  else fail(`SAME_SITE must be lax|strict|none|true|false, got ${JSON.stringify(process.env.SAME_SITE)}`);
}

const pgUrl = process.env.PG_URL || null;
const clusterSeeds = !pgUrl && process.env.REDIS_CLUSTER ? JSON.parse(process.env.REDIS_CLUSTER) : null;
const redisUrl = process.env.REDIS_URL;
if (!pgUrl && !redisUrl && !clusterSeeds) fail("REDIS_URL (or PG_URL) is required");

function redisOptions(url) {
  if (url.startsWith("unix://")) {
    // unix:///abs/path/redis.sock[?db=N]
    const rest = url.slice("unix://".length);
    const q = rest.indexOf("?");
    const path = decodeURIComponent(q === -1 ? rest : rest.slice(0, q));
    const params = new URLSearchParams(q === -1 ? "" : rest.slice(q + 1));
    const opts = { socket: { path, reconnectStrategy: false } };
    const db = params.get("db") ?? params.get("database");
    if (db !== null) opts.database = Number.parseInt(db, 10);
    return opts;
  }
  return { url, socket: { reconnectStrategy: false } };
}

// ---- redis + store ----------------------------------------------------------

let shuttingDown = false;
let redisClient = null;
let store;
if (pgUrl) {
  // connect-pg-simple's defaults, on the table the gate shares.
  const PgStore = require("connect-pg-simple")(session);
  const pgOpts = {
    conString: pgUrl,
    schemaName: process.env.PG_SCHEMA || "public",
    tableName: process.env.PG_TABLE || "session",
    errorLog: (...args) => {
      if (!shuttingDown) process.stderr.write(`interop-express: pg error: ${args.join(" ")}\n`);
    },
  };
  if (storeTtl !== undefined) pgOpts.ttl = storeTtl;
  store = new PgStore(pgOpts);
} else {
  redisClient = clusterSeeds
    ? createCluster({ rootNodes: clusterSeeds.map((url) => ({ url })) })
    : createClient(redisOptions(redisUrl));
  redisClient.on("error", (err) => {
    if (!shuttingDown) process.stderr.write(`interop-express: redis error: ${err.message}\n`);
  });
  const storeOpts = { client: redisClient, prefix };
  if (storeTtl !== undefined) storeOpts.ttl = storeTtl;
  store = new RedisStore(storeOpts);
}

const cookie = { httpOnly: true, path: "/", secure: false };
if (maxAge !== undefined) cookie.maxAge = maxAge;
if (sameSite !== undefined) cookie.sameSite = sameSite;

// ---- app --------------------------------------------------------------------

const app = express();
if (process.env.TRUST_PROXY === "1") app.set("trust proxy", true);
app.disable("x-powered-by");
app.disable("etag");

// Health check is registered before the session middleware so that probing it
// never touches (or rolls) any session.
app.get("/health", (req, res) => {
  res.type("text/plain").send("ok");
});

// Method overrides wired the way apps commonly wire them: the `_method` query key, and the
// `_method` field of urlencoded and multipart bodies (method-override's README body getter).
// `/mo/...` answers with the method the app ended up serving and the identity it was given.
function bodyMethod(req) {
  if (req.body && typeof req.body === "object" && "_method" in req.body) {
    const method = req.body._method;
    delete req.body._method;
    return method;
  }
  return undefined;
}
app.use(
  "/mo",
  express.urlencoded({ extended: true }),
  multer().any(),
  methodOverride("_method"),
  methodOverride(bodyMethod),
  (req, res) => {
    res.json({
      backend,
      method: req.method,
      originalMethod: req.originalMethod,
      path: req.originalUrl,
      user: req.get("x-user") ?? null,
    });
  },
);

app.use(
  session({
    store,
    secret: secrets,
    name: cookieName,
    rolling: true,
    resave: false,
    saveUninitialized: false,
    cookie,
  }),
);

app.post("/login", (req, res, next) => {
  const user = typeof req.query.user === "string" ? req.query.user : "";
  if (!user) {
    res.status(400).json({ ok: false, error: "missing user", backend });
    return;
  }
  const rolesRaw = typeof req.query.roles === "string" ? req.query.roles : "";
  const roles = rolesRaw.split(",").map((r) => r.trim()).filter((r) => r.length > 0);
  req.session.regenerate((err) => {
    if (err) return next(err);
    req.session.user = user;
    req.session.roles = roles;
    req.session.loginAt = Date.now();
    req.session.save((err2) => {
      if (err2) return next(err2);
      res.json({ ok: true, user, backend });
    });
  });
});

app.get("/whoami", (req, res) => {
  res.json({
    backend,
    hostname: req.hostname,
    user: req.session.user ?? null,
    roles: req.session.roles ?? [],
    sessionId: req.sessionID,
    session: req.session,
    headers: req.headers,
  });
});

const RESERVED_KEYS = new Set(["cookie", "id", "req", "__proto__", "constructor", "prototype",
  "regenerate", "destroy", "reload", "save", "touch", "resetMaxAge"]);

app.post("/write", (req, res) => {
  const key = typeof req.query.key === "string" ? req.query.key : "";
  const value = typeof req.query.value === "string" ? req.query.value : "";
  if (!key || RESERVED_KEYS.has(key)) {
    res.status(400).json({ ok: false, error: "missing or reserved key", backend });
    return;
  }
  req.session[key] = String(value);
  res.json({ ok: true, backend, session: req.session });
});

app.post("/logout", (req, res, next) => {
  req.session.destroy((err) => {
    if (err) return next(err);
    res.clearCookie(cookieName, { path: "/" });
    res.json({ ok: true, backend });
  });
});

app.use((req, res) => {
  res.status(404).json({ ok: false, error: "not found", backend, method: req.method, path: req.originalUrl });
});

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  process.stderr.write(`interop-express: request error: ${err && err.stack ? err.stack : err}\n`);
  res.status(500).json({ ok: false, error: String(err && err.message ? err.message : err), backend });
});

// ---- startup / shutdown -----------------------------------------------------

const server = http.createServer(app);

function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  try {
    server.close();
    server.closeAllConnections();
  } catch (_) {}
  try {
    if (redisClient) redisClient.destroy();
    else store.close();
  } catch (_) {}
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

(async () => {
  if (redisClient) {
    try {
      await redisClient.connect();
    } catch (err) {
      fail(`cannot connect to redis at ${redisUrl}: ${err.message}`);
    }
  }
  server.on("error", (err) => fail(`listen failed: ${err.message}`));
  server.listen(port, "127.0.0.1", () => {
    process.stdout.write(`LISTENING ${server.address().port}\n`);
  });
})();
