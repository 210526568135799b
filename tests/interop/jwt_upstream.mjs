// An upstream that trusts the gate the way an app would: it verifies the assertion header of
// every request with the `jose` library against the gate's published JWKS, and answers 200
// with JSON {"ok": true, "claims", "protectedHeader", "url"} or {"ok": false, "code"}.
// With the `htm`/`htu` claims, the request must be the one they name: the method, and
// `X-Forwarded-Proto://Host/path` (the query left out).
//
//   PORT      listen port on 127.0.0.1 (0 = pick a free port; default 0)
//   JWKS_URL  the gate's `/.well-known/jwks.json` (fetched on first use)
//   ISSUER    the expected `iss`
//   AUDIENCE  the expected `aud`
//   HEADER    the assertion's header (default x-session-assertion)
//
// Once listening, exactly one line `LISTENING <port>` is printed to stdout.

import http from "node:http";
import * as jose from "./express/node_modules/jose/dist/webapi/index.js";

const jwks = jose.createRemoteJWKSet(new URL(process.env.JWKS_URL));
const header = (process.env.HEADER || "x-session-assertion").toLowerCase();

async function verify(req) {
  const token = req.headers[header];
  if (!token) return { ok: false, code: "ERR_NO_ASSERTION" };
  const url = `${req.headers["x-forwarded-proto"]}://${req.headers.host}${req.url.split("?")[0]}`;
  try {
    const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, {
      issuer: process.env.ISSUER,
      audience: process.env.AUDIENCE,
      algorithms: ["ES256", "EdDSA"],
      requiredClaims: ["exp", "iat", "sub", "jti"],
    });
    if (payload.htm !== undefined && (payload.htm !== req.method || payload.htu !== url)) {
      return { ok: false, code: "ERR_REQUEST_MISMATCH", claims: payload, url };
    }
    return { ok: true, claims: payload, protectedHeader, url, token };
  } catch (e) {
    return { ok: false, code: e.code || String(e) };
  }
}

const server = http.createServer((req, res) => {
  req.resume();
  req.on("end", async () => {
    const body = JSON.stringify(await verify(req));
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

server.listen(Number.parseInt(process.env.PORT || "0", 10), "127.0.0.1", () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
