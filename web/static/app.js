// The search page: the query lives in the URL (a link reproduces it; back and forward replay it), results
// come from /api/search, thumbnails from /thumbnails/<id>. Nothing is loaded from any other host.
"use strict";

const SLIDER_SETTLE_MS = 500;
const $ = (id) => document.getElementById(id);

// A query is a list of parts {kind: "text" | "id" | "picture", value, weight}. A picture part's value is a
// key into `pictures` (kept in sessionStorage too, so that a reload of the same tab still has it). A link's
// weights and minimum score stay the text it spells ("" when there is no minimum score): the web tier
// parses them, so that its refusal names what was typed, and takes any minimum score from -1 to 1.
let query = { parts: [], minScore: "" };
let shown = 0;
let latest = 0; // the newest request; answers to older ones are dropped
let sliderSettling = 0; // the timer that searches with the minimum score once the slider stops moving
let settlingMinScore = null; // the value the slider was moved to, until a search takes it
const pictures = new Map();

// ---- URL <-> query ----------------------------------------------------------------------------------------

function toParams(q) {
  const params = new URLSearchParams();
  for (const part of q.parts) {
    if (part.kind === "picture") params.append("picture", `${part.weight}:${part.value}`);
    else if (part.weight === 1) params.append(part.kind === "text" ? "q" : "like", part.value);
    else params.append("part", `${part.kind}:${part.weight}:${part.value}`);
  }
  if (q.minScore !== "") params.set("min_score", q.minScore);
  return params;
}

// The part each parameter of a link spells (null: none). A Map: no parameter name reaches Object's own keys.
const PART_PARAMS = new Map([
  ["q", (value) => ({ kind: "text", value, weight: 1 })],
  ["like", (value) => ({ kind: "id", value, weight: 1 })],
  [
    "part",
    (spec) => {
      const [kind, weight, ...rest] = spec.split(":");
      return (kind === "text" || kind === "id") && rest.length ? { kind, value: rest.join(":"), weight } : null;
    },
  ],
  [
    "picture",
    (spec) => {
      const [weight, key] = spec.split(":");
      return { kind: "picture", value: key, weight };
    },
  ],
]);

// In the link's order, which is the user's: a reload shows the parts as they were added.
function fromParams(params) {
  const parts = [...params].map(([name, value]) => PART_PARAMS.get(name)?.(value)).filter(Boolean);
  return { parts, minScore: params.get("min_score") ?? "" };
}

function apiParams(q, offset) {
  const params = toParams(q);
  params.delete("picture");
  const picture = q.parts.find((part) => part.kind === "picture");
  if (picture) params.set("picture_weight", String(picture.weight));
  // No top_k: the page asks for the web tier's --page-size, and the answer says what it was.
  params.set("offset", String(offset));
  return params;
}

// ---- pictures uploaded, dropped or pasted -----------------------------------------------------------------

// The keys of the pictures kept in sessionStorage, oldest first.
const KEPT_PICTURES = "pictures";

function keptPictures() {
  return JSON.parse(sessionStorage.getItem(KEPT_PICTURES) ?? "[]");
}

// The tab's storage holds a few MiB: the oldest pictures make room for a new one, so that the newest links
// survive a reload. A picture that does not fit even alone is not kept (false: renderParts says so), and the
// pictures removed to make room for it come back.
function keepPicture(key, saved) {
  const kept = keptPictures();
  const madeRoom = new Map();
  for (;;) {
    try {
      sessionStorage.setItem(`picture:${key}`, saved);
      sessionStorage.setItem(KEPT_PICTURES, JSON.stringify([...kept, key]));
      return true;
    } catch (error) {
      sessionStorage.removeItem(`picture:${key}`);
      if (error.name !== "QuotaExceededError" || !kept.length) break;
      const oldest = `picture:${kept.shift()}`;
      madeRoom.set(oldest, sessionStorage.getItem(oldest));
      sessionStorage.removeItem(oldest);
    }
  }
  madeRoom.forEach((value, name) => sessionStorage.setItem(name, value));
  return false;
}

