// Fleet worker on Node.js: many simulated agents, each a socket.io-client connection.
//
// The twin of `python -m bench.fleet --worker` (bench/fleet.py): the same JSON-line
// commands on stdin (configure, connect, stats, stop), the same answers on stdout,
// the same counters and job records, and the same agent behaviour on the wire
// (DESIGN.md): register with an acknowledgement, take `install_software`, download
// each package for real (Bearer token, Range resume, sha256 checked) unless told to
// skip it, report `installing` 50..99 % at report_hz for install_seconds, then
// `completed`. Started by bench/fleet.py's Fleet(client="node") as
//   node fleet_worker.js
// with NODE_PATH naming the node_modules that hold socket.io-client when they are
// not beside this file.
//
// Times are CLOCK_MONOTONIC seconds, the clock of Python's time.monotonic() on
// Linux (process.hrtime.bigint() reads it through libuv's uv_hrtime), so the
// controller can compare them with its own (Fleet.start checks it, and so does
// tests/bench/test_fleet_simulator.py). It exists because on two shared cores every
// CPU second the simulated agents spend is taken from the server under test, and
// these clients spend about half of what python-socketio's do per status report.
"use strict";

const crypto = require("node:crypto");
const readline = require("node:readline");
const { setTimeout: sleep } = require("node:timers/promises");
const { io } = require("socket.io-client");

const AGENT_VERSION = "bench-fleet/1";
const DOWNLOAD_ATTEMPTS = 3;
const AGENT_REGISTER = "agent_register";
const INSTALL_SOFTWARE = "install_software";
const CANCEL_DEPLOYMENT = "cancel_deployment";
const SOFTWARE_INSTALLATION_STATUS = "software_installation_status";
const SOFTWARE_DOWNLOAD_PROGRESS = "software_download_progress";
const SHA256 = /^[0-9a-f]{64}$/;

const COUNTERS = [
  "jobs",
  "bad_jobs",
  "job_errors",
  "reports_sent",
  "reports_acked",
  "reports_refused",
  "download_resumes",
  "bytes_downloaded",
];

// FleetOptions of bench/fleet.py, with its defaults; the controller sends them all.
const DEFAULT_OPTIONS = {
  server: "",
  token: "",
  install_seconds: 1.0,
  report_hz: 2.0,
  skip_download: false,
  transports: ["websocket"],
  connect_timeout: 60.0,
  connect_concurrency: 250,
  report_acks: true,
};

/** Seconds on CLOCK_MONOTONIC as a double, as Python's time.monotonic() makes them. */
function monotonic() {
  return Number(process.hrtime.bigint()) / 1e9;
}

/** Python's round(x, 2) for the progress figures (ties may differ in the last bit). */
function round2(value) {
  return Math.round(value * 100) / 100;
}

/** A job step failed for a reason worth reporting (Python's _DownloadError). */
class JobError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

const isPositiveInt = (v) => Number.isInteger(v) && v >= 1;

/** The parts of install_software this agent uses, or a reason it cannot be run. */
function checkJob(data) {
  if (!data || typeof data !== "object") return "payload is not an object";
  if (!isPositiveInt(data.deployment_id)) return "deployment_id: positive integer";
  if (!isPositiveInt(data.device_id)) return "device_id: positive integer";
  const list = data.software_list;
  if (!Array.isArray(list) || list.length < 1 || list.length > 100) {
    return "software_list: 1 to 100 items";
  }
  for (const item of list) {
    if (!item || typeof item.url !== "string" || typeof item.name !== "string" ||
        !SHA256.test(item.sha256) || !Number.isInteger(item.size) || item.size < 0) {
      return "software_list: item without url, name, sha256 or size";
    }
  }
  return null;
}

/** A counting semaphore: at most `limit` handshakes in flight. */
class Gate {
  constructor(limit) {
    this.free = Math.max(1, limit);
    this.waiting = [];
  }

