// streamrelay's web page: uploads streamed straight from disk with the tus
// protocol (tus-js-client, vendored as tus.min.js), so a network cut resumes
// where it stopped; and the list of stored files. No build step.
"use strict";

const PAGE_SIZE = 500;
const PARALLEL_UPLOADS = 2;
// Waits before each retry after a network cut or an unavailable backend, ms.
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000, 30000, 60000, 60000, 60000];

const state = {
  token: sessionStorage.getItem("streamrelay-token") || "",
  queue: [],
  active: 0,
  next: null,
  shown: 0,
  // The grant of a signed link (signed.js), or null.
  grant: null,
};

const $ = (selector) => document.querySelector(selector);

function authHeaders() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

function fileURL(name) {
  return "/files/" + encodeURIComponent(name);
}

function human(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return (unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)) + " " + units[unit];
}

function duration(seconds) {
  if (!isFinite(seconds)) return "–";
  if (seconds < 60) return Math.ceil(seconds) + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.ceil(seconds % 60) + " s";
  return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
}

// The sentence to show for an API error answer.
function errorText(status, body) {
  try {
    const answer = JSON.parse(body);
    if (answer && answer.message) return answer.message;
  } catch (e) { /* not JSON */ }
  if (status === 0) return "The server could not be reached.";
  return "The server answered " + status + ".";
}

function showMessage(text) {
  const message = $("#message");
  message.textContent = text;
  message.hidden = !text;
}

function needToken(reason) {
  $("#auth").hidden = false;
  $("#token").focus();
  showMessage(reason || "Enter the access token to go on.");
}

// Uploads

function addFiles(files) {
  if (state.grant) {
    // A signed link stores one file, under its name, up to its size.
    const file = files[0];
    if (!file) return;
    if (state.grant.maxSize !== null && file.size > state.grant.maxSize) {
      showMessage(file.name + " is " + human(file.size) + ": this link takes at most " +
        human(state.grant.maxSize) + ".");
      return;
    }
    showMessage("");
    files = [file];
  }
  $("#uploads-section").hidden = false;
  for (const file of files) {
    const job = { file, upload: null, row: uploadRow(file), samples: [], finished: false };
    job.row.querySelector(".cancel").addEventListener("click", () => cancel(job));
    state.queue.push(job);
  }
  pump();
}

function uploadRow(file) {
  const row = document.createElement("li");
  row.className = "upload waiting";
  const name = state.grant ? state.grant.name : file.name;
  row.dataset.name = name;
  row.innerHTML =
    '<span class="name"></span>' +
    '<button type="button" class="cancel danger small">Cancel</button>' +
    '<progress max="100" value="0"></progress>' +
    '<span class="stats"></span><span class="state">Waiting</span>';
  row.querySelector(".name").textContent = name;
  row.querySelector(".stats").textContent = "0 B of " + human(file.size);
  $("#uploads").prepend(row);
  return row;
}

function pump() {
  while (state.active < PARALLEL_UPLOADS && state.queue.length) {
    start(state.queue.shift());
  }
}

function setState(job, kind, text) {
  job.row.className = "upload " + kind;
  job.row.querySelector(".state").textContent = text;
}

function start(job) {
  state.active += 1;
  job.started = performance.now();
  if (state.grant) {
    job.upload = signedPut(state.grant, job.file, {
      onProgress: (loaded) => progress(job, loaded),
      onSuccess: (status, body) => finish(job, status, body),
      onError: (status, body) => finish(job, status, body),
    });
    setState(job, "sending", "Sending");
    return;
  }
  const upload = new tus.Upload(job.file, {
    endpoint: "/uploads/",
    headers: authHeaders(),
    metadata: { filename: job.file.name, filetype: job.file.type || "application/octet-stream" },
    retryDelays: RETRY_DELAYS,
    removeFingerprintOnSuccess: true,
    onProgress: (loaded) => progress(job, loaded),
    onError: (error) => failed(job, error),
    onSuccess: () => stored(job),
  });
  job.upload = upload;
  setState(job, "sending", "Sending");
  // A file the page was sending before a reload goes on where it stopped.
  upload.findPreviousUploads().then((previous) => {
    if (job.finished) return;
    if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
    upload.start();
  });
}

