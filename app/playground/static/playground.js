// genserve playground: plain JavaScript over the service's own routes (GET /models, POST /generate, one
// seed's image file, GET /interpolate, POST /reconstruct, POST /encode). No framework and no build step.
"use strict";

const $ = (id) => document.getElementById(id);

// -----------------------------------------------------------------------------------------------------------
// Requests

class RequestFailed extends Error {}

/** Headers with the API key typed into the page, when there is one. */
function withKey(headers = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...headers, "X-API-Key": key } : headers;
}

/** The message of an error answer: {"error": {"code", "message"}}, {"error": "..."} or {"detail": ...}. */
async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const error = body.error ?? body.detail;
    if (typeof error === "string") return error;
    if (error && typeof error.message === "string") return error.message;
    return JSON.stringify(error ?? body);
  } catch {
    return text || response.statusText;
  }
}

/** fetch() that throws RequestFailed, with the service's own message, on an error status. */
async function request(url, options = {}) {
  const response = await fetch(url, { ...options, headers: withKey(options.headers) });
  if (!response.ok) {
    throw new RequestFailed(`${response.status}: ${await errorMessage(response)}`);
  }
  return response;
}

/** A query string of the fields that have a value. */
function query(fields) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  return search.toString();
}

/** One request at a time: starting one aborts the one before, so only the newest answer is shown. */
class Latest {
  constructor() {
    this.controller = null;
  }

  start() {
    this.controller?.abort();
    this.controller = new AbortController();
    return this.controller.signal;
  }

  stop() {
    this.controller?.abort();
    this.controller = null;
  }

  /** Whether no newer request has replaced the one of `signal` (it ended, failed or was stopped). */
  isLast(signal) {
    return this.controller === null || this.controller.signal === signal;
  }
}

// -----------------------------------------------------------------------------------------------------------
// Showing results

function showError(element, error) {
  if (error?.name === "AbortError") return;
  const message = error instanceof RequestFailed ? error.message : `The request failed: ${error.message}`;
  element.textContent = message;
  element.hidden = false;
}

function clearError(element) {
  element.hidden = true;
  element.textContent = "";
}

/** Show `blob` in `img` (or an `<audio>`, labelled by `alt`); `source` (the request it came from) stays on the
 * element as data-source. */
function showBlob(img, blob, alt, source) {
  const previous = img.dataset.objectUrl;
  const url = URL.createObjectURL(blob);
  img.dataset.objectUrl = url;
  img.dataset.source = source;
  if (img instanceof HTMLImageElement) img.alt = alt;
  else img.setAttribute("aria-label", alt);
  img.src = url;
  img.hidden = false;
  if (previous) URL.revokeObjectURL(previous);
}

function clearImage(img) {
  if (img.dataset.objectUrl) URL.revokeObjectURL(img.dataset.objectUrl);
  delete img.dataset.objectUrl;
  delete img.dataset.source;
  img.removeAttribute("src");
  if (img instanceof HTMLImageElement) img.alt = "";
  else img.removeAttribute("aria-label");
  img.hidden = true;
}

function setBusy(element, busy) {
  element.setAttribute("aria-busy", String(busy));
}

function debounce(action, delayMs) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(action, delayMs);
  };
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// -----------------------------------------------------------------------------------------------------------
// Models

const state = {
  models: new Map(),
  model: null, // the selected model's name
  version: null, // its latest available version, as GET /models describes it
  capabilities: new Set(),
  frames: [],
  drawSource: null, // "pad" or the uploaded File
  encoding: null, // the last POST /encode answer's image: its latent
};

const EVALUATION_NAMES = {
  fid: "FID (lower is better)",
  real_fid: "FID of real data",
  inception_score: "class score",
  real_inception_score: "class score of real data",
  classifier_accuracy: "scoring classifier's accuracy",
  label_accuracy: "classified as the class asked for",
  reconstruction_fid: "FID of reconstructions",
  reconstruction_class_agreement: "reconstructions keeping their class",
  bits_per_char: "held-out bits per character",
  "5gram_bits_per_char": "5-gram baseline, bits per character",
  unigram_bits_per_char: "unigram baseline, bits per character",
  num_samples: "samples scored",
};

