// The example page in headless Chromium: Debian's /usr/bin/chromium driven
// by playwright-core, never a downloaded browser. The test starts the web
// example (GOMS_WEB_BIN, or `go run ./examples/web`) on two free loopback
// ports: the API listener, which also serves the page, and a second origin
// that serves only the page and calls the API through CORS. Each run
// creates, lists, renames and deletes an item and sees its Watch events,
// once per transport and origin; a last run shows that an origin CORS does
// not allow gets nothing. Screenshots go to out/.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { freePort, launch, outDir, program, root } from "./support/browser.mjs";

// The bearer token Delete needs, in the variable app.TokenEnv names.
const tokenEnv = "EXAMPLE_API_TOKEN";
const token = `browser-test-${process.pid}`;
const pageWait = 10_000; // every wait on the page
const testTimeout = 60_000;

let server;
let browser;
let api; // the API listener's origin, which serves the page too
let pageOrigin; // the other origin, which CORS allows

before(async () => {
  await mkdir(outDir, { recursive: true });
  const [apiPort, pagePort] = [await freePort(), await freePort()];
  api = `http://127.0.0.1:${apiPort}`;
  pageOrigin = `http://127.0.0.1:${pagePort}`;
  const args = ["-addr", `127.0.0.1:${apiPort}`, "-page-addr", `127.0.0.1:${pagePort}`];
  server = program("the web example", process.env.GOMS_WEB_BIN, "web", args, { ...process.env, [tokenEnv]: token });
  // go run may compile first.
  await server.waitReady(`${api}/readyz`, 120_000);
  browser = await launch();
}, { timeout: 180_000 });

after(async () => {
  await browser?.close();
  await server?.stop();
});

// exercise drives one run of the page and saves a screenshot.
async function exercise(t, { name, url, transport, crossOrigin }) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(pageWait);
  page.setDefaultNavigationTimeout(pageWait);
  const problems = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => msg.type() === "error" && problems.push(`console: ${msg.text()}`));
  // The RPCs the page makes, and the CORS answers it gets.
  const calls = [];
  const allowOrigins = new Set();
  page.on("request", (req) => {
    if (req.url().startsWith(`${api}/goms.v1.GoMsService/`)) {
      calls.push({ method: req.method(), path: new URL(req.url()).pathname, type: req.headers()["content-type"] ?? "" });
    }
  });
  page.on("response", (res) => {
    if (res.url().startsWith(`${api}/goms.v1.GoMsService/`)) {
      allowOrigins.add(res.headers()["access-control-allow-origin"] ?? "");
    }
  });
  const shot = path.join(outDir, `web-${name}.png`);
  try {
    await page.goto(url);
    if (transport === "grpcweb") {
      await page.getByLabel("gRPC-Web").check();
    }
    // Live: the server has subscribed the page's watcher.
    await page.locator(`#watch[data-state=live][data-transport=${transport}]`).waitFor();
    calls.length = 0; // from here on, only the chosen transport
    await page.fill("#token", token);

    const item = `browser-${name}-${Date.now()}`;
    await page.fill("#name", item);
    await page.getByRole("button", { name: "Create" }).click();
    const row = page.locator(`#items tr[data-name="${item}"]`);
    await row.waitFor();
    const id = await row.getAttribute("data-id");
    assert.match(id, /^[0-9a-f]{16}$/);
    await page.locator(`#events li[data-type=CREATED][data-id="${id}"]`).waitFor();

    await row.locator("input.rename").fill(`${item}-renamed`);
    await row.getByRole("button", { name: "Rename" }).click();
    const renamed = page.locator(`#items tr[data-id="${id}"][data-name="${item}-renamed"]`);
    await renamed.waitFor();
    await page.locator(`#events li[data-type=UPDATED][data-id="${id}"]`).waitFor();
    await page.screenshot({ path: shot, fullPage: true });

    await renamed.getByRole("button", { name: "Delete" }).click();
    await page.locator(`#items tr[data-id="${id}"]`).waitFor({ state: "detached" });
    await page.locator(`#events li[data-type=DELETED][data-id="${id}"]`).waitFor();
    assert.equal(await page.textContent("#error"), "");
  } catch (err) {
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    throw new Error(`${err.message}\nscreenshot: ${shot}\nserver log (tail):\n${server.log.slice(-4000)}`, { cause: err });
  } finally {
    await context.close();
  }
  t.diagnostic(`screenshot: ${path.relative(root, shot)}`);

  // The page spoke the transport it was switched to.
  const posts = calls.filter((c) => c.method === "POST");
  assert.ok(posts.some((c) => c.path.endsWith("/Create")), `no Create call among ${JSON.stringify(calls)}`);
  // Connect: JSON for unary calls, enveloped JSON for streams.
  const want = transport === "grpcweb" ? /^application\/grpc-web\+proto/ : /^application\/(connect\+)?json/;
  for (const c of posts) {
    assert.match(c.type, want, `${c.path} sent as ${c.type}`);
  }
  if (transport === "connect") {
    assert.ok(calls.some((c) => c.method === "GET" && c.path.endsWith("/List")), "List was not a Connect GET");
  } else {
    assert.ok(calls.every((c) => c.method === "POST"), "gRPC-Web calls are POSTs");
  }
  // Same origin needs no CORS; the other origin gets it for itself.
  assert.deepEqual([...allowOrigins], [crossOrigin ? pageOrigin : ""]);
  assert.deepEqual(problems, []);
}