// The upload is complete: ask the server what it stored.
async function stored(job) {
  let answer = { status: 0, body: "" };
  for (let attempt = 0; attempt < 5 && answer.status !== 200; attempt += 1) {
    // JSON: without it, a finished upload's URL answers the file's bytes.
    answer = await request("GET", job.upload.url, { Accept: "application/json" });
  }
  let file = null;
  try { file = JSON.parse(answer.body).file; } catch (e) { /* checked below */ }
  if (answer.status === 200 && file) {
    finish(job, file.replaced ? 200 : 201, JSON.stringify(file));
  } else {
    finish(job, answer.status, answer.body);
  }
}

function failed(job, error) {
  const response = error && error.originalResponse;
  finish(job, response ? response.getStatus() : 0, response ? response.getBody() : "");
}

function progress(job, loaded) {
  const now = performance.now();
  job.samples.push([now, loaded]);
  while (job.samples.length > 2 && now - job.samples[0][0] > 3000) job.samples.shift();
  const [t0, b0] = job.samples[0];
  const rate = now > t0 ? ((loaded - b0) * 1000) / (now - t0) : 0;
  const total = job.file.size;
  const percent = total ? Math.floor((loaded * 100) / total) : 100;
  job.row.querySelector("progress").value = percent;
  job.row.querySelector(".stats").textContent =
    human(loaded) + " of " + human(total) + " · " + human(rate) + "/s · " +
    duration(rate > 0 ? (total - loaded) / rate : Infinity) + " left";
  setState(job, "sending", percent + " %");
}

function finish(job, status, body) {
  if (job.finished) return;
  job.finished = true;
  state.active -= 1;
  job.row.querySelector(".cancel").hidden = true;
  if (status === 200 || status === 201) {
    let answer = {};
    try { answer = JSON.parse(body); } catch (e) { /* checked below */ }
    if (answer.size !== job.file.size) {
      setState(job, "failed", "Stored with another size: " + answer.size);
    } else {
      const seconds = (performance.now() - job.started) / 1000;
      job.row.querySelector("progress").value = 100;
      job.row.querySelector(".stats").textContent =
        human(job.file.size) + " in " + duration(seconds) + " · " +
        human(job.file.size / Math.max(seconds, 0.001)) + "/s";
      setState(job, "done", status === 201 ? "Stored" : "Replaced");
      job.row.dataset.sha256 = answer.sha256;
    }
    if (!state.grant) loadFiles(true);
  } else if (status === -1) {
    setState(job, "failed", "Cancelled");
  } else if (status === 401) {
    setState(job, "failed", "Needs an access token");
    needToken(errorText(status, body));
  } else {
    setState(job, "failed", errorText(status, body));
  }
  pump();
}

function cancel(job) {
  const waiting = state.queue.indexOf(job);
  if (waiting >= 0) {
    state.queue.splice(waiting, 1);
    job.finished = true;
    job.row.querySelector(".cancel").hidden = true;
    setState(job, "failed", "Cancelled");
  } else if (job.upload && !job.finished) {
    // Stop sending, and have the server throw away what it kept.
    job.upload.abort(true).catch(() => {});
    finish(job, -1, "");
  }
}

// Stored files

async function request(method, url, headers = {}) {
  let response;
  try {
    response = await fetch(url, { method, headers: { ...authHeaders(), ...headers } });
  } catch (e) {
    return { status: 0, body: "" };
  }
  return { status: response.status, body: await response.text() };
}

