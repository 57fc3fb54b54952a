// The llava-mini page: chat with streamed answers (POST /v1/chat/completions, SSE) and, per picture, what
// the one vision token sees (POST /v1/inspect: the compressor's attention and token counts). Plain JS, no build.
"use strict";

// Held-out pictures and clips of the synthetic world the shipped model was trained on (`llava-mini data synth
// --seed 2027 --images 12 --videos 8`: images 3, 10, 11 and videos 0, 5), each with a question from that set.
const EXAMPLES = [
  {file: "example-count.png", label: "shapes", question: "How many objects are there?"},
  {file: "example-position.png", label: "position", question: "Is the blue circle left, right, above or below the orange star?"},
  {file: "example-word.png", label: "a word", question: "Read the word in the image."},
  {file: "example-motion.mp4", label: "motion clip", question: "Where is the cross moving?"},
  {file: "example-order.mp4", label: "order clip", question: "Which shape appears last?"},
];

const $ = (id) => document.getElementById(id);
const log = $("log");
const question = $("question");
let history = [];        // OpenAI messages sent so far (answered turns only)
let attachment = null;   // {kind: "image" | "video", url: data URL, name}
let modelId = null;
let controller = null;   // AbortController of the answer being streamed
let turns = 0;           // questions asked on this page (answers are #answer-1, #answer-2, ...)
let conversation = 0;    // bumped by "New chat": an answer of an earlier conversation does not join the new one

async function model() {
  if (!modelId) {
    const response = await fetch("/v1/models");
    modelId = (await readJSON(response)).data[0].id;
  }
  return modelId;
}

async function readJSON(response) {
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON: reported below */ }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : (text || response.statusText);
    throw new Error(`${message} (HTTP ${response.status})`);
  }
  return body;
}

function readAsDataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function mediaElement(kind, url, label, {controls = true} = {}) {
  // An <img> or <video>; if the browser cannot show the file, a note says so (the server may still read it).
  const element = document.createElement(kind === "video" ? "video" : "img");
  if (kind === "video") {
    Object.assign(element, {muted: true, loop: true, playsInline: true, controls, autoplay: !controls});
    element.setAttribute("aria-label", label);
  } else element.alt = label;
  element.addEventListener("error", () => {
    const note = document.createElement("span");
    note.className = "unshown";
    note.textContent = `${label}: this browser cannot show the file`;
    element.replaceWith(note);
  }, {once: true});
  element.src = url;
  return element;
}

// Attachments ------------------------------------------------------------------------------------------
function kindOf(file) {
  if (file.type.startsWith("video/") || /\.(mp4|webm|mov|mkv|avi|m4v)$/i.test(file.name)) return "video";
  return "image";
}

async function attach(file) {
  attachment = {kind: kindOf(file), url: await readAsDataURL(file), name: file.name || "pasted file"};
  const preview = $("preview");
  preview.replaceChildren(mediaElement(attachment.kind, attachment.url, `Preview of ${attachment.name}`));
  $("attachment-name").textContent = `${attachment.kind === "video" ? "Video" : "Image"}: ${attachment.name}`;
  $("attachment").hidden = false;
}

function detach() {
  attachment = null;
  $("preview").replaceChildren();
  $("attachment").hidden = true;
  $("file").value = ""; $("file-inline").value = "";
}

for (const input of [$("file"), $("file-inline")]) {
  input.addEventListener("change", () => { if (input.files[0]) attach(input.files[0]).catch(showError); });
}
$("remove").onclick = detach;

const dropzone = $("dropzone");
for (const target of [dropzone, log]) {
  target.addEventListener("dragover", (event) => { event.preventDefault(); dropzone.classList.add("over"); });
  target.addEventListener("dragleave", () => dropzone.classList.remove("over"));
  target.addEventListener("drop", (event) => {
    event.preventDefault();
    dropzone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) attach(file).catch(showError);
  });
}

function showExamples() {
  const list = $("examples");
  for (const example of EXAMPLES) {
    const kind = example.file.endsWith(".mp4") ? "video" : "image";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.dataset.file = example.file;
    button.setAttribute("aria-label", `Example ${kind}: ${example.label}. Asks: ${example.question}`);
    const thumb = mediaElement(kind, `/static/${example.file}`, example.label, {controls: false});
    thumb.setAttribute("aria-hidden", "true");
    if (kind === "video") { thumb.autoplay = false; thumb.preload = "metadata"; }
    const caption = document.createElement("span");
    caption.textContent = example.label;
    button.append(thumb, caption);
    button.onclick = async () => {
      try {
        const response = await fetch(`/static/${example.file}`);
        if (!response.ok) throw new Error(`could not load the example ${example.file} (HTTP ${response.status})`);
        const blob = await response.blob();
        await attach(new File([blob], example.file, {type: blob.type || (kind === "video" ? "video/mp4" : "image/png")}));
        question.value = example.question;
        question.focus();
      } catch (error) { showError(error); }
    };
    const item = document.createElement("li");
    item.append(button);
    list.append(item);
  }
}