for (const transport of ["connect", "grpcweb"]) {
  test(`${transport}, page on the API's origin`, { timeout: testTimeout }, async (t) => {
    await exercise(t, { name: transport, url: `${api}/web`, transport, crossOrigin: false });
  });
  test(`${transport}, page on another origin (CORS)`, { timeout: testTimeout }, async (t) => {
    // The page listener redirects to /web?api=<the API listener>.
    await exercise(t, { name: `${transport}-cross-origin`, url: `${pageOrigin}/web`, transport, crossOrigin: true });
  });
}

test("an origin CORS does not allow gets nothing", { timeout: testTimeout }, async (t) => {
  // The page as a third origin would serve it, intercepted in the browser:
  // no traffic leaves loopback, and none reaches that port.
  const stranger = `http://127.0.0.1:${await freePort()}`;
  const html = await readFile(path.join(root, "examples/web/index.html"));
  const bundle = await readFile(path.join(root, "examples/web/dist/app.js"));
  const context = await browser.newContext();
  await context.route(`${stranger}/**`, (route) => {
    const { pathname } = new URL(route.request().url());
    if (pathname === "/web/app.js") {
      return route.fulfill({ body: bundle, contentType: "text/javascript" });
    }
    return route.fulfill({ body: html, contentType: "text/html" });
  });
  const page = await context.newPage();
  page.setDefaultTimeout(pageWait);
  const shot = path.join(outDir, "web-disallowed-origin.png");
  const item = `browser-stranger-${Date.now()}`;
  try {
    await page.goto(`${stranger}/web?api=${encodeURIComponent(api)}`);
    await page.locator("#watch[data-state=error]").waitFor();
    await page.fill("#name", item);
    await page.getByRole("button", { name: "Create" }).click();
    await page.locator("#error", { hasText: /\S/ }).waitFor();
    await page.screenshot({ path: shot, fullPage: true });
  } finally {
    await context.close();
  }
  t.diagnostic(`screenshot: ${path.relative(root, shot)}`);
  // The preflight got no CORS headers, so the browser never sent Create.
  const res = await fetch(`${api}/goms?page_size=1000`, { signal: AbortSignal.timeout(pageWait) });
  assert.equal(res.status, 200);
  assert.ok(!(await res.text()).includes(item), "the disallowed origin created an item");
});
