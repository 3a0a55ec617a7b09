// The page: pick, drop or snap a photo, send it to /api/translate, show input | output | attention.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { blob: null, name: "", url: null, seq: 0, limit: 0, stream: null };

function setState(s) { document.body.dataset.state = s; }
function showMessage(text) { $("message").textContent = text; $("message").hidden = !text; }
function status(text) { $("status").textContent = text || ""; }
function megabytes(n) { return (n / 1048576).toFixed(n < 10485760 ? 1 : 0) + " MB"; }

async function loadInfo() {
  try {
    const info = await (await fetch("/api/info")).json();
    state.limit = info.max_upload_bytes;
    $("model-info").textContent = `Model "${info.model}" (${info.img_size}×${info.img_size} px)`;
    $("model-info").title = info.source;
    $("model-source").textContent = `Loaded from ${info.source}.`;
    $("limits").textContent = `${info.accepted}, up to ${megabytes(info.max_upload_bytes)}`;
    $("rest-url").textContent = `/v1/models/${info.model}:predict`;
  } catch (e) {
    $("model-info").textContent = "The server does not answer. Is it still running?";
  }
}

function options() {
  return {
    direction: document.querySelector("input[name=direction]:checked").value,
    face_crop: $("face_crop").checked,
    paste_back: $("face_crop").checked && $("paste_back").checked,
  };
}

function usePhoto(blob, name) {
  if (state.url) URL.revokeObjectURL(state.url);
  state.blob = blob; state.name = name || "photo";
  state.url = URL.createObjectURL(blob);
  $("input-preview").src = state.url;
  translate();
}

async function translate() {
  if (!state.blob) return;
  const seq = ++state.seq;
  showMessage("");
  if (state.limit && state.blob.size > state.limit) {
    setState("error");
    showMessage(`${state.name}: ${megabytes(state.blob.size)}, more than the limit of ${megabytes(state.limit)} for one photo`);
    return;
  }
  const opts = options();
  const form = new FormData();
  form.append("image", state.blob, state.name);
  form.append("direction", opts.direction);
  form.append("face_crop", String(opts.face_crop));
  form.append("paste_back", String(opts.paste_back));
  form.append("format", "json");
  setState("busy"); status("Translating…");
  const started = performance.now();
  let answer, response;
  try {
    response = await fetch("/api/translate", { method: "POST", body: form });
    answer = await response.json().catch(() => ({ error: `the server answered HTTP ${response.status}` }));
  } catch (e) {
    answer = { error: "the server cannot be reached; is it still running?" };
  }
  if (seq !== state.seq) return;  // a newer request was started meanwhile
  if (!response || !response.ok || answer.error) {
    setState("error"); status("");
    showMessage(answer.error || `the server answered HTTP ${response.status}`);
    $("results").hidden = true; $("actions").hidden = true;
    $("output").removeAttribute("src"); $("attention").removeAttribute("src");
    return;
  }
  $("output").src = answer.output;
  $("attention").src = answer.attention;
  $("results").hidden = false; $("actions").hidden = false;
  const stem = state.name.replace(/\.[^.]*$/, "") || "photo";
  $("download").href = answer.output;
  $("download").download = `${stem}-${opts.direction === "a2b" ? "anime" : "photo"}.png`;
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const what = answer.mode === "face" ? `${answer.faces} face${answer.faces > 1 ? "s" : ""}`
    : answer.mode === "center" ? "no face found: the centre of the photo was translated"
    : "the whole photo";
  status(`Done in ${seconds} s (${what}).`);
  setState("done");
  $("status").scrollIntoView({ behavior: "smooth", block: "start" });
}

// -- choosing and dropping -------------------------------------------------------------------
$("file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) usePhoto(file, file.name);
  e.target.value = "";
});
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.remove("over");
}));
drop.addEventListener("drop", (e) => {
  const file = e.dataTransfer.files[0];
  if (file) usePhoto(file, file.name);
});
document.querySelectorAll("input[name=direction], #face_crop, #paste_back").forEach((el) =>
  el.addEventListener("change", () => { $("paste_back").disabled = !$("face_crop").checked; translate(); }));

// -- webcam ----------------------------------------------------------------------------------
function cameraButtons(on) {
  $("camera-start").hidden = on; $("camera-snap").hidden = !on; $("camera-stop").hidden = !on;
  $("camera").hidden = !on;
}
$("camera-start").addEventListener("click", async () => {
  showMessage("");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showMessage("This browser gives no webcam to this page (the webcam needs http://127.0.0.1 or https).");
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (e) {
    showMessage(`The webcam cannot be used: ${e.message || e.name}`);
    return;
  }
  $("camera").srcObject = state.stream;
  cameraButtons(true);
});
function stopCamera() {
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null; cameraButtons(false);
}
$("camera-stop").addEventListener("click", stopCamera);
$("camera-snap").addEventListener("click", () => {
  const video = $("camera");
  if (!video.videoWidth) { showMessage("The webcam has no picture yet; try again in a moment."); return; }
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => usePhoto(blob, "webcam.png"), "image/png");
});

loadInfo();
