// The page at /: type, pick a voice, speak; plays the answer and offers it for download.
// No build step, no dependencies. ?autotest=TEXT drives the page by itself (the headless browser test).
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("key");
keyInput.value = localStorage.getItem("f5app-api-key") || "";

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (keyInput.value) h["Authorization"] = "Bearer " + keyInput.value;
  return h;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function errorMessage(response) {
  try { return (await response.json()).error.message; } catch (e) { return response.status + " " + response.statusText; }
}

async function loadVoices() {
  const response = await fetch("/v1/voices", { headers: headers() });
  if (!response.ok) { setStatus("voices: " + (await errorMessage(response)), true); return; }
  const select = $("voice");
  select.textContent = "";
  for (const voice of (await response.json()).data) {
    const option = document.createElement("option");
    option.value = voice.name;
    option.textContent = voice.name + (voice.source === "default" ? "" : " (" + voice.source + ")");
    select.appendChild(option);
  }
}

async function speak() {
  const text = $("text").value.trim();
  if (!text) { setStatus("Type something to say first.", true); return; }
  localStorage.setItem("f5app-api-key", keyInput.value);
  const format = $("format").value;
  const body = { model: "tts-1", input: text, voice: $("voice").value, response_format: format, stream: false };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  $("speak").disabled = true;
  setStatus("Speaking…");
  const started = performance.now();
  try {
    const response = await fetch("/v1/audio/speech", {
      method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body),
    });
    if (!response.ok) { setStatus(await errorMessage(response), true); return false; }
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const player = $("player");
    player.src = url;
    const link = $("download");
    link.href = url;
    link.download = "speech." + (format === "opus" ? "ogg" : format);
    link.hidden = false;
    setStatus("Seed " + response.headers.get("X-Seed") + ", " + ((performance.now() - started) / 1000).toFixed(1) + " s.");
    player.play().catch(() => {});  // browsers may refuse autoplay; the controls still work
    return true;
  } catch (error) {
    setStatus(String(error), true);
    return false;
  } finally {
    $("speak").disabled = false;
  }
}

$("speak").addEventListener("click", speak);
keyInput.addEventListener("change", loadVoices);

// Test hook: ?autotest=TEXT types TEXT, clicks Speak, and reports what the audio element got in
// the title and <body data-autotest="...">: "playable <seconds>" once the audio's metadata has loaded.
async function autotest(text) {
  const report = (value) => { document.body.dataset.autotest = value; document.title = "autotest: " + value; };
  report("started");
  const player = $("player");
  player.addEventListener("loadedmetadata", () => report("playable " + player.duration.toFixed(3)));
  player.addEventListener("error", () => report("media error " + (player.error && player.error.code)));
  $("text").value = text;
  $("text").dispatchEvent(new Event("input"));
  $("speak").click();
}

loadVoices().finally(() => {
  const text = new URLSearchParams(location.search).get("autotest");
  if (text) autotest(text);
});