function latestVersion(model) {
  return model.versions.find((version) => version.version === model.latest_available) ?? null;
}

function modelStatus(model) {
  return model.versions.length ? model.versions[model.versions.length - 1].status : "no versions";
}

async function loadModels() {
  const select = $("model");
  clearError($("model-error"));
  let list;
  try {
    list = await (await request("models")).json();
  } catch (error) {
    showError($("model-error"), error);
    return;
  }
  const chosen = state.model ?? list.default_model;
  state.models = new Map(list.models.map((model) => [model.name, model]));
  select.replaceChildren(
    ...list.models.map((model) => {
      const available = model.latest_available !== null;
      const status = available ? `version ${model.latest_available}` : modelStatus(model);
      const option = element("option", `${model.name} (${status})`);
      option.value = model.name;
      return option;
    }),
  );
  if (!list.models.length) {
    select.append(element("option", "No models in the store"));
    return;
  }
  const firstAvailable = list.models.find((model) => model.latest_available !== null);
  select.value = state.models.has(chosen) ? chosen : (firstAvailable ?? list.models[0]).name;
  select.disabled = false;
  const selected = state.models.get(select.value);
  if (state.model !== selected.name || state.version?.version !== selected.latest_available) selectModel();
  if (list.models.some((model) => model.versions.some((version) => version.status === "loading"))) {
    setTimeout(loadModels, 2000);
  }
}

function selectModel() {
  const model = state.models.get($("model").value);
  state.model = model?.name ?? null;
  state.version = model ? latestVersion(model) : null;
  state.capabilities = new Set(state.version?.capabilities ?? []);
  showModelInfo(model, state.version);

  const can = (capability) => state.capabilities.has(capability);
  $("images-panel").hidden = !can("generate");
  $("sound-panel").hidden = !can("generate_audio");
  // The walk shows image frames; a sound generator's walk is a WAV from GET /interpolate.
  $("walk-panel").hidden = !can("interpolate") || can("generate_audio");
  $("draw-panel").hidden = !can("encode");
  $("text-panel").hidden = !can("generate_text");
  const classes = can("labels") ? state.version.classes ?? [] : [];
  fillClasses("label", "label-field", classes);
  fillClasses("sound-label", "sound-label-field", classes);
  $("walk-hint").hidden = !can("labels");

  for (const requests of [imageRequests, soundRequests, walkRequests, drawRequests, textRequests]) {
    requests.stop();
  }
  resetSound();
  resetWalk();
  resetDrawing();
  resetText();
  if (can("generate")) updateImages();
}

function showModelInfo(model, version) {
  const info = $("model-info");
  info.replaceChildren();
  if (!model) return;
  if (!version) {
    const failed = model.versions.find((entry) => entry.error);
    const reason = failed ? ` (${failed.error})` : "";
    info.append(element("p", `Not available yet: ${modelStatus(model)}${reason}.`, "facts"));
    return;
  }
  const facts = [`a ${version.kind ?? "model"}`];
  if (version.dataset) facts.push(`trained on ${version.dataset}`);
  if (version.image_shape) facts.push(`${version.image_shape.join(" × ")} images`);
  if (version.latent_dim) facts.push(`latent size ${version.latent_dim}`);
  if (version.classes) facts.push(`${version.classes.length} classes`);
  if (version.vocabulary_size) facts.push(`${version.vocabulary_size} characters`);
  if (version.sample_rate) facts.push(`${version.seconds.toFixed(2)} s clips at ${version.sample_rate} Hz`);
  if (version.device) facts.push(`on ${version.device}`);
  info.append(element("p", `Version ${version.version}: ${facts.join(", ")}.`, "facts"));

  const numbers = evaluationNumbers(version.evaluation);
  if (numbers.length) {
    const list = element("dl", undefined, "evaluation");
    list.setAttribute("aria-label", "Evaluation");
    for (const [name, value] of numbers) list.append(element("dt", name), element("dd", value));
    info.append(list);
  } else {
    info.append(element("p", "No evaluation recorded for this version.", "facts"));
  }
}

