// The synister service page: sign in with a token, submit tables, follow jobs, download results.
// Plain JavaScript, no build step. The token lives in this tab's sessionStorage and travels only
// in the Authorization header (never in a URL). Text from the server is set with textContent.
"use strict";

const API = "/api/v1";
const POLL_ACTIVE_MS = 2000;
const POLL_IDLE_MS = 10000;
let token = sessionStorage.getItem("synister-token");
let me = null;
let pollTimer = null;
let shownJobs = "";  // the job list as last drawn: redraw only what changed

const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, { Authorization: `Bearer ${token}` });
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    signOut("Your token was not accepted (unknown or revoked).");
    throw new Error("not signed in");
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    let columns = null;
    try {
      const body = await response.json();
      if (body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      columns = body.columns || null;
    } catch (e) { /* not JSON */ }
    const error = new Error(detail);
    error.columns = columns;  // the table's columns, where one was not found by name
    throw error;
  }
  return response;
}

const COLUMN_SELECTS = ["id-column", "neuron-column", "x-column", "y-column", "z-column"];

function offerColumns(columns) {
  // the table's columns in every select; "" leaves the choice to the names the service knows
  for (const id of COLUMN_SELECTS) {
    const select = $(id);
    const chosen = select.value;
    select.replaceChildren();
    for (const name of ["", ...columns]) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name || "(found by name)";
      select.appendChild(option);
    }
    if (columns.includes(chosen)) select.value = chosen;
  }
  $("columns-row").hidden = false;
}

async function csvHeader(file) {
  // a CSV or TSV file's column names from its first line (others: the service lists them
  // when a column is not found)
  if (!file || !/\.(csv|tsv|txt)$/i.test(file.name)) return [];
  const first = (await file.slice(0, 65536).text()).split(/\r?\n/)[0];
  const separator = /\.tsv$/i.test(file.name) ? "\t" : ",";
  return first.split(separator).map((name) => name.trim().replace(/^"(.*)"$/, "$1")).filter(Boolean);
}

function columnParams(params) {
  if ($("columns-row").hidden) return;
  if ($("id-column").value) params.set("id_column", $("id-column").value);
  if ($("neuron-column").value) params.set("neuron_column", $("neuron-column").value);
  const xyz = ["x-column", "y-column", "z-column"].map((id) => $(id).value).filter(Boolean);
  if (xyz.length) params.set("position_columns", xyz.join(","));
}

function show(signedIn) {
  $("sign-in-section").hidden = signedIn;
  $("submit-section").hidden = !signedIn;
  $("jobs-section").hidden = !signedIn;
  $("who").hidden = !signedIn;
  if (!signedIn) $("report-section").hidden = true;
}

function signOut(message) {
  token = null;
  me = null;
  sessionStorage.removeItem("synister-token");
  clearTimeout(pollTimer);
  shownJobs = "";
  $("jobs").tBodies[0].replaceChildren();
  $("token").value = "";
  show(false);
  $("sign-in-message").textContent = message || "";
}

async function signIn(candidate) {
  token = candidate;
  try {
    me = await (await api(`${API}/me`)).json();
  } catch (error) {
    if (token) signOut(error.message);
    return;
  }
  sessionStorage.setItem("synister-token", token);
  $("user").textContent = me.admin ? `${me.user} (admin)` : me.user;
  $("all-users-label").hidden = !me.admin;
  $("sign-in-message").textContent = "";
  $("token").value = "";
  show(true);
  await loadChoices();
  await refreshJobs();
}

function fillSelect(select, items, description) {
  select.replaceChildren();
  for (const item of items) {
    const option = document.createElement("option");
    option.value = item.name;
    option.textContent = item.name;
    option.dataset.description = item.description;
    select.appendChild(option);
  }
  const describe = () => {
    const chosen = select.selectedOptions[0];
    description.textContent = chosen ? chosen.dataset.description : "";
  };
  select.onchange = describe;
  describe();
}

function megabytes(bytes) {
  return `${(bytes / 1048576).toFixed(bytes < 1048576 ? 2 : 0)} MiB`;
}

