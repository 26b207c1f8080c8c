'use strict';
// A Node.js `ws` server peer (see peer_common.js for the line protocol).
//
//   node ws_server.js [--echo] [--protocol P]... [--header "Name: value"]...
//                     [--cert cert.pem --key key.pem] [--deflate]
//
// Listens on 127.0.0.1, a free port, and prints {"event":"listening","port":N}.
// Subprotocols: picks the first of its own --protocol list (its order of
// preference) that the client offered, else none. --header lines are added
// to every handshake response. With --cert/--key it serves wss://. With
// --deflate it accepts permessage-deflate and compresses every message.
// Commands go to the most recent connection. Exits when stdin ends.

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');
const { emit, watch, runCommand, readCommands, parseArgs } = require('./peer_common');

const options = parseArgs(process.argv.slice(2), ['protocol', 'header'], ['echo', 'deflate']);

const httpServer = options.cert
  ? https.createServer({ cert: fs.readFileSync(options.cert), key: fs.readFileSync(options.key) })
  : http.createServer();

const wss = new WebSocketServer({
  server: httpServer,
  handleProtocols: (offered) => options.protocol.find((p) => offered.has(p)) || false,
  perMessageDeflate: options.deflate ? { threshold: 0 } : false,
});

wss.on('headers', (headers) => {
  headers.push(...options.header);
});

let current = null;

wss.on('connection', (ws, request) => {
  current = ws;
  emit({
    event: 'connection',
    url: request.url,
    headers: request.headers,
    protocol: ws.protocol,
    extensions: ws.extensions,
    tls: Boolean(request.socket.encrypted),
  });
  watch(ws, Boolean(options.echo));
});

readCommands(
  (command) => {
    if (current === null) {
      emit({ event: 'error', message: 'no connection yet' });
    } else {
      runCommand(current, command);
    }
  },
  () => {
    for (const client of wss.clients) {
      client.terminate();
    }
    wss.close();
    httpServer.close();
  },
);

httpServer.listen(0, '127.0.0.1', () => {
  emit({ event: 'listening', port: httpServer.address().port });
});