/** [name, shown value] of the evaluation's numbers named in EVALUATION_NAMES, in its order. */
function evaluationNumbers(evaluation) {
  if (!evaluation) return [];
  const values = { ...(evaluation.details ?? {}), ...evaluation };
  const shown = [];
  for (const [key, name] of Object.entries(EVALUATION_NAMES)) {
    const value = values[key];
    if (typeof value !== "number") continue;
    shown.push([name, Number.isInteger(value) ? value.toLocaleString("en") : value.toPrecision(3)]);
  }
  return shown;
}

function fillClasses(selectId, fieldId, classes) {
  const select = $(selectId);
  const previous = select.value;
  select.replaceChildren(element("option", "every class in turn"));
  select.firstChild.value = "";
  for (const name of classes) {
    const option = element("option", name);
    option.value = name;
    select.append(option);
  }
  select.value = classes.includes(previous) ? previous : "";
  $(fieldId).hidden = classes.length === 0;
}

// -----------------------------------------------------------------------------------------------------------
// Images from seeds: POST /generate as a PNG grid

const imageRequests = new Latest();

function truncation() {
  const value = Number($("truncation").value);
  return value < 1 ? value : undefined; // 1 is no truncation: leave it to the service
}

/** One seed's image has an address that never changes (GET, cacheable); a grid is a POST /generate. */
function imagesRequest(fields) {
  if (Number(fields.n) !== 1 || fields.seed === "") {
    return { url: `generate?${query(fields)}`, method: "POST", permanent: false };
  }
  const name = encodeURIComponent(state.model);
  const path = `models/${name}/versions/${state.version.version}/images/${fields.seed}.png`;
  const search = query({ truncation: fields.truncation, label: fields.label });
  return { url: search ? `${path}?${search}` : path, method: "GET", permanent: true };
}

async function updateImages() {
  const signal = imageRequests.start();
  const result = $("images-result");
  const fields = {
    model: state.model,
    seed: $("seed").value,
    n: $("count").value,
    truncation: truncation(),
    label: $("label").value,
  };
  const { url, method, permanent } = imagesRequest(fields);
  clearError($("images-error"));
  setBusy(result, true);
  try {
    const response = await request(url, { method, signal });
    const blob = await response.blob();
    const seeds = response.headers.get("X-Seeds") ?? fields.seed;
    const version = response.headers.get("X-Model-Version");
    const count = Number(fields.n) || 16;
    const what = fields.label ? `class ${fields.label}, ` : "";
    const [images, seedWord] = count === 1 ? ["image", "seed"] : ["images", "seeds"];
    const alt = `${count} ${images} generated by ${state.model} (${what}${seedWord} ${seeds})`;
    showBlob($("grid"), blob, alt, url);
    const caption = $("grid-caption");
    caption.textContent = `${state.model} version ${version}, ${what}${seedWord} ${seeds}`;
    if (permanent) {
      const link = element("a", "its permanent address");
      link.href = url;
      caption.append(" (", link, ")");
    }
  } catch (error) {
    // What the controls ask for has no picture: show the reason, not the last one.
    if (error?.name !== "AbortError") {
      clearImage($("grid"));
      $("grid-caption").textContent = "";
    }
    showError($("images-error"), error);
  } finally {
    if (imageRequests.isLast(signal)) setBusy(result, false);
  }
}

const scheduleImages = debounce(updateImages, 250);

// -----------------------------------------------------------------------------------------------------------
// Sound from seeds: POST /generate as one WAV (the clips in a row), played in an <audio> element

const soundRequests = new Latest();

async function generateSound(event) {
  event?.preventDefault();
  const signal = soundRequests.start();
  const result = $("sound-result");
  const fields = {
    model: state.model,
    seed: $("sound-seed").value,
    n: $("sound-count").value,
    label: $("sound-label").value,
    format: "wav",
  };
  clearError($("sound-error"));
  setBusy(result, true);
  try {
    const response = await request(`generate?${query(fields)}`, { method: "POST", signal });
    const blob = await response.blob();
    const seeds = response.headers.get("X-Seeds") ?? fields.seed;
    const version = response.headers.get("X-Model-Version");
    const what = fields.label ? `class ${fields.label}, ` : "";
    const seedWord = seeds.includes("-") ? "seeds" : "seed";
    const description = `${state.model} version ${version}, ${what}${seedWord} ${seeds}`;
    showBlob($("sound"), blob, `Sound generated by ${description}`, "generate");
    $("sound-caption").textContent = description;
  } catch (error) {
    if (error?.name !== "AbortError") resetSound();
    showError($("sound-error"), error);
  } finally {
    if (soundRequests.isLast(signal)) setBusy(result, false);
  }
}