  async run(fn) {
    if (this.free > 0) {
      this.free -= 1;
    } else {
      await new Promise((resolve) => this.waiting.push(resolve));
    }
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free += 1;
    }
  }
}

/** One simulated device: a socket.io-client connection plus the jobs it runs. */
class SimAgent {
  constructor(agentId, worker) {
    this.agentId = agentId;
    this.deviceId = null;
    this.worker = worker;
    this.jobs = new Map(); // deployment_id -> AbortController
    this.socket = null;
  }

  get options() {
    return this.worker.options;
  }

  get counters() {
    return this.worker.counters;
  }

  registerPayload() {
    return {
      agent_id: this.agentId,
      hostname: `sim-${this.agentId}`,
      platform: "windows",
      os_version: "10.0.19045",
      agent_version: AGENT_VERSION,
      ip: "127.0.0.1",
    };
  }

  /** Connect, register and wait for the acknowledgement; never throws. */
  async connectAndRegister() {
    const options = this.options;
    const result = { agent_id: this.agentId, ok: false, t_start: monotonic() };
    const timeoutMs = options.connect_timeout * 1000;
    const socket = io(options.server, {
      transports: [...options.transports],
      auth: { role: "agent", token: options.token },
      reconnection: false,
      forceNew: true, // one connection per agent, never a shared Manager
      timeout: timeoutMs,
      perMessageDeflate: false, // python-socketio's client offers no compression
    });
    this.socket = socket;
    socket.on(INSTALL_SOFTWARE, (data) => this.onInstallSoftware(data));
    socket.on(CANCEL_DEPLOYMENT, (data) => this.onCancelDeployment(data));
    try {
      await new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", (err) =>
          reject(new JobError("ConnectionError", err.message)));
      });
      result.t_connected = monotonic();
      const ack = await socket
        .timeout(timeoutMs)
        .emitWithAck(AGENT_REGISTER, this.registerPayload());
      result.t_registered = monotonic();
      if (!ack || typeof ack !== "object" || !ack.ok) {
        result.error = `registration refused: ${JSON.stringify(ack)}`.slice(0, 300);
        return result;
      }
      this.deviceId = ack.device_id ?? null;
      Object.assign(result, { ok: true, device_id: this.deviceId, room: ack.room });
    } catch (err) {
      result.error = describe(err);
    }
    return result;
  }

  close() {
    for (const controller of this.jobs.values()) controller.abort();
    if (this.socket) this.socket.disconnect();
  }

  onInstallSoftware(data) {
    const received = monotonic();
    const problem = checkJob(data);
    if (problem) {
      this.counters.bad_jobs += 1;
      console.error(`bad install_software for ${this.agentId}: ${problem}`);
      return;
    }
    const record = {
      agent_id: this.agentId,
      deployment_id: data.deployment_id,
      device_id: data.device_id,
      t_received: received,
      urls: data.software_list.map((item) => item.url),
    };
    this.worker.jobs.push(record);
    this.counters.jobs += 1;
    if (this.jobs.has(data.deployment_id)) return;
    const controller = new AbortController();
    this.jobs.set(data.deployment_id, controller);
    this.runJob(data, record, controller.signal).finally(() => {
      this.jobs.delete(data.deployment_id);
    });
  }

  onCancelDeployment(data) {
    const controller = data && this.jobs.get(data.deployment_id);
    if (controller) controller.abort();
  }

  async runJob(job, record, signal) {
    const options = this.options;
    const base = { deployment_id: job.deployment_id, device_id: job.device_id };
    try {
      this.report(base, "in_progress", 0);
      if (!options.skip_download) {
        const count = job.software_list.length;
        for (const [index, item] of job.software_list.entries()) {
          await this.download(base, item, index, count, signal);
        }
      }
      record.t_downloaded = monotonic();
      await this.pretendInstall(base, signal);
      this.ensureConnected();
      const ack = await this.socket
        .timeout(options.connect_timeout * 1000)
        .emitWithAck(SOFTWARE_INSTALLATION_STATUS, {
          ...base,
          status: "completed",
          progress: 100,
          completed: job.software_list.length,
          failed: 0,
          exit_code: 0,
          reboot_required: false,
          message: "installed (simulated)",
        });
      this.countAck(ack);
      record.t_completed = monotonic();
      record.completed_ack = ack;
    } catch (err) {
      if (signal.aborted) {
        record.cancelled = true;
        return;
      }
      record.error = describe(err).slice(0, 300);
      this.counters.job_errors += 1;
      if (!(err instanceof JobError) && !isTransportError(err)) {
        console.error(`job ${job.deployment_id} of ${this.agentId} broke:`, err);
      }
      if (this.socket.connected) {
        this.socket.emit(SOFTWARE_INSTALLATION_STATUS, {
          ...base, status: "failed", progress: 0, message: record.error,
        });
      }
    }
  }

  /** Python's emit on a closed connection raises; buffering it here would hide that. */
  ensureConnected() {
    if (!this.socket.connected) {
      throw new JobError("BadNamespaceError", "/ is not a connected namespace.");
    }
  }

  report(base, status, progress, event = SOFTWARE_INSTALLATION_STATUS, extra = {}) {
    this.ensureConnected();
    const payload = { ...base, ...extra, progress: round2(progress) };
    if (event === SOFTWARE_INSTALLATION_STATUS) payload.status = status;
    this.counters.reports_sent += 1;
    if (this.options.report_acks) {
      this.socket.emit(event, payload, (ack) => this.countAck(ack));
    } else {
      this.socket.emit(event, payload);
    }
  }

  countAck(ack) {
    if (ack && typeof ack === "object" && ack.ok === false) {
      this.counters.reports_refused += 1;
      if (this.counters.reports_refused <= 3) {
        console.error(`report refused for ${this.agentId}: ${JSON.stringify(ack)}`);
      }
    } else {
      this.counters.reports_acked += 1;
    }
  }

  /**
   * Report `installing` from 50 to 99 % at report_hz for install_seconds, the
   * ticks starting at a random phase within the first interval (agents that took
   * their jobs in the same instant would otherwise report in lockstep bursts).
   */
  async pretendInstall(base, signal) {
    const seconds = this.options.install_seconds;
    const hz = this.options.report_hz;
    if (seconds <= 0) return;
    const ticks = hz > 0 ? Math.max(1, Math.trunc(seconds * hz)) : 1;
    const interval = seconds / ticks;
    const start = monotonic() + Math.random() * interval - interval;
    for (let tick = 1; tick <= ticks; tick += 1) {
      const delay = start + tick * interval - monotonic();
      if (delay > 0) await sleep(delay * 1000, undefined, { signal });
      if (hz > 0) this.report(base, "installing", 50 + (49 * tick) / ticks);
    }
  }

  /** Fetch one package, resuming with Range after a broken transfer. */
  async download(base, item, index, count, signal) {
    const url = new URL(item.url, this.options.server).href;
    const hz = this.options.report_hz;
    const interval = hz > 0 ? 1 / hz : 1.0;
    let digest = crypto.createHash("sha256");
    let received = 0;
    let lastReport = 0;
    let done = false;
    for (let attempt = 0; attempt < DOWNLOAD_ATTEMPTS && !done; attempt += 1) {
      const headers = { Authorization: `Bearer ${this.options.token}` };
      if (received) headers.Range = `bytes=${received}-`;
      try {
        const response = await fetch(url, { headers, signal });
        if (response.status !== 200 && response.status !== 206) {
          await response.body?.cancel();
          throw new JobError(
            "_DownloadError", `HTTP ${response.status} for ${item.url}`);
        }
        if (received && response.status === 200) {
          digest = crypto.createHash("sha256"); // Range ignored: start over
          received = 0;
        }
        for await (const chunk of response.body) {
          digest.update(chunk);
          received += chunk.length;
          const now = monotonic();
          if (now - lastReport >= interval) {
            lastReport = now;
            this.reportDownload(base, item, received, index, count);
          }
        }
        done = true;
      } catch (err) {
        if (err instanceof JobError || signal.aborted) throw err;
        this.counters.download_resumes += 1; // the transfer broke: resume it
      }
    }
    if (!done) {
      throw new JobError(
        "_DownloadError", `download of ${item.url} failed ${DOWNLOAD_ATTEMPTS}x`);
    }
    if (received !== item.size || digest.digest("hex") !== item.sha256) {
      throw new JobError(
        "_DownloadError", `${item.file_name}: size or sha256 mismatch`);
    }
    this.counters.bytes_downloaded += received;
  }

  reportDownload(base, item, received, index, count) {
    const fraction = item.size ? received / item.size : 1.0;
    const extra = { software_name: item.name };
    this.report(base, "downloading", (50 * (index + fraction)) / count,
      SOFTWARE_INSTALLATION_STATUS, extra);
    this.report(base, "downloading", 100 * fraction, SOFTWARE_DOWNLOAD_PROGRESS, extra);
  }
}