function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// Larger files cannot fit the tab's storage (its text takes 4/3 of their size): they are never read into
// memory as text, so that a film dropped by mistake is only sent (and refused), not copied in the tab.
const KEEPABLE_BYTES = 4 * 1024 * 1024;

// `kept`: null until the server has taken the picture (a file it refuses never reaches the tab's storage),
// then whether the tab's storage holds it. `drawable`: null until the browser has tried to draw it.
function rememberPicture(key, blob, name, kept = null) {
  pictures.set(key, { blob, name, url: URL.createObjectURL(blob), kept, drawable: null });
  return pictures.get(key);
}

async function keepAccepted(key, stored) {
  if (stored.kept !== null) return;
  stored.kept = true; // while it is read: a second answer (Load more) must not keep it twice
  const { blob, name } = stored;
  stored.kept = blob.size <= KEEPABLE_BYTES && keepPicture(key, JSON.stringify({ name, data: await dataUrl(blob) }));
  if (!stored.kept) renderParts(); // its note
}

function recallPicture(key) {
  if (pictures.has(key)) return pictures.get(key);
  const saved = sessionStorage.getItem(`picture:${key}`);
  if (!saved) return null;
  const { name, data } = JSON.parse(saved);
  const [header, base64] = data.split(",");
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return rememberPicture(key, new Blob([bytes], { type: header.slice(5).split(";")[0] }), name, true);
}

// Only the query's own pictures stay in memory: the others are in the tab's storage, or gone.
function forgetOtherPictures() {
  for (const [key, stored] of pictures) {
    if (query.parts.some((part) => part.kind === "picture" && part.value === key)) continue;
    URL.revokeObjectURL(stored.url);
    pictures.delete(key);
  }
}

// Any file is sent: the server tells a picture by its bytes (a JPEG named photo.bin is one), not by the type
// the browser guesses from the name, and its refusal says why.
function searchByPicture(file) {
  if (!file) return;
  const key = Math.random().toString(16).slice(2, 10);
  rememberPicture(key, file, file.name || "pasted picture");
  navigate({ parts: [{ kind: "picture", value: key, weight: 1 }], minScore: query.minScore });
}

// ---- searching ----------------------------------------------------------------------------------------------

function navigate(next) {
  // A search started before the slider settled takes the value it shows (it searched without it).
  if (settlingMinScore !== null) next = { ...next, minScore: settlingMinScore };
  const params = toParams(next);
  // The same query again (Enter twice) searches again, but is not a second history entry.
  const same = params.toString() === new URLSearchParams(location.search).toString();
  history[same ? "replaceState" : "pushState"](null, "", `?${params}`);
  show(next);
}

function show(next) {
  clearTimeout(sliderSettling); // a newer query wins over a slider move that has not settled
  settlingMinScore = null;
  query = next;
  forgetOtherPictures();
  const single = query.parts.length === 1 && query.parts[0].kind === "text";
  $("query").value = single ? query.parts[0].value : ""; // never a text that is not the query
  document.title = query.parts.length ? `${query.parts.map(signedLabel).join(", ")} — imagesearch` : "imagesearch";
  $("min-score").value = String(Number(query.minScore) || 0); // a range input clamps what it cannot show
  $("min-score-value").textContent = query.minScore || "off";
  renderParts();
  shown = 0;
  hideMore(); // the previous query's next page is no page of this one
  if (query.parts.length) search(false);
  else clearResults();
}

function clearResults() {
  latest += 1; // an answer still on its way is not for this empty query
  setBusy(false);
  clearHits();
  $("message").textContent = "";
  $("status").textContent = "";
  loadStatus();
}

// While a search runs its status says so and the results it will replace are dimmed (CSS).
function setBusy(busy) {
  if (busy) {
    $("results").setAttribute("aria-busy", "true");
    $("status").textContent = "Searching…";
  } else {
    $("results").removeAttribute("aria-busy");
  }
}

