"use strict";

// The peer of sessiongate in the load bench (benches/load.rs): what a Node shop would deploy
// to do the gate's job. express-session + connect-redis check the signed cookie and load the
// session from Redis (rolling, like the gate's default), a request without a logged-in user
// gets a 401 JSON, and http-proxy-middleware forwards the rest to the upstream with the
// identity headers set, over keep-alive connections. One process, no cluster.
//
// With PEER_MODE=auth-request it is instead the checker nginx's `auth_request` asks (the
// same snippets as the gate's forward-auth, contrib/nginx/): the same session middleware,
// then 200 with the identity headers, or 401 for /api/ without a user, judged on the path of
// `X-Original-URL`. Nothing is proxied.
//
//   PORT            listen port on 127.0.0.1 (required)
//   REDIS_URL       redis://127.0.0.1:PORT/0 (required)
//   UPSTREAM        http://127.0.0.1:PORT (required, except with PEER_MODE=auth-request)
//   SESSION_SECRET  the secret the gate signs with (required)
//   ROLLING         "0": rolling off (resave: false still touches the TTL), as BENCH_ROLLING=0
//   PEER_UPSTREAM_KEEPALIVE  "0": http-proxy-middleware's default (a new upstream connection
//                   per request) instead of a keep-alive agent
//   PEER_MODE       "auth-request": answer nginx's auth_request subrequests (see above)

const http = require("node:http");
const express = require("express");
const session = require("express-session");
const { RedisStore } = require("connect-redis");
const { createClient } = require("redis");
const { createProxyMiddleware } = require("http-proxy-middleware");

function need(name) {
  const v = process.env[name];
  if (!v) {
    process.stderr.write(`bench-peer: ${name} is required\n`);
    process.exit(2);
  }
  return v;
}

const port = Number.parseInt(need("PORT"), 10);
const redisClient = createClient({ url: need("REDIS_URL") });
redisClient.on("error", (err) => process.stderr.write(`bench-peer: redis error: ${err.message}\n`));

const app = express();
app.disable("x-powered-by");
app.disable("etag");

app.use(
  session({
    store: new RedisStore({ client: redisClient, prefix: "sess:" }),
    secret: [need("SESSION_SECRET")],
    name: "connect.sid",
    rolling: process.env.ROLLING !== "0",
    resave: false,
    saveUninitialized: false,
    cookie: { httpOnly: true, path: "/", sameSite: "lax", maxAge: 30 * 60 * 1000 },
  }),
);

function hasUser(req) {
  return typeof req.session.user === "string";
}

function unauthenticated(res) {
  res.status(401).json({ error: "unauthenticated", message: "a valid session is required" });
}

if (process.env.PEER_MODE === "auth-request") {
  // nginx asks about the request it holds: the original target is in X-Original-URL
  // (absolute, as contrib/nginx/sessiongate.conf sends it). Every answer carries both
  // identity headers, empty without a user, as the gate's forward-auth does.
  app.use((req, res) => {
    let path;
    try {
      path = new URL(req.get("x-original-url") || "").pathname;
    } catch {
      res.status(400).json({ error: "bad_request", message: "X-Original-URL is missing or not absolute" });
      return;
    }
    const user = hasUser(req) ? req.session.user : "";
    if (path.startsWith("/api/") && user === "") {
      unauthenticated(res);
      return;
    }
    const roles = user !== "" && Array.isArray(req.session.roles) ? req.session.roles.join(",") : "";
    res.set({ "x-user": user, "x-user-roles": roles }).status(200).end();
  });
} else {
  // auth = "required": a session with a user, else 401 JSON (the gate's answer).
  app.use("/api", (req, res, next) => {
    if (!hasUser(req)) {
      unauthenticated(res);
      return;
    }
    next();
  });

  const proxy = createProxyMiddleware({
    target: need("UPSTREAM"),
    agent:
      process.env.PEER_UPSTREAM_KEEPALIVE === "0" ? undefined : new http.Agent({ keepAlive: true, maxSockets: 64 }),
    on: {
      proxyReq(proxyReq, req) {
        // Identity headers: never what the client sent, always what the session says.
        proxyReq.removeHeader("x-user");
        proxyReq.removeHeader("x-user-roles");
        if (req.session && typeof req.session.user === "string") {
          proxyReq.setHeader("x-user", req.session.user);
          if (Array.isArray(req.session.roles)) proxyReq.setHeader("x-user-roles", req.session.roles.join(","));
        }
      },
    },
  });
  // express strips the mount path; mount at the root so the upstream sees /api/... as the gate sends it.
  app.use(proxy);
}

redisClient.connect().then(
  () => {
    app.listen(port, "127.0.0.1", () => process.stdout.write(`bench-peer listening on ${port}\n`));
  },
  (err) => {
    process.stderr.write(`bench-peer: cannot connect to redis: ${err.message}\n`);
    process.exit(2);
  },
);