/** Errors of the connection or the HTTP transfer, as opposed to bugs in this file. */
function isTransportError(err) {
  return err instanceof TypeError || (err && err.message === "operation has timed out");
}

/** "Kind: message", as the Python worker writes its errors. */
function describe(err) {
  if (err instanceof JobError) return `${err.kind}: ${err.message}`;
  if (err && err.message === "operation has timed out") {
    return `TimeoutError: ${err.message}`;
  }
  const cause = err && err.cause ? ` (${err.cause.message || err.cause})` : "";
  return `${(err && err.name) || "Error"}: ${err && err.message}${cause}`;
}

/** The agents of one process and the commands the controller sends it. */
class Worker {
  constructor() {
    this.options = null;
    this.agents = [];
    this.jobs = [];
    this.counters = Object.fromEntries(COUNTERS.map((name) => [name, 0]));
  }

  async handle(command) {
    const name = command.cmd;
    if (name === "configure") {
      if (this.options === null) this.options = { ...DEFAULT_OPTIONS };
      for (const [key, value] of Object.entries(command.options || {})) {
        if (key in DEFAULT_OPTIONS) this.options[key] = value;
      }
      return { ok: true };
    }
    if (name === "connect") {
      return { ok: true, results: await this.connect(command.agent_ids) };
    }
    if (name === "stats") {
      const reply = {
        ok: true,
        t: monotonic(),
        counters: { ...this.counters },
        connected: this.agents.filter((a) => a.socket && a.socket.connected).length,
      };
      if (command.jobs ?? true) reply.jobs = this.jobs;
      if (command.reset) this.jobs = [];
      return reply;
    }
    if (name === "stop") {
      this.close();
      return { ok: true };
    }
    return { ok: false, error: `unknown command ${JSON.stringify(name)}` };
  }

  async connect(agentIds) {
    if (this.options === null) throw new Error("configure before connect");
    const gate = new Gate(this.options.connect_concurrency);
    return Promise.all(agentIds.map((agentId) => {
      const agent = new SimAgent(agentId, this);
      this.agents.push(agent);
      return gate.run(() => agent.connectAndRegister());
    }));
  }

  close() {
    for (const agent of this.agents) agent.close();
    this.agents = [];
  }
}

/** Serve JSON-line commands from stdin, one at a time, until `stop` or end of input. */
async function main() {
  const worker = new Worker();
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let command = {};
    let reply;
    try {
      command = JSON.parse(line);
      reply = await worker.handle(command);
    } catch (err) { // a bad command must not kill the agents
      console.error(`fleet worker command ${command.cmd} failed:`, err);
      reply = { ok: false, error: describe(err) };
    }
    process.stdout.write(`${JSON.stringify(reply)}\n`);
    if (command.cmd === "stop") break;
  }
  worker.close();
  lines.close();
  // Sockets closed above end their timers; exit without waiting for the last
  // close handshakes, as the Python worker's loop ends with its stop command.
  process.exitCode = 0;
  setImmediate(() => process.exit());
}

main();
