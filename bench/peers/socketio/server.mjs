// A Socket.IO server as users write one: one room per channel.
//
//   subscribe: Socket.IO v4 client with the query parameter channel=NAME, e.g.
//              ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket&channel=NAME
//              (the socket joins room NAME when it connects)
//   publish:   POST /pub?channel=NAME   (io.to(NAME).emit("message", body))
//
// Default options (long-polling and WebSocket transports, no compression,
// 25 s pings). Usage: node server.mjs PORT
import http from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: node server.mjs PORT');
  process.exit(2);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (req.method === 'POST' && url.pathname === '/pub') {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const message = Buffer.concat(chunks).toString();
      io.to(url.searchParams.get('channel') ?? '').emit('message', message);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('{"ok":true}');
    });
    return;
  }
  if (url.pathname === '/healthz') {
    res.end('ok\n');
    return;
  }
  res.writeHead(404);
  res.end();
});

const io = new Server(server, { serveClient: false });
io.on('connection', (socket) => {
  const channel = socket.handshake.query.channel;
  if (typeof channel === 'string') socket.join(channel);
});

server.listen(port, '127.0.0.1', () => {
  console.error(`socketio listening on 127.0.0.1:${port}`);
});
process.on('SIGTERM', () => process.exit(0));
