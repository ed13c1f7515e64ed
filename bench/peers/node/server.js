// Reference socket.io server with the Deploy Console handler shape, storing nothing.
//
// The Node.js peer of the benchmarks (bench/README.md): the same events,
// acknowledgements, rooms and HTTP endpoints as the Python server, state kept in
// Maps. Started by bench/procs.py as
//   node --expose-gc server.js  (PORT, ENROLLMENT_TOKEN, ADMIN_TOKEN, PACKAGE_FILE
//                                from the env)
// and prints "listening <port>" once bound. `POST /bench/gc` (admin token) runs a
// full garbage collection before the benchmarks read the resident memory: V8
// collects and compacts its heap whenever it likes, so without it the RSS
// difference across a registration storm can even come out negative.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const { Server } = require("socket.io");

const PORT = Number(process.env.PORT || 0);
const ENROLLMENT_TOKEN = process.env.ENROLLMENT_TOKEN || "";
const ADMIN_TOKEN = process.env.ADMIN_TOKEN || "";
const PACKAGE_FILE = process.env.PACKAGE_FILE || "";
const CONSOLES = "consoles";
const TERMINAL = new Set(["success", "failed", "cancelled"]);
const AGENT_STATUSES = new Set([
  "in_progress", "downloading", "installing", "completed", "failed",
]);
const ID_PATTERN = /^[\w.:-]{1,128}$/;

const devices = new Map(); // agent_id -> device
const deployments = new Map(); // id -> deployment
const software = [];

if (PACKAGE_FILE) {
  const data = fs.readFileSync(PACKAGE_FILE);
  software.push({
    id: 1,
    name: path.parse(PACKAGE_FILE).name,
    version: "1.0",
    file_name: path.basename(PACKAGE_FILE),
    sha256: crypto.createHash("sha256").update(data).digest("hex"),
    size: data.length,
    installer_type: "script",
  });
}

const ok = (fields = {}) => ({ ok: true, ...fields });
const refuse = (error) => ({ ok: false, error });
const isPositiveInt = (v) => Number.isInteger(v) && v >= 1;

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(text);
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}"));
      } catch (err) {
        reject(err);
      }
    });
    req.on("error", reject);
  });
}

function deploymentJson(d) {
  return { id: d.id, status: d.status, targets: [...d.targets.values()] };
}

function servePackage(req, res, sha) {
  if (req.headers.authorization !== `Bearer ${ENROLLMENT_TOKEN}`) {
    return sendJson(res, 401, { error: "enrollment token required" });
  }
  const item = software.find((s) => s.sha256 === sha);
  if (!item) return sendJson(res, 404, { error: "no such package" });
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range || "");
  let start = 0;
  let end = item.size - 1;
  let status = 200;
  if (range) {
    start = Number(range[1]);
    end = range[2] ? Math.min(Number(range[2]), end) : end;
    status = 206;
  }
  const headers = {
    "Content-Type": "application/octet-stream",
    "Content-Length": end - start + 1,
    "Accept-Ranges": "bytes",
  };
  if (status === 206) headers["Content-Range"] = `bytes ${start}-${end}/${item.size}`;
  res.writeHead(status, headers);
  fs.createReadStream(PACKAGE_FILE, { start, end }).pipe(res);
}

function collectGarbage(res) {
  if (typeof global.gc !== "function") {
    return sendJson(res, 501, { error: "start node with --expose-gc" });
  }
  global.gc(); // full, synchronous mark-compact of the whole heap
  const { rss, heapUsed } = process.memoryUsage();
  return sendJson(res, 200, { ok: true, rss, heap_used: heapUsed });
}

async function handleHttp(req, res) {
  const url = new URL(req.url, "http://127.0.0.1");
  const packageMatch = /^\/packages\/([0-9a-f]{64})$/.exec(url.pathname);
  if (req.method === "GET" && packageMatch) return servePackage(req, res, packageMatch[1]);
  const isAdmin = req.headers.authorization === `Bearer ${ADMIN_TOKEN}`;
  if (req.method === "POST" && url.pathname === "/bench/gc") {
    if (!isAdmin) return sendJson(res, 401, { error: "admin token required" });
    return collectGarbage(res);
  }
  if (!url.pathname.startsWith("/api/")) return sendJson(res, 404, { error: "not found" });
  if (!isAdmin) return sendJson(res, 401, { error: "admin token required" });
  if (req.method === "GET" && url.pathname === "/api/devices") {
    return sendJson(res, 200, [...devices.values()].map(({ sid, ...row }) => row));
  }
  if (req.method === "GET" && url.pathname === "/api/software") {
    return sendJson(res, 200, software);
  }
  if (req.method === "POST" && url.pathname === "/api/deployments") {
    let body;
    try {
      body = await readJson(req);
    } catch {
      return sendJson(res, 400, { error: "body must be JSON" });
    }
    return sendJson(res, 201, createDeployment(body));
  }
  const one = /^\/api\/deployments\/(\d+)$/.exec(url.pathname);
  if (req.method === "GET" && one) {
    const d = deployments.get(Number(one[1]));
    return d ? sendJson(res, 200, deploymentJson(d)) : sendJson(res, 404, { error: "no such deployment" });
  }
  return sendJson(res, 404, { error: "not found" });
}

