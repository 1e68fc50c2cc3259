// @tus/server with @tus/file-store, for scripts/bench.sh.
//
//   node tus-node-server.mjs PORT DIR [HOST]
//
// Serves tus at http://HOST:PORT/files (HOST defaults to 127.0.0.1) and stores uploads in
// DIR. The packages are looked up in $TUS_NODE_MODULES (a node_modules folder, by default
// target/bench-node/node_modules of the repository: `scripts/bench.sh --with-node`
// installs them there), then the usual way from this file's folder.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const [port, dir, host = '127.0.0.1'] = process.argv.slice(2);
if (!port || !dir) {
  console.error('usage: node tus-node-server.mjs PORT DIR [HOST]');
  process.exit(2);
}

const here = dirname(fileURLToPath(import.meta.url));
const modules = resolve(
  process.env.TUS_NODE_MODULES ?? join(here, '..', '..', 'target', 'bench-node', 'node_modules'),
);

async function load(name) {
  for (const base of [join(modules, '..', 'x.js'), join(here, 'x.js')]) {
    try {
      return await import(pathToFileURL(createRequire(base).resolve(name)).href);
    } catch (e) {
      if (e.code !== 'MODULE_NOT_FOUND' && e.code !== 'ERR_MODULE_NOT_FOUND') throw e;
    }
  }
  console.error(`cannot find ${name} (looked in ${modules}); run scripts/bench.sh --with-node`);
  process.exit(1);
}

const { Server } = await load('@tus/server');
const { FileStore } = await load('@tus/file-store');

mkdirSync(dir, { recursive: true });
const server = new Server({ path: '/files', datastore: new FileStore({ directory: dir }) });
const http = server.listen(Number(port), host, () => {
  const a = http.address();
  console.error(`listening on http://${a.address}:${a.port}/files`);
});
// Keep-alive connections must outlive the client's think time between requests.
http.keepAliveTimeout = 60_000;
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    http.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