// Messages -----------------------------------------------------------------------------------------------
function addMessage(role, text) {
  $("empty")?.remove();
  const node = $("message-template").content.firstElementChild.cloneNode(true);
  node.classList.add(role);
  node.setAttribute("aria-label", role === "user" ? "You" : "llava-mini");
  node.querySelector(".text").textContent = text;
  log.append(node);
  node.scrollIntoView({block: "end"});
  return node;
}

function showError(error, node = null) {
  const target = node || addMessage("assistant", "");
  target.classList.add("error");
  target.dataset.state = "error";
  target.setAttribute("role", "alert");
  target.querySelector(".text").textContent = String(error.message || error);
  return target;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  document.body.dataset.busy = busy ? "true" : "false";
}

// What the token sees ------------------------------------------------------------------------------------
function heatColour(value) {
  // A perceptual blue -> cyan -> yellow -> red ramp for value in [0, 1].
  const stops = [[0, [40, 40, 160]], [0.35, [0, 170, 220]], [0.65, [250, 220, 40]], [1, [230, 30, 30]]];
  for (let i = 1; i < stops.length; i++) {
    const [b, hi] = stops[i], [a, lo] = stops[i - 1];
    if (value <= b) {
      const t = (value - a) / (b - a);
      return lo.map((c, k) => Math.round(c + t * (hi[k] - c)));
    }
  }
  return stops[stops.length - 1][1];
}

function drawHeatmap(canvas, pictureURL, weights, grid) {
  return new Promise((resolve, reject) => {
    const picture = new Image();
    picture.onload = () => {
      const size = 224;
      canvas.width = size; canvas.height = size;
      const context = canvas.getContext("2d");
      context.drawImage(picture, 0, 0, size, size);
      const peak = Math.max(...weights) || 1;
      const cells = document.createElement("canvas");
      cells.width = grid; cells.height = grid;
      const pixels = cells.getContext("2d").createImageData(grid, grid);
      weights.forEach((weight, index) => {
        const share = weight / peak;
        const [r, g, b] = heatColour(share);
        pixels.data.set([r, g, b, Math.round(40 + 160 * share)], index * 4);
      });
      cells.getContext("2d").putImageData(pixels, 0, 0);
      context.imageSmoothingEnabled = true;
      context.imageSmoothingQuality = "high";
      context.drawImage(cells, 0, 0, size, size);
      canvas.dataset.drawn = "true";
      resolve();
    };
    picture.onerror = () => reject(new Error("the picture of the attention map could not be shown"));
    picture.src = pictureURL;
  });
}

async function showAttention(userNode, medium) {
  const box = document.createElement("div");
  box.className = "sees";
  const title = document.createElement("h3");
  const frames = medium.frames.length;
  title.textContent = medium.queries === 1
    ? `What the token sees${frames > 1 ? `: one token per frame, ${frames} frames` : ""}`
    : `What the ${medium.queries} tokens see${frames > 1 ? `, per frame (${frames} frames)` : ""}`;
  const strip = document.createElement("div");
  strip.className = "heatmaps " + (frames > 1 ? "frames" : medium.queries > 1 ? "queries" : "single");
  const drawn = [];
  medium.frames.forEach((frame, f) => {
    frame.attention.forEach((weights, q) => {
      const figure = document.createElement("figure");
      const canvas = document.createElement("canvas");
      const where = [frames > 1 ? `frame ${f + 1}` : "", medium.queries > 1 ? `query ${q + 1}` : ""].filter(Boolean).join(", ");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", `Compressor attention over the ${medium.type === "video_url" ? "frame" : "picture"}${where ? ` (${where})` : ""}; warmer is more attention`);
      figure.append(canvas);
      if (where) { const caption = document.createElement("figcaption"); caption.textContent = where; figure.append(caption); }
      strip.append(figure);
      drawn.push(drawHeatmap(canvas, frame.picture, weights, medium.grid));
    });
  });
  const note = document.createElement("p");
  note.className = "note";
  note.textContent = `Where the compression ${medium.queries === 1 ? "query" : "queries"} looked over the ${medium.grid}×${medium.grid} patch grid (the picture padded to a square, as the model reads it).`;
  box.append(title, strip, note);
  userNode.append(box);
  await Promise.all(drawn);
  box.dataset.drawn = "true";
}

function showStats(answerNode, inspection, firstTokenMs) {
  const list = answerNode.querySelector(".stats") || document.createElement("ul");
  list.className = "stats";
  list.setAttribute("aria-label", "About this answer");
  const items = [];
  if (inspection) {
    const saved = inspection.baseline_vision_tokens;
    items.push(`<strong>${inspection.vision_tokens}</strong> vision token${inspection.vision_tokens === 1 ? "" : "s"} in the LLM's prompt` +
      (saved ? ` (LLaVA-1.5-style: <strong>${saved}</strong>)` : ""));
    items.push(`prompt <strong>${inspection.prompt_tokens}</strong> tokens`);
    list.dataset.visionTokens = inspection.vision_tokens;
    list.dataset.baselineVisionTokens = saved;
    list.dataset.promptTokens = inspection.prompt_tokens;
  }
  if (firstTokenMs !== null) {
    items.push(`first token after <strong>${(firstTokenMs / 1000).toFixed(2)} s</strong>`);
    list.dataset.firstTokenMs = Math.round(firstTokenMs);
  }
  list.innerHTML = items.map((item) => `<li>${item}</li>`).join("");
  answerNode.append(list);
}

