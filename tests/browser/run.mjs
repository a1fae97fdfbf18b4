// Browser test runner: drives the edge's grpc-web support from headless
// Chromium and prints the results as one line of JSON on stdout.
//
// Usage, from any folder:
//
//   node tests/browser/run.mjs EDGE_URL API_KEY ALLOWED_PORT DISALLOWED_PORT
//
//   EDGE_URL         base URL of a running edge, such as http://127.0.0.1:8080
//   API_KEY          a key the edge accepts, sent in the x-api-key header
//   ALLOWED_PORT     serves the page as http://127.0.0.1:ALLOWED_PORT, an
//                    origin the edge must list in VALORA_CORS_ALLOW_ORIGINS
//   DISALLOWED_PORT  serves the same page as http://127.0.0.1:DISALLOWED_PORT,
//                    an origin the edge must not allow
//
// Steps: `buf generate` in proto/ (TypeScript into proto/gen/ts), an esbuild
// bundle of src/app.ts, two HTTP servers on 127.0.0.1 for the two origins,
// then Debian's Chromium (/usr/bin/chromium) through playwright-core with a
// fresh temporary profile. The scenarios call the page's `window.valora`
// functions (src/app.ts).
//
// Exit status: 0 whenever the scenarios ran, whatever the calls returned,
// because tests/tests/e2e/browser.rs asserts on the JSON. 1 when something
// around them failed (code generation, bundling, a port, the browser, the
// page) or the whole run took longer than RUN_TIMEOUT_MS; the reason goes
// to stderr and nothing is printed on stdout.

import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import * as esbuild from "esbuild";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = resolve(HERE, "..", "..");
const NODE_BIN = join(HERE, "node_modules", ".bin");

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

/** Listings created while the page watches WatchListingEvents. */
const WATCHED_LISTINGS = 3;
/** How long the runner waits for each listing's event before creating the next. */
const EVENT_WAIT_MS = 5_000;
/** Limit of the whole run, generation and browser start included. */
const RUN_TIMEOUT_MS = 120_000;

/** A key the edge accepts syntactically (visible ASCII) but does not know. */
const WRONG_KEY = "wrong-browser-test-key-0123456789abcdef";

function parseArguments(argv) {
  const usage = "usage: node run.mjs EDGE_URL API_KEY ALLOWED_PORT DISALLOWED_PORT";
  if (argv.length !== 4) {
    throw new Error(`expected 4 arguments, got ${argv.length}; ${usage}`);
  }
  const [edge, key, allowed, disallowed] = argv;
  const edgeUrl = new URL(edge);
  if (edgeUrl.protocol !== "http:" && edgeUrl.protocol !== "https:") {
    throw new Error(`invalid EDGE_URL ${edge}: expected http:// or https://; ${usage}`);
  }
  const port = (text, name) => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1 || value > 65535) {
      throw new Error(`invalid ${name} ${JSON.stringify(text)}: expected a TCP port; ${usage}`);
    }
    return value;
  };
  return {
    edge: edgeUrl.origin,
    key,
    allowedPort: port(allowed, "ALLOWED_PORT"),
    disallowedPort: port(disallowed, "DISALLOWED_PORT"),
  };
}

/** Runs `buf generate` in proto/ with this package's plugins first on PATH. */
function generateCode() {
  const result = spawnSync(join(NODE_BIN, "buf"), ["generate"], {
    cwd: join(REPO_ROOT, "proto"),
    env: { ...process.env, PATH: `${NODE_BIN}${delimiter}${process.env.PATH ?? ""}` },
    stdio: ["ignore", "pipe", "pipe"],
    encoding: "utf8",
  });
  if (result.error) {
    throw new Error(`buf generate could not start: ${result.error.message}; run npm ci in ${HERE}`);
  }
  if (result.status !== 0) {
    throw new Error(`buf generate failed with exit status ${result.status}:\n${result.stderr}${result.stdout}`);
  }
}

/** Bundles src/app.ts and the generated code into one browser script. */
async function bundlePage() {
  const result = await esbuild.build({
    entryPoints: [join(HERE, "src", "app.ts")],
    bundle: true,
    write: false,
    format: "iife",
    platform: "browser",
    target: "chrome120",
    sourcemap: "inline",
    // The generated code in proto/gen/ts imports @bufbuild/protobuf, which
    // is installed here rather than in a folder above it.
    nodePaths: [join(HERE, "node_modules")],
    logLevel: "silent",
  });
  return result.outputFiles[0].text;
}

