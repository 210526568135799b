"use strict";

// Echo backend on Node's own `http` module, for the identity tests: every request gets 200
// with a JSON body {"method", "path", "headers"}, where `headers` is `req.headers` exactly
// as Node's parser (llhttp) read them: names lower-cased, values with leading and trailing
// whitespace trimmed, repeated headers joined with ", ".
//
//   PORT  listen port on 127.0.0.1 (0 = pick a free port; default 0)
//
// Once listening, exactly one line `LISTENING <port>` is printed to stdout.

const http = require("node:http");

const server = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    const body = JSON.stringify({ method: req.method, path: req.url, headers: req.headers });
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
