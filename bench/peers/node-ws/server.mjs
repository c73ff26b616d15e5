// A WebSocket broadcast server written the way users write one with `ws`:
//
//   subscribe: ws://127.0.0.1:PORT/ws?channel=NAME
//   publish:   POST /pub?channel=NAME   (the body is sent as one text message
//              to every socket of that channel, with ws.send per client)
//
// Usage: node server.mjs PORT
import http from 'node:http';
import { WebSocketServer, WebSocket } from 'ws';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: node server.mjs PORT');
  process.exit(2);
}

/** channel name -> Set of sockets */
const channels = new Map();

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (req.method === 'POST' && url.pathname === '/pub') {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const message = Buffer.concat(chunks).toString();
      const sockets = channels.get(url.searchParams.get('channel') ?? '');
      let sent = 0;
      if (sockets) {
        for (const ws of sockets) {
          if (ws.readyState === WebSocket.OPEN) {
            ws.send(message);
            sent++;
          }
        }
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ sent }));
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

const wss = new WebSocketServer({ server, path: '/ws' });
wss.on('connection', (ws, req) => {
  const name = new URL(req.url, 'http://localhost').searchParams.get('channel') ?? '';
  let sockets = channels.get(name);
  if (!sockets) {
    sockets = new Set();
    channels.set(name, sockets);
  }
  sockets.add(ws);
  ws.on('close', () => {
    sockets.delete(ws);
    if (sockets.size === 0 && channels.get(name) === sockets) channels.delete(name);
  });
  ws.on('error', () => {});
});

server.listen(port, '127.0.0.1', () => {
  console.error(`node-ws listening on 127.0.0.1:${port}`);
});
process.on('SIGTERM', () => process.exit(0));
