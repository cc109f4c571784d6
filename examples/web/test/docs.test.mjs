// The /docs page of the gateway example in headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core): Swagger UI, bundled into
// goms, over the http listener's /openapi.json. The test starts the
// gateway example (GATEWAY_BIN, or `go run ./examples/gateway`) on
// free loopback ports, checks that the page lists the example's
// operations and loads nothing from elsewhere, and creates an item with
// "Try it out". A screenshot goes to out/.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { freePort, launch, outDir, program, withoutGomsEnv } from "./support/browser.mjs";

const pageWait = 15_000;

let server;
let browser;
let api;

before(async () => {
  await mkdir(outDir, { recursive: true });
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  api = `http://127.0.0.1:${httpPort}`;
  const args = ["-http-port", `${httpPort}`, "-grpc-port", `${grpcPort}`, "-set", "admin.address=127.0.0.1:0"];
  // The example reads GOMS_* variables as configuration: pass it none of
  // the runner's (GOMS_WEB_BIN, say).
  server = program("the gateway example", process.env.GATEWAY_BIN, "gateway", args, withoutGomsEnv());
  // go run may compile first.
  await server.waitReady(`${api}/readyz`, 120_000);
  browser = await launch();
}, { timeout: 180_000 });

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("the docs page lists the example's operations and creates an item", { timeout: 60_000 }, async () => {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(pageWait);
  const problems = [];
  const elsewhere = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => msg.type() === "error" && problems.push(`console: ${msg.text()}`));
  page.on("response", (res) => res.status() >= 400 && problems.push(`${res.status()} for ${res.url()}`));
  page.on("request", (req) => {
    const url = req.url();
    if (!url.startsWith(`${api}/`) && !url.startsWith("data:")) {
      elsewhere.push(url);
    }
  });
  try {
    await page.goto(`${api}/docs`);
    // Every operation of the document: Connect procedures and REST routes.
    const spec = await (await fetch(`${api}/openapi.json`)).json();
    const want = [];
    for (const [p, ops] of Object.entries(spec.paths)) {
      for (const method of Object.keys(ops)) {
        want.push(`${method.toUpperCase()} ${p}`);
      }
    }
    assert.ok(want.includes("POST /goms.v1.GoMsService/Create"), want.join(", "));
    assert.ok(want.includes("GET /goms/{id}"), want.join(", "));
    await page.locator(".opblock").nth(want.length - 1).waitFor();
    const shown = await page.locator(".opblock").evaluateAll((blocks) =>
      blocks.map((b) => `${b.querySelector(".opblock-summary-method").textContent.trim()} ${b.querySelector(".opblock-summary-path").getAttribute("data-path")}`));
    assert.deepEqual([...shown].sort(), [...want].sort());

    // Try it out: Connect JSON Create, from the page.
    const create = page.locator(".opblock-post").filter({ has: page.locator('[data-path="/goms.v1.GoMsService/Create"]') });
    await create.locator(".opblock-summary").click();
    const name = `from-docs-${process.pid}`;
    const body = create.locator("textarea.body-param__text");
    await body.fill(JSON.stringify({ name }));
    const answered = page.waitForResponse((res) => res.url() === `${api}/goms.v1.GoMsService/Create`);
    await create.locator("button.execute").click();
    const res = await answered;
    assert.equal(res.status(), 200, await res.text());
    const item = (await res.json()).item;
    assert.equal(item.name, name);
    assert.match(item.id, /^[0-9a-f]{16}$/);
    // The page shows the answer.
    await create.locator(".live-responses-table .response-col_status").filter({ hasText: "200" }).first().waitFor();
    await create.locator(".live-responses-table").getByText(item.id).first().waitFor();
    assert.deepEqual(elsewhere, [], "requests to other origins");
    assert.deepEqual(problems, []);
  } finally {
    await page.screenshot({ path: path.join(outDir, "docs.png"), fullPage: false });
    await context.close();
  }
});