const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>VALORA grpc-web browser test</title>
<script src="/app.js" defer></script>
</head>
<body>
<pre id="status">loading</pre>
</body>
</html>
`;

/** Serves the page and its script on 127.0.0.1:`port`. */
function servePage(port, script) {
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://127.0.0.1").pathname;
    const send = (status, type, body) => {
      response.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      response.end(body);
    };
    if (request.method !== "GET") {
      send(405, "text/plain; charset=utf-8", "only GET is served\n");
    } else if (path === "/") {
      send(200, "text/html; charset=utf-8", PAGE_HTML);
    } else if (path === "/app.js") {
      send(200, "text/javascript; charset=utf-8", script);
    } else if (path === "/favicon.ico") {
      send(204, "image/x-icon", "");
    } else {
      send(404, "text/plain; charset=utf-8", "not found\n");
    }
  });
  return new Promise((resolvePromise, reject) => {
    server.once("error", (error) => reject(new Error(`cannot serve on 127.0.0.1:${port}: ${error.message}`)));
    server.listen(port, "127.0.0.1", () => resolvePromise(server));
  });
}

/** Opens the page on `origin` and records what the browser reports about it. */
async function openPage(context, origin, edge) {
  const page = await context.newPage();
  const seen = { console: [], pageErrors: [], failedRequests: [] };
  page.on("console", (message) => seen.console.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => seen.pageErrors.push(String(error)));
  page.on("requestfailed", (request) => {
    seen.failedRequests.push({
      method: request.method(),
      url: request.url(),
      error: request.failure()?.errorText ?? "",
    });
  });
  await page.goto(`${origin}/?edge=${encodeURIComponent(edge)}`);
  try {
    await page.waitForFunction(() => window.valora !== undefined, undefined, { timeout: 10_000 });
  } catch (error) {
    throw new Error(`the page on ${origin} did not start: ${error.message}\n${JSON.stringify(seen)}`);
  }
  return { page, seen };
}

/** Calls `window.valora[name](...args)` in `page`. */
function call(page, name, ...args) {
  return page.evaluate(([functionName, functionArgs]) => window.valora[functionName](...functionArgs), [name, args]);
}

/**
 * Watches WatchListingEvents while creating listings one at a time. After
 * each creation the runner waits up to EVENT_WAIT_MS for that listing's
 * event, then creates the next one whether the event came or not. A stream
 * that holds its messages back therefore shows up in the JSON as arrival
 * times after the next creation, instead of hanging the run.
 */
async function watchScenario(page, key, nonce) {
  const start = await call(page, "startWatch", key);
  const steps = [];
  for (let index = 0; index < WATCHED_LISTINGS; index += 1) {
    const created = await call(page, "createListing", key, `Watched ${index + 1} ${nonce}`);
    let eventSeen = false;
    if (created.ok) {
      try {
        const handle = await page.waitForFunction(
          (id) => window.valora.watchEvents().events.some((event) => event.listingId === id),
          created.id,
          { timeout: EVENT_WAIT_MS, polling: 10 },
        );
        await handle.dispose();
        eventSeen = true;
      } catch (error) {
        if (error?.name !== "TimeoutError") {
          throw error;
        }
      }
    }
    steps.push({ created, eventSeen });
  }
  const stop = await call(page, "stopWatch");
  return { start, steps, stop };
}

async function runScenarios(context, options) {
  const { edge, key, allowedOrigin, disallowedOrigin } = options;
  const nonce = randomUUID().slice(0, 8);
  const allowed = await openPage(context, allowedOrigin, edge);
  const page = allowed.page;

  const listBefore = await call(page, "listListings", key);
  const create = await call(page, "createListing", key, `Browser listing ${nonce}`);
  const listAfterCreate = await call(page, "listListings", key, nonce);
  const watch = await watchScenario(page, key, nonce);

  const errors = {
    wrongKey: await call(page, "listListings", WRONG_KEY),
    wrongKeySent: WRONG_KEY,
    unknownId: await call(page, "getListing", key, randomUUID()),
    emptyTitle: await call(page, "createListing", key, ""),
  };

  // The same calls from an origin the edge does not allow. The blocked
  // listing's title carries a second nonce, so that a search from the
  // allowed origin shows whether CreateListing reached the marketplace
  // even though the page could not read the response.
  const blockedNonce = randomUUID().slice(0, 8);
  const other = await openPage(context, disallowedOrigin, edge);
  const blockedList = await call(other.page, "listListings", key);
  const blockedCreate = await call(other.page, "createListing", key, `Blocked ${blockedNonce}`);
  const blockedCreateVisible = await call(page, "listListings", key, blockedNonce);

  return {
    edge,
    allowedOrigin,
    disallowedOrigin,
    userAgent: await page.evaluate(() => navigator.userAgent),
    listBefore,
    create,
    listAfterCreate,
    watch,
    errors,
    disallowed: {
      list: blockedList,
      create: blockedCreate,
      createVisibleFromAllowedOrigin: blockedCreateVisible,
      browser: other.seen,
    },
    allowedBrowser: allowed.seen,
  };
}

async function main() {
  const options = parseArguments(process.argv.slice(2));
  const startedAt = Date.now();
  generateCode();
  const script = await bundlePage();

  const allowedOrigin = `http://127.0.0.1:${options.allowedPort}`;
  const disallowedOrigin = `http://127.0.0.1:${options.disallowedPort}`;
  const servers = [];
  const profile = await mkdtemp(join(tmpdir(), "valora-chromium-"));
  let context;
  try {
    servers.push(await servePage(options.allowedPort, script));
    servers.push(await servePage(options.disallowedPort, script));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_FLAGS,
      timeout: 60_000,
    });
    const results = await runScenarios(context, { ...options, allowedOrigin, disallowedOrigin });
    results.durationMs = Date.now() - startedAt;
    process.stdout.write(`${JSON.stringify(results)}\n`);
  } finally {
    await context?.close().catch((error) => process.stderr.write(`closing Chromium failed: ${error.message}\n`));
    for (const server of servers) {
      server.closeAllConnections();
      await new Promise((resolvePromise) => server.close(resolvePromise));
    }
    await rm(profile, { recursive: true, force: true });
  }
}

const watchdog = setTimeout(() => {
  process.stderr.write(`run.mjs: timed out after ${RUN_TIMEOUT_MS} ms\n`);
  process.exit(1);
}, RUN_TIMEOUT_MS);
watchdog.unref();

try {
  await main();
} catch (error) {
  process.stderr.write(`run.mjs: ${error?.stack ?? error}\n`);
  process.exitCode = 1;
}