// Asking -------------------------------------------------------------------------------------------------
async function inspect(messages) {
  const response = await fetch("/v1/inspect", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({model: await model(), messages}),
  });
  return readJSON(response);
}

function settings() {
  const maxTokens = Number.parseInt($("max-tokens").value, 10);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new Error("Max tokens must be a whole number of at least 1.");
  return {max_tokens: maxTokens, temperature: Number.parseFloat($("temperature").value)};
}

async function streamAnswer(messages, answer, signal, options, onFirstToken) {
  const textNode = answer.querySelector(".text");
  const started = performance.now();
  let firstTokenMs = null;
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: {"Content-Type": "application/json"}, signal,
    body: JSON.stringify({model: await model(), messages, stream: true, ...options}),
  });
  if (!response.ok) await readJSON(response);  // throws the server's error message
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const raw of events) {
      const data = raw.replace(/^data: /, "");
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const piece = chunk.choices?.[0]?.delta?.content;  // a chunk may carry no choice (usage)
      if (piece) {
        if (firstTokenMs === null) { firstTokenMs = performance.now() - started; onFirstToken(); }
        textNode.textContent += piece;
      }
    }
  }
  return firstTokenMs;
}

async function ask(event) {
  event.preventDefault();
  if (controller) return;
  const text = question.value.trim();
  if (!text) { question.focus(); return; }
  let options;
  try { options = settings(); } catch (error) { showError(error); return; }

  const content = [];
  const userNode = addMessage("user", text);
  if (attachment) {
    const holder = document.createElement("div");
    holder.className = "media";
    holder.append(mediaElement(attachment.kind, attachment.url, `${attachment.kind}: ${attachment.name}`, {controls: false}));
    userNode.querySelector(".bubble").prepend(holder);
    content.push(attachment.kind === "video"
      ? {type: "video_url", video_url: {url: attachment.url}}
      : {type: "image_url", image_url: {url: attachment.url}});
  }
  content.push({type: "text", text});
  const newMedia = content.length - 1;
  const messages = [...history, {role: "user", content}];
  const asked = conversation;
  question.value = "";
  detach();

  const answer = addMessage("assistant", "");
  answer.id = `answer-${++turns}`;
  answer.dataset.state = "streaming";
  controller = new AbortController();
  setBusy(true);

  // What the token sees is asked for once the first token is out (or the answer ended), so that it does not
  // compete with the answer for the model: the time to first token is the answer's own.
  let inspection = null;
  const startInspection = () => {
    inspection ??= inspect(messages).then(async (result) => {
      for (const medium of result.media.slice(result.media.length - newMedia)) await showAttention(userNode, medium);
      return {result, error: null};
    }).catch((error) => ({result: null, error}));
  };

  let firstTokenMs = null;
  try {
    firstTokenMs = await streamAnswer(messages, answer, controller.signal, options, startInspection);
    answer.dataset.state = "done";
  } catch (error) {
    if (error.name === "AbortError") answer.dataset.state = "stopped";
    else if (error instanceof TypeError) showError(new Error(`Could not reach the server (${error.message}).`), answer);
    else showError(error, answer);
  }
  const reply = answer.querySelector(".text").textContent;
  if (answer.dataset.state !== "error" && reply && asked === conversation) {
    history = [...messages, {role: "assistant", content: reply}];
  }
  controller = null;
  setBusy(false);
  question.focus();
  if (answer.dataset.state !== "error") {  // a refused question's error already says what was wrong
    startInspection();
    const {result, error} = await inspection;
    if (error && newMedia) {
      const note = document.createElement("p");
      note.className = "sees note";
      note.textContent = `Attention not shown: ${error.message}`;
      userNode.append(note);
    }
    showStats(answer, result, firstTokenMs);
  }
  answer.dataset.done = "true";
}

// The conversation follows what is added (text, pictures, heat maps) unless the reader scrolled up.
let followLog = true;
const toBottom = () => { if (followLog) log.scrollTop = log.scrollHeight; };
log.addEventListener("scroll", () => { followLog = log.scrollHeight - log.scrollTop - log.clientHeight < 48; });
new MutationObserver(toBottom).observe(log, {childList: true, subtree: true, characterData: true});
for (const event of ["load", "loadedmetadata"]) log.addEventListener(event, toBottom, true);

$("ask").addEventListener("submit", ask);
question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); $("ask").requestSubmit(); }
});
$("stop").onclick = () => { if (controller) controller.abort(); };
$("reset").onclick = () => {
  if (controller) controller.abort();
  conversation += 1;
  history = [];
  log.replaceChildren();
  const empty = document.createElement("p");
  empty.id = "empty"; empty.className = "empty";
  empty.textContent = "New conversation. Attach an image or a video, then ask a question.";
  log.append(empty);
};
$("temperature").addEventListener("input", () => { $("temperature-value").textContent = $("temperature").value; });

showExamples();
setBusy(false);
