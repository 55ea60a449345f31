// Evaluates a PAC file with pac-resolver (the PAC implementation behind Node's pac-proxy-agent)
// in a QuickJS sandbox: `node evaluate.mjs FILE URL...` prints {"URL": "result", ...} as JSON.
import { readFile } from 'node:fs/promises';
import { QuickJS } from 'quickjs-wasi';
import { createPacResolver } from 'pac-resolver';

const [pacPath, ...urls] = process.argv.slice(2);
const wasm = await readFile(new URL(import.meta.resolve('quickjs-wasi/quickjs.wasm')));
const qjs = await QuickJS.create({ wasm });
const findProxyForURL = createPacResolver(qjs, await readFile(pacPath, 'utf8'));
const answers = {};
for (const url of urls) {
  answers[url] = await findProxyForURL(url);
}
console.log(JSON.stringify(answers));
