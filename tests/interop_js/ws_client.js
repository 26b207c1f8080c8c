'use strict';
// A Node.js `ws` client peer (see peer_common.js for the line protocol).
//
//   node ws_client.js URL [--echo] [--protocol P]... [--header "Name: value"]...
//                     [--ca ca.pem] [--deflate]
//
// Offers the --protocol subprotocols in that order and sends the --header
// request headers. Prints {"event":"upgrade","status":101,"headers":{...}}
// with the response headers, then {"event":"open",...}. With --ca it trusts
// only that CA for wss://. It offers permessage-deflate (ws's default); with
// --deflate it also compresses every message, however short. Exits once the connection has closed and stdin
// has ended (or right away on close if stdin already ended).

const fs = require('fs');
const { WebSocket } = require('ws');
const { emit, watch, runCommand, readCommands, parseArgs, splitHeader } = require('./peer_common');

const options = parseArgs(process.argv.slice(2), ['protocol', 'header'], ['echo', 'deflate']);
const url = options.positional[0];

const clientOptions = { headers: Object.fromEntries(options.header.map(splitHeader)) };
if (options.ca) {
  clientOptions.ca = fs.readFileSync(options.ca);
}
if (options.deflate) {
  clientOptions.perMessageDeflate = { threshold: 0 };
}

const ws = new WebSocket(url, options.protocol, clientOptions);

ws.on('upgrade', (response) => {
  emit({ event: 'upgrade', status: response.statusCode, headers: response.headers });
});
ws.on('unexpected-response', (request, response) => {
  emit({ event: 'rejected', status: response.statusCode, headers: response.headers });
  request.destroy();
});
// Commands that arrive before the handshake is done wait for it.
let pending = [];
ws.on('open', () => {
  emit({ event: 'open', protocol: ws.protocol, extensions: ws.extensions });
  for (const command of pending) {
    runCommand(ws, command);
  }
  pending = null;
});
watch(ws, Boolean(options.echo));

const lines = readCommands(
  (command) => (pending === null ? runCommand(ws, command) : pending.push(command)),
  () => {},
);
ws.on('close', () => {
  lines.close();
  process.stdin.destroy();
});
