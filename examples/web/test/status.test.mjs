// The status page of goms's admin listener in headless Chromium, on the
// edge of examples/distributed: the goms service, two replicas of the
// child service calling it, and an edge that exposes both services, as
// four processes of the example binary (DISTRIBUTED_BIN, or `go run
// ./examples/distributed`) on free loopback ports. The edge's page must
// show both remote services with every endpoint ready; when one replica
// is killed, its endpoint must turn unavailable on the page within 5 s,
// and ready again once the replica is back. Screenshots go to out/
// (out/status.png is the one docs/img/status.png is taken from).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { freePort, launch, outDir, program, withoutGomsEnv } from "./support/browser.mjs";

const pageWait = 10_000;
const configs = "examples/distributed";

let browser;
const programs = new Map();
const ports = {};
let traffic;

// start runs one part of the system, as its YAML file says, on our ports.
async function start(name, config, listener, port, ...set) {
  const args = ["-config", `${configs}/${config}`, "-set", `listeners.${listener}.address=127.0.0.1:${port}`];
  for (const s of set) {
    args.push("-set", s);
  }
  const p = program(name, process.env.DISTRIBUTED_BIN, "distributed", args, withoutGomsEnv());
  programs.set(name, p);
  await p.waitReady(`http://127.0.0.1:${port}/readyz`, 120_000);
  return p;
}

const gomsTarget = () => `remotes.goms.targets=["127.0.0.1:${ports.goms}"]`;
const startReplica = (r) => start(`child replica ${r}`, "child.yaml", "gateway", ports[r], "admin.address=127.0.0.1:0", gomsTarget());

// call makes a Connect JSON call through the edge.
async function call(procedure, body, headers = {}) {
  const res = await fetch(`http://127.0.0.1:${ports.edge}/${procedure}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  return { status: res.status, body: await res.json() };
}

before(async () => {
  await mkdir(outDir, { recursive: true });
  for (const name of ["goms", "a", "b", "edge", "admin"]) {
    ports[name] = await freePort();
  }
  await start("goms", "goms.yaml", "gateway", ports.goms, "admin.address=127.0.0.1:0");
  await Promise.all([startReplica("a"), startReplica("b")]);
  await start("edge", "edge.yaml", "edge", ports.edge, `admin.address=127.0.0.1:${ports.admin}`, gomsTarget(),
    `remotes.child.targets=["127.0.0.1:${ports.a}", "127.0.0.1:${ports.b}"]`);
  browser = await launch();
}, { timeout: 240_000 });

after(async () => {
  clearInterval(traffic);
  await browser?.close();
  await Promise.all([...programs.values()].map((p) => p.stop()));
});

test("the edge's status page follows its remotes' endpoints", { timeout: 90_000 }, async (t) => {
  // Calls through the edge, so that the page has rates and an error.
  const parent = await call("goms.v1.GoMsService/Create", { name: "status-page" });
  assert.equal(parent.status, 200, JSON.stringify(parent.body));
  for (let i = 0; i < 5; i++) {
    const child = await call("child.v1.ChildService/Create", { parentId: parent.body.item.id, name: `child-${i}` });
    assert.equal(child.status, 200, JSON.stringify(child.body));
  }
  const orphan = await call("child.v1.ChildService/Create", { parentId: "00000000000000ff", name: "orphan" },
    { "X-Request-Id": "status-page-test" });
  assert.equal(orphan.body.code, "failed_precondition");
  // Calls every 100 ms while the page is open; some may fail while a
  // replica is down.
  traffic = setInterval(() => {
    call("goms.v1.GoMsService/List", {}).catch(() => {});
    call("child.v1.ChildService/List", {}).catch(() => {});
  }, 100);

  const admin = `http://127.0.0.1:${ports.admin}`;
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(pageWait);
  const problems = [];
  const elsewhere = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => msg.type() === "error" && problems.push(`console: ${msg.text()}`));
  page.on("response", (res) => res.status() >= 400 && problems.push(`${res.status()} for ${res.url()}`));
  page.on("request", (req) => !req.url().startsWith(`${admin}/`) && elsewhere.push(req.url()));
  const endpoint = (remote, port) => page.locator(`.remote[data-remote="${remote}"] .endpoint[data-address="127.0.0.1:${port}"]`);
  const state = (remote, port) => endpoint(remote, port).getAttribute("data-state");
  try {
    await page.goto(`${admin}/`);
    await page.locator("#live.ok").waitFor();
    // Both remote services, every endpoint ready.
    for (const [remote, port] of [["goms", ports.goms], ["child", ports.a], ["child", ports.b]]) {
      await endpoint(remote, port).and(page.locator("[data-state=ready]")).waitFor();
    }
    assert.equal(await page.locator(".remote").count(), 2);
    // The calls made above, with the failed one and its request id.
    await page.locator("#errors td", { hasText: "status-page-test" }).waitFor();
    await page.locator("#services tr.method", { hasText: "List" }).first().waitFor();
    await page.waitForTimeout(1500); // a refresh or two, for the rates
    await page.screenshot({ path: path.join(outDir, "status.png"), fullPage: true });

    // One replica killed: unavailable on the page within 5 s.
    const killed = Date.now();
    await programs.get("child replica b").stop("SIGKILL");
    await endpoint("child", ports.b).and(page.locator(":not([data-state=ready])")).waitFor({ timeout: 5000 });
    const seen = Date.now() - killed;
    t.diagnostic(`the killed replica's endpoint left ready on the page after ${seen} ms: ${await state("child", ports.b)}`);
    assert.equal(await state("child", ports.a), "ready");
    assert.equal(await state("goms", ports.goms), "ready");
    await page.screenshot({ path: path.join(outDir, "status-down.png"), fullPage: true });

    // Back: ready again.
    await startReplica("b");
    await endpoint("child", ports.b).and(page.locator("[data-state=ready]")).waitFor({ timeout: 15_000 });
    assert.equal(await state("child", ports.a), "ready");
    assert.match(await page.locator("#live").textContent(), /^live/);

    assert.deepEqual(elsewhere, [], "requests to other origins");
    assert.deepEqual(problems, []);
  } catch (err) {
    await page.screenshot({ path: path.join(outDir, "status-failed.png"), fullPage: true }).catch(() => {});
    const logs = [...programs.values()].map((p) => `--- ${p.name}:\n${p.log.slice(-2000)}`).join("\n");
    throw new Error(`${err.message}\n${logs}`, { cause: err });
  } finally {
    await context.close();
  }
});
