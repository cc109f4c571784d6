// What the browser tests share: Debian's /usr/bin/chromium (or CHROMIUM)
// launched by playwright-core, never a downloaded browser; free loopback
// ports; and the example programs they start and stop.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

// root is the repository's root; outDir, where screenshots go.
export const root = fileURLToPath(new URL("../../../../", import.meta.url));
export const outDir = path.join(root, "out");

const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
// Flags for a machine whose network reaches nothing but loopback.
const chromiumArgs = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
];

// launch starts headless Chromium.
export function launch() {
  return chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, timeout: 30_000 });
}

// freePort returns a loopback port nobody listens on now.
export async function freePort() {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

// withoutGomsEnv returns the environment without the runner's GOMS_*
// variables, which the example programs would read as configuration.
export function withoutGomsEnv(extra = {}) {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("GOMS_"))), ...extra };
}

// Program is a started example program whose output is kept for errors.
export class Program {
  constructor(name, cmd, args, env) {
    this.name = name;
    this.log = "";
    this.proc = spawn(cmd, args, { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stdout.on("data", (d) => (this.log += d));
    this.proc.stderr.on("data", (d) => (this.log += d));
  }

  get running() {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  // waitReady waits until url answers 2xx.
  async waitReady(url, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) {
        throw new Error(`${this.name} exited with ${this.proc.exitCode ?? this.proc.signalCode}:\n${this.log}`);
      }
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
        if (res.ok) {
          return;
        }
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`${this.name}: ${url} not ready after ${timeoutMs} ms:\n${this.log}`);
  }

  // stop sends signal and waits for the exit, with SIGKILL after 10 s.
  async stop(signal = "SIGTERM") {
    if (!this.running) {
      return;
    }
    const exited = once(this.proc, "exit");
    this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

// program starts an example: bin (relative to root) when set, else
// `go run ./examples/<example>`.
export function program(name, bin, example, args, env) {
  const [cmd, cmdArgs] = bin ? [path.resolve(root, bin), args] : ["go", ["run", `./examples/${example}`, ...args]];
  return new Program(name, cmd, cmdArgs, env);
}