async function loadFiles(reset) {
  const after = reset ? "" : state.next;
  const url = "/files?limit=" + PAGE_SIZE + (after ? "&after=" + encodeURIComponent(after) : "");
  const { status, body } = await request("GET", url);
  if (status === 401) return needToken(errorText(status, body));
  if (status !== 200) return showMessage("Cannot list the files: " + errorText(status, body));
  const answer = JSON.parse(body);
  const tbody = $("#files tbody");
  if (reset) {
    tbody.replaceChildren();
    state.shown = 0;
  }
  const rows = document.createDocumentFragment();
  for (const file of answer.files) rows.append(fileRow(file));
  tbody.append(rows);
  state.shown += answer.files.length;
  state.next = answer.next || null;
  $("#more").hidden = !state.next;
  $("#empty").hidden = state.shown > 0;
  $("#count").textContent = state.shown ? "(" + state.shown + (state.next ? "+" : "") + ")" : "";
}

function fileRow(file) {
  const row = document.createElement("tr");
  row.dataset.name = file.name;
  row.innerHTML =
    '<td class="name"><a></a></td><td class="num size"></td><td class="modified"></td>' +
    '<td class="sha"></td><td><button type="button" class="danger small delete">Delete</button></td>';
  const link = row.querySelector("a");
  link.textContent = file.name;
  link.href = fileURL(file.name);
  link.download = file.name;
  const size = row.querySelector(".size");
  size.textContent = human(file.size);
  size.title = file.size + " bytes";
  const modified = new Date(file.modified);
  row.querySelector(".modified").textContent = modified.toLocaleString();
  row.querySelector(".modified").title = file.modified;
  row.querySelector(".sha").textContent = file.sha256;
  row.querySelector(".delete").addEventListener("click", (event) => remove(file.name, event.target, row));
  return row;
}

// Deleting takes two clicks: the first arms the button.
async function remove(name, button, row) {
  if (!button.classList.contains("confirm")) {
    button.classList.add("confirm");
    button.textContent = "Really delete?";
    setTimeout(() => {
      button.classList.remove("confirm");
      button.textContent = "Delete";
    }, 4000);
    return;
  }
  button.disabled = true;
  const { status, body } = await request("DELETE", fileURL(name));
  if (status === 204 || status === 404) {
    row.remove();
    state.shown -= 1;
    $("#count").textContent = state.shown ? "(" + state.shown + (state.next ? "+" : "") + ")" : "";
    $("#empty").hidden = state.shown > 0;
  } else if (status === 401) {
    needToken(errorText(status, body));
  } else {
    button.disabled = false;
    showMessage("Cannot delete " + name + ": " + errorText(status, body));
  }
}

// Wiring

// The page opened with a signed link: one upload, no token, no listing.
function useGrant(grant) {
  $("#files-section").hidden = true;
  if (grant.error) {
    $("#drop").hidden = true;
    showMessage(grant.error);
    return;
  }
  state.grant = grant;
  $("#picker").multiple = false;
  $("#grant").hidden = false;
  $("#grant-name").textContent = grant.name;
  $("#grant-limit").textContent =
    grant.maxSize !== null ? " (" + human(grant.maxSize) + " at most)" : "";
  $("#grant-expires").textContent = grant.expires.toLocaleString();
}

function setUp() {
  const drop = $("#drop");
  const picker = $("#picker");
  picker.addEventListener("change", () => {
    addFiles(picker.files);
    picker.value = "";
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addFiles(event.dataTransfer.files);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") picker.click();
  });
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("#token").value.trim();
    sessionStorage.setItem("streamrelay-token", state.token);
    $("#auth").hidden = true;
    showMessage("");
    loadFiles(true);
  });
  $("#refresh").addEventListener("click", () => loadFiles(true));
  $("#more").addEventListener("click", () => loadFiles(false));
  const grant = signedLink(location.search);
  if (grant) useGrant(grant);
  else loadFiles(true);
}

document.addEventListener("DOMContentLoaded", setUp);