async function search(append) {
  const request = ++latest;
  setBusy(true);
  try {
    const picture = query.parts.find((part) => part.kind === "picture");
    const stored = picture && recallPicture(picture.value);
    if (picture && !stored) {
      refused("The picture of this link is not in this browser any more: search by picture again.");
      return;
    }
    const init = stored
      ? { method: "POST", body: stored.blob, headers: { "Content-Type": stored.blob.type || "application/octet-stream" } }
      : { headers: { Accept: "application/json" } };
    const response = await fetch(`/api/search?${apiParams(query, append ? shown : 0)}`, init);
    const body = await response.json().catch(() => ({})); // not the API's answer: a proxy's page, say
    if (request !== latest) return;
    if (!response.ok) {
      failed(response.status, body?.error, stored);
      return;
    }
    hideBanner();
    renderHits(body.hits, append, body.top_k);
    if (stored) await keepAccepted(picture.value, stored);
    const stats = await loadStatus();
    if (request === latest) describe(body, stats);
  } catch {
    if (request === latest) failed(0);
  } finally {
    if (request === latest) setBusy(false); // however it ended
  }
}

async function loadStatus() {
  try {
    const response = await fetch("/api/status", { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      failed(response.status, body?.error);
      return null;
    }
    hideBanner();
    if (!query.parts.length) $("status").textContent = collectionLine(body);
    return body;
  } catch {
    failed(0);
    return null;
  }
}

function collectionLine(stats) {
  return `${stats.count.toLocaleString()} pictures in “${stats.collection}” · model ${stats.model}`;
}

function describe(body, stats) {
  const hits = shown === 1 ? "1 hit" : `${shown} hits`;
  const cut = query.minScore ? ` scoring at least ${query.minScore}` : "";
  const collection = stats ? `${collectionLine(stats)} · ` : "";
  $("status").textContent = `${collection}${hits}${cut} · ${body.took_ms} ms`;
  if (shown === 0) showMessage(query.minScore ? "No picture scores that high: lower the minimum score." : "No pictures found.");
}

// status 0: no answer came. `picture`: the query's picture as sent ({name, blob}), if it has one.
function failed(status, error = "", picture = null) {
  if (!FAILURES.has(status) && status < 500) {
    refused(refusalWords(error, picture));
    return;
  }
  $("banner").textContent = FAILURES.get(status) ?? FAILED;
  $("banner").hidden = false;
  // It may pass: the hits shown stay, and so does their "Load more", to try again.
  $("status").textContent = "";
  if (!shown) clearHits();
}

function refused(message) {
  showMessage(message);
  clearAnswer();
}

// The previous search's hits and status line ("24 hits · 30 ms") do not answer this one.
function clearAnswer() {
  $("status").textContent = "";
  if (!shown) clearHits();
  hideMore();
}

function hideBanner() {
  $("banner").hidden = true;
}

// #message is a live region that is always rendered (empty when there is nothing to say): a screen reader
// does not announce a text set while its region is hidden.
function showMessage(text) {
  $("message").textContent = text;
}

// Keyboard focus on a removed or hidden control would fall to the page's body: the results list takes it.
function clearHits() {
  const list = $("results");
  if (list.contains(document.activeElement)) list.focus();
  list.replaceChildren();
}

function hideMore() {
  if ($("more") === document.activeElement) $("results").focus();
  $("more").hidden = true;
}

// ---- what went wrong, in the user's words -----------------------------------------------------------------

// The API's errors are for programs: they name its parameters and the search request's fields
// ("parts[0].text"), count bytes, and give a failing tier's status code. The page says what they
// mean to the person searching: a failure that may pass (no answer, 408, 5xx) by its status alone, a refusal
// (any other 4xx) by the first of REFUSALS that matches it.
const FAILURES = new Map([
  [0, "The page cannot reach its server — check the connection and try again."],
  [408, "The picture took too long to upload — try again."],
  [503, "The search service is unavailable — try again shortly."],
  [504, "The search service took too long to answer — try again shortly."],
]);
const FAILED = "The search failed on the server — try again later.";
// Each rule's words get the match and the query's picture as sent: `name`, quoted ("The file" when the query
// has none to name), and its `bytes` (null: not known).
const REFUSALS = [
  [/\.text is empty/, () => "The query text is empty."],
  [/text \(.*\) has no words/, () => "The query text has no words: only spaces, control characters or markup."],
  [
    /weight = ['"]?(.*?)['"]? is not a (?:finite )?number/,
    ([, weight]) => `A weight is a number such as 1 or -0.5, not “${weight}”.`,
  ],
  [
    /min_score = ['"]?(.*?)['"]? is (?:not a number|outside)/,
    ([, score]) => `The minimum score is a number from -1 to 1, not “${score}”.`,
  ],
  [/offset = \d+ is outside/, () => "No more results can be loaded for this search."],
  [/\.id = ['"](.*)['"] is not an id/, ([, id]) => `“${id}” is not the id of a picture.`],
  [/\.id = (\w+) is not stored/, ([, id]) => `The picture ${id.slice(0, 10)}… is not in the collection any more.`],
  [
    /image: not a recognised image format \((.*)\)/,
    ([, formats], { name }) => `${name} is not a picture the search can read (${formats}).`,
  ],
  [
    /image: (\d+)x(\d+) pixels is over the limit of (\d+) pixels/,
    ([, width, height, limit], { name }) =>
      `${name} has too many pixels: ${width}x${height}; the limit is ${Number(limit) / 1e6} million.`,
  ],
  [
    /image: a HEIC photo/,
    (_, { name }) => `${name} is a HEIC photo, which the search cannot read: convert it to JPEG.`,
  ],
  [
    /image: (\d+) bytes is over the limit of (\d+) bytes/,
    ([, bytes, limit], { name }) => `${name} is ${size(Number(bytes))}; the limit is ${size(Number(limit))}.`,
  ],
  [/image: /, (_, { name }) => `${name} cannot be read as a picture.`],
  [
    /^the picture is over the limit of (\d+) bytes/,
    ([, limit], { bytes }) => `The picture is ${size(bytes)}; the limit is ${size(Number(limit))}.`,
  ],
  [/^no picture/, (_, { name }) => `${name} is empty.`],
  [/cancel out/, () => "The parts of the query cancel out: change a weight or remove a part."],
  [/weights are 0/, () => "Every weight of the query is 0: give a part another weight."],
  [/(\d+) parts is over the limit of (\d+)/, ([, parts, most]) => `The query has ${parts} parts; the most is ${most}.`],
  [/collection ['"](.*)['"] does not exist/, ([, name]) => `The collection “${name}” holds no pictures yet.`],
  [
    /holds vectors of model/,
    () => "The collection was made with another model than the search service's encoder runs: tell its operator.",
  ],
];

// `error`: the API's message (anything else, when the answer was not the API's, counts as none).
function refusalWords(error, picture) {
  const message = typeof error === "string" ? error : "";
  const sent = picture ? { name: `“${picture.name}”`, bytes: picture.blob.size } : { name: "The file", bytes: null };
  for (const [pattern, words] of REFUSALS) {
    const match = message.match(pattern);
    if (match) return words(match, sent);
  }
  // One the page does not know (a newer service's, say): its words still say more than none.
  return message ? `The search was refused: ${message}` : "The search was refused.";
}

const NAMED_ESCAPES = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };

// A stored name as the command line shows it: control and invisible characters escaped (\u202e, say, the
// right-to-left override that shows "gnp.evil.png" as "gnp.live.png").
function visible(text) {
  return text.replace(/[\p{C}\p{Z}]/gu, (char) => {
    if (char === " ") return char;
    if (char in NAMED_ESCAPES) return NAMED_ESCAPES[char];
    const code = char.codePointAt(0);
    const [prefix, digits] = code < 0x100 ? ["\\x", 2] : code < 0x10000 ? ["\\u", 4] : ["\\U", 8];
    return prefix + code.toString(16).padStart(digits, "0");
  });
}

// "12.3 MB", "195.3 KB"
function size(bytes) {
  const [amount, unit] = bytes < 1024 * 1024 ? [bytes / 1024, "KB"] : [bytes / (1024 * 1024), "MB"];
  return `${Number(amount.toFixed(1))} ${unit}`;
}

// ---- rendering ----------------------------------------------------------------------------------------------

function renderHits(hits, append, pageSize) {
  const list = $("results");
  if (!append) clearHits();
  $("message").textContent = "";
  const template = $("hit-template").content.firstElementChild;
  for (const stored of hits) {
    const hit = { ...stored, name: visible(stored.name), uri: visible(stored.uri) };
    const card = template.cloneNode(true);
    card.dataset.id = hit.id;
    const image = card.querySelector(".thumb");
    image.alt = hit.name;
    thumbnailInto(image, hit.thumbnail, hit.name);
    const name = card.querySelector(".name");
    name.textContent = hit.name;
    name.title = hit.uri;
    card.querySelector(".score").textContent = hit.score.toFixed(3);
    const like = card.querySelector(".like");
    like.setAttribute("aria-label", `More like ${hit.name}`);
    like.addEventListener("click", () => {
      rememberName(hit);
      navigate({ parts: [{ kind: "id", value: hit.id, weight: 1 }], minScore: query.minScore });
    });
    const unlike = card.querySelector(".unlike");
    unlike.setAttribute("aria-label", `Less like ${hit.name}: move the results away from it`);
    unlike.addEventListener("click", () => {
      rememberName(hit);
      addPart({ kind: "id", value: hit.id, weight: -1 });
    });
    list.append(card);
  }
  shown = list.children.length;
  if (hits.length < pageSize) hideMore();
  else $("more").hidden = false;
}

// The stored picture's thumbnail from `url` into `image`; where it has none, a placeholder instead.
function thumbnailInto(image, url, name) {
  image.addEventListener("error", () => image.replaceWith(placeholder("no thumbnail", name)), { once: true });
  image.src = url;
  return image;
}

// Where a picture cannot be shown, a box that says so, named as the picture would have been.
function placeholder(text, name) {
  const box = document.createElement("div");
  box.className = "placeholder";
  box.setAttribute("role", "img");
  box.setAttribute("aria-label", `${text}: ${name}`);
  box.textContent = text;
  return box;
}

// The browser cannot draw every file the server reads (TIFF), nor one that is no picture: such a part shows a
// placeholder, never a broken image (the preview stays hidden until it has loaded).
function previewOf(stored) {
  if (stored.drawable === false) return placeholder("no preview", stored.name);
  const image = document.createElement("img");
  image.alt = "";
  image.hidden = !stored.drawable;
  image.addEventListener("load", () => {
    stored.drawable = true;
    image.hidden = false;
  });
  image.addEventListener("error", () => {
    stored.drawable = false;
    image.replaceWith(previewOf(stored));
  });
  image.src = stored.url;
  return image;
}

function partLabel(part) {
  if (part.kind === "text") return part.value;
  if (part.kind === "picture") return recallPicture(part.value)?.name ?? "your picture";
  return sessionStorage.getItem(`name:${part.value}`) ?? `picture ${part.value.slice(0, 10)}…`;
}

// The file name of a picture liked or unliked, for its part's label, in the tab's storage: a reload keeps it.
function rememberName(hit) {
  try {
    sessionStorage.setItem(`name:${hit.id}`, hit.name);
  } catch {
    // The storage is full (of pictures): the part is named by the start of its id.
  }
}

function signedLabel(part) {
  return part.weight < 0 ? `not ${partLabel(part)}` : partLabel(part);
}

function renderParts() {
  const mixed = query.parts.length > 1 || (query.parts.length === 1 && query.parts[0].kind !== "text");
  $("query-parts").hidden = !mixed;
  const list = $("parts");
  // Focus on a control of a part (× pressed, a weight entered) moves to the same place in the new list.
  const controls = () => [...list.querySelectorAll("input, button")];
  const focused = controls().indexOf(document.activeElement);
  list.replaceChildren();
  query.parts.forEach((part, index) => {
    const item = document.createElement("li");
    item.className = part.weight < 0 ? "part negative" : "part";
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = { text: "text", id: "like", picture: "picture" }[part.kind];
    item.append(kind);
    const stored = part.kind === "picture" && recallPicture(part.value);
    if (stored) {
      item.append(previewOf(stored));
      if (stored.kept === false) item.append(notKeptNote());
    }
    if (part.kind === "id") {
      const thumbnail = Object.assign(document.createElement("img"), { alt: "" });
      item.append(thumbnailInto(thumbnail, `/thumbnails/${encodeURIComponent(part.value)}`, partLabel(part)));
    }
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = partLabel(part);
    label.title = partLabel(part); // the whole text, where CSS cuts it short
    const weight = document.createElement("input");
    weight.type = "number";
    weight.step = "0.5";
    weight.value = String(part.weight);
    weight.setAttribute("aria-label", `Weight of ${partLabel(part)} (negative: away from it)`);
    weight.addEventListener("change", () => {
      const parts = query.parts.map((p, i) => (i === index ? { ...p, weight: Number(weight.value) } : p));
      navigate({ ...query, parts });
    });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove ${partLabel(part)} from the query`);
    remove.addEventListener("click", () => navigate({ ...query, parts: query.parts.filter((_, i) => i !== index) }));
    item.append(label, weight, remove);
    list.append(item);
  });
  if (focused >= 0) {
    const next = $("query-parts").hidden ? null : controls().at(Math.min(focused, controls().length - 1));
    (next ?? $("query")).focus();
  }
}

function notKeptNote() {
  const note = document.createElement("span");
  note.className = "note";
  note.textContent = "not kept in this tab: another search or a reload loses it";
  return note;
}

function addPart(part) {
  navigate({ ...query, parts: [...query.parts, part] });
}

// ---- wiring -------------------------------------------------------------------------------------------------

function textFromBox() {
  const text = $("query").value.trim();
  if (!text) $("query").focus();
  return text;
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = textFromBox();
  if (text) navigate({ parts: [{ kind: "text", value: text, weight: 1 }], minScore: query.minScore });
});
for (const [id, weight] of [["add-text", 1], ["subtract-text", -1]]) {
  $(id).addEventListener("click", () => {
    const text = textFromBox();
    if (!text) return;
    $("query").value = "";
    addPart({ kind: "text", value: text, weight });
  });
}
for (const example of document.querySelectorAll(".example")) {
  example.addEventListener("click", () => {
    $("query").value = example.textContent;
    navigate({ parts: [{ kind: "text", value: example.textContent, weight: 1 }], minScore: query.minScore });
  });
}
$("min-score").addEventListener("input", (event) => {
  const value = Number(event.target.value);
  $("min-score-value").textContent = value > 0 ? value.toFixed(2) : "off";
});
// Each arrow key on the slider is a change: only the value it settles on is searched and becomes a history entry.
$("min-score").addEventListener("change", (event) => {
  clearTimeout(sliderSettling);
  const value = Number(event.target.value);
  settlingMinScore = value > 0 ? value.toFixed(2) : "";
  sliderSettling = setTimeout(() => {
    if (settlingMinScore !== query.minScore) navigate(query);
  }, SLIDER_SETTLE_MS);
});
$("more").addEventListener("click", () => search(true));
$("pick-picture").addEventListener("click", () => $("picture-input").click());
$("picture-input").addEventListener("change", (event) => {
  searchByPicture(event.target.files[0]);
  event.target.value = "";
});

let dragDepth = 0;
const carriesFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes("Files");
document.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  dragDepth += 1;
  $("drop-zone").hidden = false;
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) $("drop-zone").hidden = true;
});
document.addEventListener("dragover", (event) => {
  if (carriesFiles(event)) event.preventDefault();
});
document.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  $("drop-zone").hidden = true;
  searchByPicture(event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => {
  const file = event.clipboardData?.files[0];
  if (!file) return; // text pastes into the query box as usual
  event.preventDefault();
  searchByPicture(file);
});

window.addEventListener("popstate", () => show(fromParams(new URLSearchParams(location.search))));
show(fromParams(new URLSearchParams(location.search)));