const httpServer = http.createServer((req, res) => {
  handleHttp(req, res).catch((err) => sendJson(res, 500, { error: String(err) }));
});
const io = new Server(httpServer, { serveClient: false, cors: { origin: false } });

function createDeployment(body) {
  const items = software
    .filter((s) => (body.software_ids || []).includes(s.id))
    .map((s) => ({
      software_id: s.id, name: s.name, version: s.version, file_name: s.file_name,
      url: `/packages/${s.sha256}`, sha256: s.sha256, size: s.size,
      installer_type: s.installer_type, install_args: "", timeout_s: 600,
    }));
  const id = deployments.size + 1;
  const targets = new Map();
  for (const deviceId of body.device_ids || []) {
    targets.set(deviceId, { device_id: deviceId, status: "pending", progress_percent: 0 });
  }
  const deployment = { id, status: "in_progress", targets, done: 0 };
  deployments.set(id, deployment);
  const byId = new Map([...devices.values()].map((d) => [d.id, d]));
  for (const deviceId of targets.keys()) {
    const device = byId.get(deviceId);
    if (!device) continue;
    io.to(device.agent_id).emit("install_software", {
      deployment_id: id, device_id: deviceId, software_list: items,
    });
  }
  return deploymentJson(deployment);
}

function targetStatusFor(status, failed) {
  if (status === "completed") return failed > 0 ? "failed" : "success";
  if (status === "failed") return "failed";
  return "in_progress";
}

io.use((socket, next) => {
  const { role, token } = socket.handshake.auth || {};
  if (role === "agent" && token === ENROLLMENT_TOKEN) return next();
  if (role === "console" && token === ADMIN_TOKEN) {
    socket.join(CONSOLES);
    return next();
  }
  return next(new Error("bad role or token"));
});

io.on("connection", (socket) => {
  let agentId = null;

  socket.on("agent_register", (data, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    if (!data || !ID_PATTERN.test(data.agent_id) || !data.hostname ||
        !["windows", "linux", "macos"].includes(data.platform)) {
      return reply(refuse("AgentRegister: invalid payload"));
    }
    if (agentId !== null && agentId !== data.agent_id) {
      return reply(refuse("this connection is registered as another agent"));
    }
    let device = devices.get(data.agent_id);
    if (!device) {
      device = { id: devices.size + 1, agent_id: data.agent_id };
      devices.set(data.agent_id, device);
    }
    Object.assign(device, { hostname: data.hostname, online: true, last_seen: Date.now() / 1000 });
    agentId = data.agent_id;
    socket.join(agentId);
    const answer = ok({ agent_id: agentId, device_id: device.id, room: agentId });
    socket.emit("registration_success", answer);
    io.to(CONSOLES).emit("device_update", {
      device_id: device.id, agent_id: agentId, hostname: data.hostname, online: true,
    });
    reply(answer);
  });

  socket.on("software_installation_status", (data, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    if (!data || !isPositiveInt(data.deployment_id) || !isPositiveInt(data.device_id) ||
        !AGENT_STATUSES.has(data.status) || typeof (data.progress ?? 0) !== "number") {
      return reply(refuse("InstallationStatus: invalid payload"));
    }
    const deployment = deployments.get(data.deployment_id);
    const target = deployment && deployment.targets.get(data.device_id);
    if (!target) return reply(refuse("no such target"));
    const device = agentId !== null ? devices.get(agentId) : null;
    if (!device || device.id !== data.device_id) return reply(refuse("not your target"));
    if (TERMINAL.has(target.status)) return reply(ok());
    target.status = targetStatusFor(data.status, data.failed || 0);
    target.progress_percent = Math.max(target.progress_percent, data.progress || 0);
    io.to(CONSOLES).emit("software_deployment_update", {
      deployment_id: data.deployment_id, device_id: data.device_id,
      status: target.status, progress: target.progress_percent, message: data.message ?? null,
    });
    if (TERMINAL.has(target.status)) {
      deployment.done += 1;
      if (deployment.done >= deployment.targets.size) {
        const failed = [...deployment.targets.values()].some((t) => t.status === "failed");
        deployment.status = failed ? "failed" : "completed";
        io.to(CONSOLES).emit("deployment_update", {
          deployment_id: deployment.id, status: deployment.status, progress: 100, counts: {},
        });
      }
    }
    reply(ok());
  });

  socket.on("software_download_progress", (data, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    if (!data || !isPositiveInt(data.deployment_id) || !isPositiveInt(data.device_id)) {
      return reply(refuse("DownloadProgress: invalid payload"));
    }
    reply(ok());
  });

  socket.on("disconnect", () => {
    const device = agentId !== null ? devices.get(agentId) : null;
    if (device) device.online = false;
  });
});

httpServer.listen(PORT, "127.0.0.1", () => {
  console.log(`listening ${httpServer.address().port}`);
});

process.on("SIGTERM", () => {
  io.close();
  httpServer.close(() => process.exit(0));
});