function resetSound() {
  clearImage($("sound"));
  $("sound-caption").textContent = "";
}

// -----------------------------------------------------------------------------------------------------------
// Walk between two seeds: GET /interpolate's frames (JSON) and its animation (GIF or WebP)

const walkRequests = new Latest();

function walkLabel() {
  if (!state.capabilities.has("labels")) return undefined;
  return $("label").value || state.version.classes?.[0];
}

async function walk(event) {
  event.preventDefault();
  const signal = walkRequests.start();
  const result = $("walk-result");
  const start = $("walk-start").value;
  const end = $("walk-end").value;
  const fields = {
    model: state.model,
    start,
    end,
    steps: $("walk-steps").value,
    truncation: truncation(),
    label: walkLabel(),
  };
  const format = $("walk-format").value;
  const framesUrl = `interpolate?${query({ ...fields, format: "json" })}`;
  const animationUrl = `interpolate?${query({ ...fields, format })}`;
  clearError($("walk-error"));
  setBusy(result, true);
  try {
    const [frames, animation] = await Promise.all([
      request(framesUrl, { signal }).then((response) => response.json()),
      request(animationUrl, { signal }).then((response) => response.blob()),
    ]);
    state.frames = frames.frames.map((frame) => ({
      position: frame.position,
      url: `data:image/png;base64,${frame.png_base64}`,
    }));
    state.walkSeeds = [start, end];
    const slider = $("walk-slider");
    slider.max = String(state.frames.length - 1);
    slider.value = "0";
    slider.disabled = false;
    showFrame();
    const kind = format.toUpperCase();
    const alt = `${kind} animation of the walk from seed ${start} to seed ${end}`;
    showBlob($("walk-animation"), animation, alt, animationUrl);
    const link = $("walk-link");
    link.href = animationUrl;
    link.textContent = `Open the ${kind}`;
    link.hidden = false;
  } catch (error) {
    if (error?.name !== "AbortError") resetWalk();
    showError($("walk-error"), error);
  } finally {
    if (walkRequests.isLast(signal)) setBusy(result, false);
  }
}

function showFrame() {
  const index = Number($("walk-slider").value);
  const frame = state.frames[index];
  if (!frame) return;
  const img = $("walk-frame");
  const [start, end] = state.walkSeeds;
  img.src = frame.url;
  img.alt = `Frame ${index + 1} of ${state.frames.length} of the walk from seed ${start} to seed ${end}`;
  img.hidden = false;
  $("walk-position").textContent = `${index + 1} of ${state.frames.length}`;
}

function resetWalk() {
  state.frames = [];
  const slider = $("walk-slider");
  slider.value = "0";
  slider.max = "0";
  slider.disabled = true;
  $("walk-position").textContent = "";
  $("walk-frame").hidden = true;
  $("walk-frame").removeAttribute("src");
  clearImage($("walk-animation"));
  $("walk-link").hidden = true;
  clearError($("walk-error"));
}

// -----------------------------------------------------------------------------------------------------------
// Draw or upload (VAEs): POST /reconstruct, POST /encode, then POST /generate with latents near the encoding

const drawRequests = new Latest();
const NEIGHBOURS = 8;
const pad = $("pad");
const pen = pad.getContext("2d");
let lastPoint = null;

function clearPad() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, pad.width, pad.height);
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function strokeTo(point) {
  pen.strokeStyle = "#fff";
  pen.lineWidth = pad.width / 12; // about the stroke of an MNIST digit
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(lastPoint.x, lastPoint.y);
  pen.lineTo(point.x, point.y);
  pen.stroke();
  lastPoint = point;
}

function startStroke(event) {
  if (event.button !== undefined && event.button !== 0) return;
  event.preventDefault();
  if (event.pointerId !== undefined) pad.setPointerCapture(event.pointerId);
  if (state.drawSource !== "pad") {
    clearPad();
    $("upload").value = "";
    state.drawSource = "pad";
  }
  lastPoint = padPoint(event);
  strokeTo(lastPoint);
}