async function loadChoices() {
  const choices = await (await api(`${API}/choices`)).json();
  fillSelect($("bundle"), choices.bundles, $("bundle-description"));
  fillSelect($("volume"), choices.volumes, $("volume-description"));
  const kept = choices.results_days > 0 ? ` Finished jobs are deleted after ${choices.results_days} days.` : "";
  $("limits").textContent =
    `At most ${megabytes(choices.upload_bytes)} and ${choices.rows_per_job.toLocaleString()} rows ` +
    `per table, ${choices.queued_jobs_per_user} queued or running jobs and ` +
    `${megabytes(choices.user_bytes)} of jobs on disk per user.${kept}`;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function cell(row, text, className) {
  const td = document.createElement("td");
  if (text !== undefined) td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

async function download(job, name) {
  const response = await api(`${API}/jobs/${job.id}/results/${name}`);
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${job.input_name.replace(/\.[^.]*$/, "")}_${name}`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

async function showReport(job) {
  const text = await (await api(`${API}/jobs/${job.id}/report`)).text();
  // srcdoc in a sandbox without allow-same-origin: the report runs in an origin of its own
  $("report").srcdoc = text;
  $("report-section").hidden = false;
  $("report-section").dataset.job = job.id;
  $("report-section").scrollIntoView();
}

function actionLink(container, label, name, handler) {
  const link = document.createElement("a");
  link.href = "#";
  link.className = "result-link";
  link.dataset.name = name;
  link.textContent = label;
  link.onclick = (event) => {
    event.preventDefault();
    handler().catch((error) => alert(error.message));
  };
  container.appendChild(link);
}

function renderJob(job) {
  const row = document.createElement("tr");
  row.dataset.jobId = job.id;
  row.dataset.state = job.state;
  cell(row, when(job.created));
  cell(row, job.input_name);
  cell(row, job.bundle);
  cell(row, job.volume);
  cell(row, job.rows.toLocaleString());
  const state = cell(row);
  const badge = document.createElement("span");
  badge.className = `state state-${job.state}`;
  badge.textContent = job.cancel_requested && job.state === "running" ? "stopping" : job.state;
  state.appendChild(badge);
  const progress = cell(row);
  if (job.state === "running" || job.state === "queued") {
    const bar = document.createElement("progress");
    bar.max = Math.max(job.progress.total, 1);
    bar.value = job.progress.done;
    progress.appendChild(bar);
    const rate = job.synapses_per_second ? `, ${job.synapses_per_second.toFixed(0)} synapses/s` : "";
    progress.appendChild(document.createTextNode(
      ` ${job.progress.done.toLocaleString()} / ${job.progress.total.toLocaleString()}${rate}`));
  } else if (job.state === "done") {
    const r = job.result || {};
    const notes = [];
    if (r.partly_outside) notes.push(`${r.partly_outside.toLocaleString()} partly outside`);
    if (r.outside_volume) notes.push(`${r.outside_volume.toLocaleString()} outside the volume`);
    progress.textContent = `${job.rows.toLocaleString()} synapses` +
      (notes.length ? ` (${notes.join(", ")})` : "");
  }
  const actions = cell(row, undefined, job.state === "failed" ? "error" : "");
  if (job.state === "done") {
    actionLink(actions, "synapses.parquet", "synapses.parquet", () => download(job, "synapses.parquet"));
    if ((job.result || {}).neurons != null) {  // a table without a neuron column has none
      actionLink(actions, "neurons.parquet", "neurons.parquet", () => download(job, "neurons.parquet"));
    }
    actionLink(actions, "synapses.csv", "synapses.csv", () => download(job, "synapses.csv"));
    actionLink(actions, "report", "report", () => showReport(job));
  } else if (job.state === "failed") {
    actions.textContent = job.error || "failed";
  }
  if (job.state === "done" || job.state === "failed" || job.state === "cancelled") {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "delete";
    button.textContent = "Delete";
    button.title = "Delete the job, its input and its results";
    button.onclick = async () => {
      if (!confirm(`Delete the job of ${job.input_name} and its results?`)) return;
      button.disabled = true;
      try {
        await api(`${API}/jobs/${job.id}`, { method: "DELETE" });
      } catch (error) {
        alert(error.message);
      }
      refreshJobs();
    };
    actions.appendChild(button);
  } else if (job.state === "queued" || job.state === "running") {
    if (!job.cancel_requested) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "cancel";
      button.textContent = "Cancel";
      button.onclick = async () => {
        button.disabled = true;
        try {
          await api(`${API}/jobs/${job.id}/cancel`, { method: "POST" });
        } catch (error) {
          alert(error.message);
        }
        refreshJobs();
      };
      actions.appendChild(button);
    }
  }
  return row;
}

async function refreshJobs() {
  clearTimeout(pollTimer);
  if (!token) return;
  let jobs = [];
  try {
    const all = me && me.admin && $("all-users").checked ? "?all=true" : "";
    jobs = await (await api(`${API}/jobs${all}`)).json();
  } catch (error) {
    if (!token) return;
  }
  const key = JSON.stringify(jobs);
  if (key !== shownJobs) {
    shownJobs = key;
    $("jobs").tBodies[0].replaceChildren(...jobs.map(renderJob));
    $("no-jobs").hidden = jobs.length > 0;
  }
  const active = jobs.some((j) => j.state === "queued" || j.state === "running");
  pollTimer = setTimeout(refreshJobs, active ? POLL_ACTIVE_MS : POLL_IDLE_MS);
}

async function submitJob(event) {
  event.preventDefault();
  const file = $("table").files[0];
  const message = $("submit-message");
  message.className = "message";
  if (!file) {
    message.textContent = "Choose a table first.";
    return;
  }
  const params = new URLSearchParams({
    bundle: $("bundle").value,
    volume: $("volume").value,
    filename: file.name,
    units: $("units").value,
  });
  if ($("units").value === "voxels") params.set("voxel_size", $("voxel-size").value);
  columnParams(params);
  $("submit").disabled = true;
  message.textContent = `Uploading ${file.name} ...`;
  try {
    const job = await (await api(`${API}/jobs?${params}`, { method: "POST", body: file })).json();
    message.className = "message ok";
    message.textContent = `Queued ${job.input_name}: ${job.rows.toLocaleString()} positions.`;
    $("table").value = "";
  } catch (error) {
    message.textContent = error.message;
    if (error.columns) offerColumns(error.columns);
  } finally {
    $("submit").disabled = false;
  }
  refreshJobs();
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value.trim());
  });
  $("sign-out").onclick = () => signOut("");
  $("submit-form").addEventListener("submit", submitJob);
  $("units").onchange = () => { $("voxel-size-row").hidden = $("units").value !== "voxels"; };
  $("show-columns").onclick = async (event) => {
    event.preventDefault();
    if (!$("columns-row").hidden) {
      $("columns-row").hidden = true;
      return;
    }
    offerColumns(await csvHeader($("table").files[0]));
  };
  $("all-users").onchange = refreshJobs;
  $("close-report").onclick = () => { $("report-section").hidden = true; $("report").srcdoc = ""; };
  if (token) signIn(token); else show(false);
});
