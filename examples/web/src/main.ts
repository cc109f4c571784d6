// The goms example page: lists, creates, renames and deletes goms.v1
// items and shows the Watch stream live, over Connect or gRPC-Web.
//
// Query parameters: api, the base URL of the goms listener to call (the
// page's own origin by default; another origin needs CORS), and transport,
// "connect" (the default) or "grpcweb".
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { ChangeType, GoMsService, type Item } from "./gen/goms/v1/goms_pb";

type TransportName = "connect" | "grpcweb";

function element<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) {
    throw new Error(`no #${id} in the page`);
  }
  return el as T;
}

const params = new URLSearchParams(location.search);
const api = params.get("api") ?? location.origin;
const ui = {
  api: element<HTMLElement>("api"),
  watch: element<HTMLElement>("watch"),
  create: element<HTMLFormElement>("create"),
  name: element<HTMLInputElement>("name"),
  token: element<HTMLInputElement>("token"),
  error: element<HTMLElement>("error"),
  items: element<HTMLElement>("items"),
  events: element<HTMLElement>("events"),
  transport: element<HTMLFieldSetElement>("transport"),
};

// Delete needs the bearer token the server was started with.
const bearer: Interceptor = (next) => (req) => {
  const token = ui.token.value.trim();
  if (token !== "") {
    req.header.set("Authorization", `Bearer ${token}`);
  }
  return next(req);
};

function newClient(name: TransportName): Client<typeof GoMsService> {
  const transport =
    name === "grpcweb"
      ? createGrpcWebTransport({ baseUrl: api, interceptors: [bearer] })
      : // JSON, and GET for List and Get: what curl would send.
        createConnectTransport({ baseUrl: api, interceptors: [bearer], useHttpGet: true });
  return createClient(GoMsService, transport);
}

let transport: TransportName = params.get("transport") === "grpcweb" ? "grpcweb" : "connect";
let client = newClient(transport);

function showError(err: unknown): void {
  const e = ConnectError.from(err);
  ui.error.textContent = `${Code[e.code]}: ${e.rawMessage}`;
}

// run calls fn, shows its error if it fails, and refreshes the list.
async function run(fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
    ui.error.textContent = "";
  } catch (err) {
    showError(err);
  }
  await refresh();
}

async function refresh(): Promise<void> {
  let items: Item[];
  try {
    items = (await client.list({ pageSize: 1000 })).items;
  } catch (err) {
    showError(err);
    return;
  }
  ui.items.replaceChildren(...items.map(row));
}

function row(item: Item): HTMLTableRowElement {
  const tr = document.createElement("tr");
  tr.dataset.id = item.id;
  tr.dataset.name = item.name;
  const name = document.createElement("td");
  name.textContent = item.name;
  const id = document.createElement("td");
  id.append(Object.assign(document.createElement("code"), { textContent: item.id }));
  const rename = document.createElement("td");
  const input = Object.assign(document.createElement("input"), { type: "text", value: item.name, className: "rename" });
  input.setAttribute("aria-label", `New name of ${item.name}`);
  const renameButton = Object.assign(document.createElement("button"), { type: "button", textContent: "Rename" });
  renameButton.addEventListener("click", () => run(() => client.update({ id: item.id, name: input.value })));
  rename.append(input, " ", renameButton);
  const remove = document.createElement("td");
  const deleteButton = Object.assign(document.createElement("button"), { type: "button", textContent: "Delete" });
  deleteButton.addEventListener("click", () => run(() => client.delete({ id: item.id })));
  remove.append(deleteButton);
  tr.append(name, id, rename, remove);
  return tr;
}

function setWatch(state: string, text: string): void {
  ui.watch.dataset.state = state;
  ui.watch.dataset.transport = transport;
  ui.watch.textContent = text;
}

let stopWatch = new AbortController();

// watch follows the Watch stream until the transport changes, and
// reconnects a second after it fails.
async function watch(): Promise<void> {
  stopWatch.abort();
  const stop = new AbortController();
  stopWatch = stop;
  setWatch("connecting", `connecting (${transport})`);
  try {
    const stream = client.watch(
      {},
      // The server sends the headers once it has subscribed us: from then
      // on no change is missed.
      { signal: stop.signal, onHeader: () => setWatch("live", `live (${transport})`) },
    );
    for await (const res of stream) {
      if (res.item !== undefined) {
        addEvent(res.type, res.item);
      }
      await refresh();
    }
  } catch (err) {
    if (stop.signal.aborted) {
      return;
    }
    setWatch("error", `${ConnectError.from(err).message}; reconnecting`);
  }
  if (!stop.signal.aborted) {
    setTimeout(() => stop.signal.aborted || void watch(), 1000);
  }
}

function addEvent(type: ChangeType, item: Item): void {
  const li = document.createElement("li");
  const name = ChangeType[type].replace(/^CHANGE_TYPE_/, "");
  li.dataset.type = name;
  li.dataset.id = item.id;
  li.dataset.name = item.name;
  li.textContent = `${new Date().toLocaleTimeString()} ${name} ${item.name} (${item.id}) via ${transport}`;
  ui.events.prepend(li);
}

function useTransport(name: TransportName): void {
  transport = name;
  client = newClient(name);
  for (const input of ui.transport.querySelectorAll<HTMLInputElement>("input[name=transport]")) {
    input.checked = input.value === name;
  }
  void watch();
  void refresh();
}

ui.api.textContent = api;
ui.transport.addEventListener("change", (ev) => {
  const value = (ev.target as HTMLInputElement).value;
  useTransport(value === "grpcweb" ? "grpcweb" : "connect");
});
ui.create.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = ui.name.value;
  void run(async () => {
    await client.create({ name });
    ui.name.value = "";
  });
});
useTransport(transport);