function continueStroke(event) {
  if (!lastPoint) return;
  event.preventDefault();
  const points = event.getCoalescedEvents?.() ?? [event];
  for (const point of points.length ? points : [event]) strokeTo(padPoint(point));
}

function endStroke() {
  if (!lastPoint) return;
  lastPoint = null;
  scheduleReconstruct();
}

function touchPoint(handler) {
  return (event) => {
    const touch = event.changedTouches[0];
    if (!touch) return;
    event.preventDefault();
    handler({ clientX: touch.clientX, clientY: touch.clientY, preventDefault() {} });
  };
}

if (window.PointerEvent) {
  pad.addEventListener("pointerdown", startStroke);
  pad.addEventListener("pointermove", continueStroke);
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
} else {
  // Browsers without pointer events: the mouse and touch events they have instead.
  pad.addEventListener("mousedown", startStroke);
  window.addEventListener("mousemove", continueStroke);
  window.addEventListener("mouseup", endStroke);
  pad.addEventListener("touchstart", touchPoint(startStroke), { passive: false });
  pad.addEventListener("touchmove", touchPoint(continueStroke), { passive: false });
  pad.addEventListener("touchend", endStroke);
  pad.addEventListener("touchcancel", endStroke);
}

function padBlob() {
  return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
}

/** The image to send and how to send it: the pad (light on dark already) or the uploaded file. */
async function drawInput() {
  if (state.drawSource instanceof File) {
    return { blob: state.drawSource, name: state.drawSource.name, invert: $("invert").checked || undefined };
  }
  return { blob: await padBlob(), name: "drawing.png", invert: undefined };
}

function uploadForm(input) {
  const form = new FormData();
  form.append("image", input.blob, input.name);
  return form;
}

async function reconstruct() {
  if (!state.drawSource) {
    showError($("draw-error"), new RequestFailed("Draw something on the pad, or upload an image, first."));
    return;
  }
  const signal = drawRequests.start();
  const result = $("reconstruction-result");
  const input = await drawInput();
  const fields = { model: state.model, invert: input.invert };
  const reconstructUrl = `reconstruct?${query({ ...fields, compare: true })}`;
  clearError($("draw-error"));
  setBusy(result, true);
  try {
    const post = (url) => request(url, { method: "POST", body: uploadForm(input), signal });
    const [reconstruction, encoded] = await Promise.all([
      post(reconstructUrl).then((response) => response.blob()),
      post(`encode?${query(fields)}`).then((response) => response.json()),
    ]);
    const alt = `${input.name} as ${state.model} saw it, above its reconstruction`;
    showBlob($("reconstruction"), reconstruction, alt, reconstructUrl);
    state.encoding = encoded.images[0];
    await showNeighbours(signal);
  } catch (error) {
    showError($("draw-error"), error);
  } finally {
    if (drawRequests.isLast(signal)) setBusy(result, false);
  }
}

const scheduleReconstruct = debounce(reconstruct, 300);

/** Seeded uniform numbers in [0, 1) (mulberry32): a drawing always gets the same neighbours. */
function uniforms(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Points around the encoding in the latent space /generate takes (N(0, I)): its mean plus `spread` times
 * N(0, 1) noise per dimension. */
function neighbourLatents(encoding, spread, count) {
  const uniform = uniforms(1);
  const normal = () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  return Array.from({ length: count }, () => encoding.latent.map((mean) => mean + spread * normal()));
}

async function showNeighbours(signal) {
  if (!state.encoding) return;
  const spread = Number($("spread").value);
  const body = { model: state.model, latents: neighbourLatents(state.encoding, spread, NEIGHBOURS), cols: 4 };
  const response = await request("generate", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  const alt = `${NEIGHBOURS} images decoded from points near the latent of the input`;
  showBlob($("neighbours"), await response.blob(), alt, "generate");
}

async function updateNeighbours() {
  const signal = drawRequests.start();
  clearError($("draw-error"));
  try {
    await showNeighbours(signal);
  } catch (error) {
    showError($("draw-error"), error);
  }
}

function resetDrawing() {
  clearPad();
  state.drawSource = null;
  state.encoding = null;
  $("upload").value = "";
  clearImage($("reconstruction"));
  clearImage($("neighbours"));
  clearError($("draw-error"));
}

// -----------------------------------------------------------------------------------------------------------
// Text: POST /generate with `stream: true`, read as server-sent events from a fetch() stream

const textRequests = new Latest();

/** Each server-sent event of `response` as (name, parsed data), as it arrives. */
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

function appendText(text) {
  const output = $("text-output");
  $("text-continuation").append(text);
  output.scrollTop = output.scrollHeight;
}

function textStreaming(streaming) {
  setBusy($("text-output"), streaming);
  $("text-button").disabled = streaming;
  $("text-stop").disabled = !streaming;
}

async function generateText(event) {
  event.preventDefault();
  const signal = textRequests.start();
  const stream = state.capabilities.has("stream");
  const prompt = $("prompt").value;
  const seed = $("text-seed").value;
  const body = {
    model: state.model,
    prompt,
    max_new_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
    stream,
  };
  if (seed !== "") body.seed = Number(seed);
  $("text-prompt").textContent = prompt;
  $("text-continuation").textContent = "";
  $("text-status").textContent = "Generating…";
  clearError($("text-error"));
  textStreaming(true);
  try {
    const response = await request("generate", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: stream ? "text/event-stream" : "application/json",
      },
      body: JSON.stringify(body),
      signal,
    });
    const seeds = response.headers.get("X-Seeds");
    if (!stream) {
      const [completion] = (await response.json()).completions;
      appendText(completion.text);
      const ending = `${completion.tokens} characters, ended by ${completion.finish_reason}`;
      $("text-status").textContent = `Seed ${seeds}: ${ending}.`;
      return;
    }
    await readEvents(response, (name, data) => {
      if (name === "token") {
        appendText(data.text);
      } else if (name === "finish") {
        $("text-status").textContent = `Seed ${seeds}: ended by ${data.finish_reason}.`;
      } else if (name === "error") {
        showError($("text-error"), new RequestFailed(data.error?.message ?? "generation failed"));
      }
    });
  } catch (error) {
    const stopped = error?.name === "AbortError";
    if (!stopped || textRequests.isLast(signal)) $("text-status").textContent = stopped ? "Stopped." : "";
    showError($("text-error"), error);
  } finally {
    if (textRequests.isLast(signal)) textStreaming(false);
  }
}

function resetText() {
  $("text-prompt").textContent = "";
  $("text-continuation").textContent = "";
  $("text-status").textContent = "";
  clearError($("text-error"));
  textStreaming(false);
}

// -----------------------------------------------------------------------------------------------------------
// Wiring

function showValue(inputId, outputId) {
  $(outputId).textContent = Number($(inputId).value).toFixed(2);
}

$("model").addEventListener("change", selectModel);
$("api-key").addEventListener("change", loadModels);
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  loadModels();
});
for (const id of ["seed", "count", "truncation", "label"]) $(id).addEventListener("input", scheduleImages);
$("images-form").addEventListener("submit", (event) => {
  event.preventDefault();
  updateImages();
});
$("truncation").addEventListener("input", () => showValue("truncation", "truncation-value"));
$("random-seed").addEventListener("click", () => {
  $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
  updateImages();
});
$("sound-form").addEventListener("submit", generateSound);
$("walk-form").addEventListener("submit", walk);
$("walk-slider").addEventListener("input", showFrame);
$("clear-pad").addEventListener("click", resetDrawing);
$("reconstruct-button").addEventListener("click", reconstruct);
$("upload").addEventListener("change", () => {
  const [file] = $("upload").files;
  if (!file) return;
  clearPad();
  state.drawSource = file;
  reconstruct();
});
$("invert").addEventListener("change", () => {
  if (state.drawSource instanceof File) reconstruct();
});
$("spread").addEventListener("input", () => showValue("spread", "spread-value"));
$("spread").addEventListener("input", debounce(updateNeighbours, 250));
$("text-form").addEventListener("submit", generateText);
$("text-stop").addEventListener("click", () => textRequests.stop());
$("temperature").addEventListener("input", () => showValue("temperature", "temperature-value"));

clearPad();
loadModels();
