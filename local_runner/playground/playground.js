// The playground: one character, one conversation, streamed text and spoken sentences.
// Open it with ?api=http://host:port to call a Server B on another origin (CORS), and with
// ?session=<id> to go on with a stored conversation of yours (or pick it in the list).
import { ApiError, apiClient, describeError } from "./api.js";

const query = new URLSearchParams(location.search);
const api = apiClient(query.get("api") || "");
const $ = (selector) => document.querySelector(selector);
const NO_SUMMARY = "-1|null|null";
const state = {
  sessionId: null, characters: new Map(),
  memories: new Map(),      // the session's episodes by id, as last listed
  summaryMark: NO_SUMMARY,  // the summary as last seen (summaryMark), to notice a new one
  follow: 0,                // bumped to stop waiting for a background summary
};

// ---- messages -------------------------------------------------------------------------

function addMessage(role, text = "") {
  const item = document.createElement("li");
  item.className = `msg ${role}`;
  item.innerHTML = `<div class="who"></div><div class="text"></div><div class="audio"></div>`;
  item.querySelector(".who").textContent = role === "user" ? "나" : characterName();
  item.querySelector(".text").textContent = text;
  $("#messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function addNote(item, text) {
  const note = document.createElement("div");
  note.className = "note";
  note.textContent = text;
  item.append(note);
}

// Sentences are played one after another, in the order the server numbered them.
class SentencePlayer {
  constructor() { this.queue = []; this.playing = null; }

  add(audio) {
    this.queue.push(audio);
    this.queue.sort((a, b) => a.dataset.index - b.dataset.index);
    if (!this.playing) this.next();
  }

  next() {
    this.playing = this.queue.shift() || null;
    if (!this.playing) return;
    this.playing.addEventListener("ended", () => this.next(), { once: true });
    this.playing.play().catch(() => this.next());  // autoplay refused: the controls stay
  }
}

function addAudio(item, { index, text, audio_url: url, error }, player) {
  if (error) return addNote(item, `문장 ${index + 1} 음성 실패: ${error.message}`);
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "auto";
  audio.title = text;
  audio.dataset.index = index;
  audio.src = api.resolve(url);
  item.querySelector(".audio").append(audio);
  player?.add(audio);
}

// ---- a turn -----------------------------------------------------------------------------

function ttsOptions() {
  const mode = $("#tts-mode").value;
  return mode === "off" ? { tts_enabled: false } : { tts_enabled: true, tts_mode: mode };
}

function generationOptions() {
  return {
    ...ttsOptions(),
    max_tokens: Number($("#max-tokens").value) || 200,
    temperature: Number($("#temperature").value),
  };
}

// Runs one streamed turn into a new assistant message; `messages` may be empty (an
// opening line).
async function runTurn(messages, extra = {}) {
  const request = { messages, ...generationOptions(), ...extra };
  if (state.sessionId) request.session_id = state.sessionId;
  else if ($("#character").value) request.character_id = $("#character").value;
  const item = addMessage("assistant");
  const userItem = item.previousElementSibling?.classList.contains("user") ? item.previousElementSibling : null;
  if (!await streamInto(item, api.streamChat(request), { replace: true, userItem })) item.remove();
}

// Streams a reply's events into `item`: its text (replacing it, or appended for
// `continue`), each sentence's audio, then the reply's figures. False if it failed.
async function streamInto(item, events, { replace, userItem = null }) {
  item.classList.add("streaming");
  item.dataset.deltas = "0";
  const text = item.querySelector(".text");
  if (replace) text.textContent = "";
  const player = ttsOptions().tts_mode === "on_click" ? null : new SentencePlayer();
  try {
    for await (const { event, data } of events) {
      if (event === "delta") {
        text.textContent += data.content;
        item.dataset.deltas = Number(item.dataset.deltas) + 1;
      } else if (event === "audio") {
        addAudio(item, data, player);
      } else if (event === "done") {
        if (replace) text.textContent = data.content;
        if (userItem && data.user_message_id) userItem.dataset.messageId = data.user_message_id;
        finishTurn(item, data);
      } else if (event === "error") {
        addNote(item, `답변이 중간에 끊겼어요: ${data.message}`);
      }
    }
    return true;
  } catch (error) {
    showError(error);
    return false;
  } finally {
    item.classList.remove("streaming");
  }
}

function finishTurn(item, reply) {
  // Another conversation was opened (or a new one started) while this reply streamed.
  if (!item.isConnected) return;
  item.dataset.done = "true";
  if (reply.message_id) item.dataset.messageId = reply.message_id;
  addControls(item);
  if (reply.alternatives?.length > 1) addAlternatives(item, reply.alternatives);
  state.sessionId = reply.session_id;
  $("#session-id").textContent = reply.session_id;
  $("#model").textContent = reply.model;
  const { prompt_tokens: prompt, completion_tokens: completion, estimated } = reply.usage;
  $("#usage").textContent = `입력 ${prompt} · 출력 ${completion}${estimated ? " (추정치)" : ""}`;
  if (reply.tts_error) addNote(item, `음성 실패: ${reply.tts_error.message}`);
  // A stored opening line is spoken whole: its audio comes with `done`, not per sentence.
  if (reply.audio_url && !item.querySelector("audio")) {
    addAudio(item, { index: 0, text: reply.content, audio_url: reply.audio_url }, new SentencePlayer());
  }
  if ($("#tts-mode").value === "on_click" && reply.content) addSpeakButton(item, reply.content);
  if (reply.greetings?.length > 1) addGreetingSwipes(item, reply);
  showRecalled(item, reply.memories_recalled);
  refreshConversations();
  const before = state.summaryMark;
  refreshSession().then((view) => {
    // The summary (and the episodes it folds) is saved after the reply, in the background.
    if (reply.summary_scheduled && view && summaryMark(view) === before) followSummary(before);
  });
}

// ---- conversation control (issue 18): regenerate, versions, edit, delete, continue ---------

function button(label, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.addEventListener("click", async () => {
    element.disabled = true;
    try { await onClick(); } catch (error) { showError(error); } finally { element.disabled = false; }
  });
  return element;
}

// Every stored message can be edited or deleted; the last reply can be regenerated or continued.
function addControls(item) {
  for (const message of document.querySelectorAll(".msg")) message.querySelector(".controls")?.remove();
  for (const message of document.querySelectorAll(".msg[data-message-id]")) {
    const row = document.createElement("div");
    row.className = "controls";
    row.append(button("수정", () => editMessage(message)), button("삭제", () => deleteMessage(message)));
    if (message === item) {
      row.append(button("다시 생성", () => regenerate(item)), button("이어서", () => continueReply(item)));
    }
    message.append(row);
  }
}

function addAlternatives(item, alternatives) {
  item.querySelector(".versions")?.remove();
  const row = document.createElement("div");
  row.className = "versions swipes";
  for (const version of alternatives) {
    const choose = button(`${version.index + 1}/${alternatives.length}`, async () => {
      const changed = await api.selectAlternative(state.sessionId, item.dataset.messageId, version.index);
      item.querySelector(".text").textContent = changed.message.content;
      addAlternatives(item, changed.message.alternatives);
    });
    choose.disabled = version.selected;
    row.append(choose);
  }
  item.append(row);
}

async function regenerate(item) {
  item.querySelector(".audio").replaceChildren();
  await streamInto(item, api.streamControl(state.sessionId, "regenerate", generationOptions()),
                   { replace: true });
}

async function continueReply(item) {
  await streamInto(item, api.streamControl(state.sessionId, "continue", generationOptions()),
                   { replace: false });
}

async function editMessage(item) {
  const text = item.querySelector(".text");
  const content = prompt("메시지 수정", text.textContent);
  if (content === null || !content.trim()) return;
  const changed = await api.editMessage(state.sessionId, item.dataset.messageId, content);
  text.textContent = changed.message.content;
  addNote(item, "(수정됨)");
  refreshSession();
  refreshConversations();
}

async function deleteMessage(item) {
  if (!confirm("이 메시지를 지울까요?")) return;
  await api.deleteMessage(state.sessionId, item.dataset.messageId);
  item.remove();
  refreshSession();
  refreshConversations();
}

// A card's alternate greetings, offered as swipes: each one starts the conversation anew.
function addGreetingSwipes(item, reply) {
  const row = document.createElement("div");
  row.className = "swipes";
  reply.greetings.forEach((_, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `인사 ${index + 1}`;
    button.disabled = index === reply.greeting_index;
    button.addEventListener("click", () => newSession(index));
    row.append(button);
  });
  item.append(row);
}

function addSpeakButton(item, content) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "🔊 듣기";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const voice = state.characters.get($("#character").value)?.voice_id;
      const spoken = await api.speak(content, voice);
      addAudio(item, { index: 0, text: content, audio_url: spoken.audio_url }, new SentencePlayer());
      button.remove();
    } catch (error) {
      showError(error);
      button.disabled = false;
    }
  });
  item.append(button);
}

// Re-reads the session's figures and its memory; the view, or null when it failed.
async function refreshSession() {
  const id = state.sessionId;
  if (!id) return null;
  try {
    const view = await api.getSession(id);
    if (id !== state.sessionId) return null;
    const t = view.tokens;
    $("#tokens").textContent = `전체 ${t.transcript} · 요약 ${t.summary} · 워터마크 이후 ${t.after_watermark}`
      + ` / 최대 ${t.max_context} (모델 토큰 비율 ${t.ratio.toFixed(2)})`;
    $("#watermark").textContent = view.summary_upto < 0
      ? "없음" : `메시지 ${view.summary_upto + 1}개까지 요약됨`;
    $("#summary").textContent = view.summary || (view.summary_error
      ? `요약 실패: ${view.summary_error}` : "(아직 없음)");
    state.summaryMark = summaryMark(view);
    await refreshMemories();
    return view;
  } catch (error) {
    showError(error);
    return null;
  }
}

function summaryMark(view) {
  return `${view.summary_upto}|${view.summary_at}|${view.summary_error}`;
}

// Polls (for half a minute at most) until the summary a turn started is saved or fails.
async function followSummary(before) {
  const ticket = ++state.follow;
  for (let tries = 0; tries < 30; tries++) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    if (ticket !== state.follow) return;
    const view = await refreshSession();
    if (!view || summaryMark(view) !== before) return;
  }
}

// ---- memory (issue 28): the episodes a summary folded, and what each turn recalled ------

// GET or DELETE under the session's `/memories`, with api.js's envelope and errors.
async function memories(method, suffix = "") {
  const url = `${api.base}/api/chat/sessions/${encodeURIComponent(state.sessionId)}/memories${suffix}`;
  let response;
  try {
    response = await fetch(url, { method, credentials: "include" });
  } catch (cause) {
    throw new ApiError(0, "network_error", String(cause.message || cause));
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, body?.error?.code ?? "http_error",
                       body?.error?.message ?? response.statusText, response.headers.get("Retry-After"));
  }
  return body.data;
}

async function refreshMemories() {
  const id = state.sessionId;
  if (!id) return;
  try {
    const listing = await memories("GET");
    if (id === state.sessionId) renderMemories(listing);
  } catch (error) {
    showError(error);
  }
}

const clock = (seconds) => new Date(seconds * 1000).toLocaleString("ko-KR", {
  month: "numeric", day: "numeric", hour: "numeric", minute: "2-digit", second: "2-digit" });
// Transcript indexes from 0, shown as the messages' numbers from 1.
const span = (episode) => episode.first === episode.last
  ? `메시지 ${episode.first + 1}` : `메시지 ${episode.first + 1}–${episode.last + 1}`;

function renderMemories({ episodes, recalled }) {
  state.memories = new Map(episodes.map((episode) => [episode.id, episode]));
  const last = new Set(recalled);
  $("#memory-count").textContent = episodes.length
    ? `${episodes.length}개 · 지난 턴에 떠올린 기억 ${episodes.filter((e) => last.has(e.id)).length}개`
    : "없음 (요약이 대화를 접으면 생겨요)";
  $("#memories").replaceChildren(...episodes.map((episode) => memoryItem(episode, last.has(episode.id))));
  for (const note of document.querySelectorAll(".recalled-note")) fillRecalled(note);
}

function memoryItem(episode, recalled) {
  const item = document.createElement("li");
  item.className = recalled ? "memory recalled" : "memory";
  item.dataset.id = episode.id;
  item.dataset.recalled = String(recalled);
  item.innerHTML = `<div class="meta"><span class="span"></span></div><div class="text"></div>
                    <div class="meta when"></div>`;
  item.querySelector(".span").textContent = span(episode);
  if (recalled) {
    const mark = document.createElement("span");
    mark.className = "recalled-mark";
    mark.textContent = " · ★ 지난 턴에 떠올림";
    item.querySelector(".meta").append(mark);
  }
  item.querySelector(".text").textContent = episode.text;
  item.querySelector(".when").textContent = episode.last_recalled_at
    ? `마지막으로 떠올린 때: ${clock(episode.last_recalled_at)}` : "아직 떠올린 적 없음";
  item.querySelector(".when").title = `만든 때: ${clock(episode.created_at)} · ${episode.tokens} 토큰`
    + (episode.embedded ? " · 임베딩 있음" : "");
  item.append(button("잊기", () => forgetMemory(episode.id)));
  return item;
}

async function forgetMemory(id) {
  if (!confirm("이 기억을 잊을까요? 다음 턴부터 떠올리지 않아요.")) return;
  try {
    await memories("DELETE", `/${encodeURIComponent(id)}`);
  } finally {
    await refreshSession();  // gone, or (404) already gone: the list shows what is kept
  }
}

// Under a reply: which episodes its prompt recalled, their texts when opened.
function showRecalled(item, ids) {
  item.querySelector(".recalled-note")?.remove();
  if (!ids?.length) return;
  const note = document.createElement("details");
  note.className = "note recalled-note";
  note.dataset.ids = ids.join(" ");
  note.innerHTML = "<summary></summary><ol></ol>";
  note.querySelector("summary").textContent = `★ 기억 ${ids.length}개를 떠올렸어요`;
  item.querySelector(".audio").after(note);
  fillRecalled(note);
}

function fillRecalled(note) {
  const lines = note.dataset.ids.split(" ").map((id) => {
    const episode = state.memories.get(id);
    return episode ? `${span(episode)}: ${episode.text}` : "(목록에 없는 기억: 잊었거나 아직 불러오는 중)";
  });
  note.querySelector("ol").replaceChildren(...lines.map((line) => {
    const entry = document.createElement("li");
    entry.textContent = line;
    return entry;
  }));
  note.title = lines.join("\n\n");
}

// ---- the user's conversations (issue 31): listed newest first, opened, renamed, deleted ---

const PAGE_SIZE = 20;
const MAX_PAGE = 100;
const listing = {
  cursor: null,  // the listed pages' next_cursor: null when the last one is shown
  ticket: 0,     // bumped by each listing call, so that only the latest one is shown
};

// Lists the conversations anew (as many as are shown, a page at least), or with `more`
// adds the next page. When that fails the panel says so; chatting goes on regardless.
async function refreshConversations({ more = false } = {}) {
  const ticket = ++listing.ticket;
  const list = $("#conversation-list");
  const shown = list.children.length;
  const moreButton = $("#conversations-more");
  moreButton.disabled = true;
  try {
    const page = await api.listSessions(more
      ? { limit: PAGE_SIZE, cursor: listing.cursor }
      : { limit: Math.min(MAX_PAGE, Math.max(PAGE_SIZE, shown)) });
    if (ticket !== listing.ticket) return;
    if (more) {
      const listed = new Set([...list.children].map((item) => item.dataset.id));
      list.append(...page.items.filter((c) => !listed.has(c.session_id)).map(conversationItem));
    } else {
      list.replaceChildren(...page.items.map(conversationItem));
    }
    listing.cursor = page.next_cursor;
    $("#conversations-error").hidden = true;
    $("#conversations-empty").hidden = list.children.length > 0;
  } catch (error) {
    if (ticket !== listing.ticket) return;
    const line = $("#conversations-error");
    line.textContent = `대화 목록을 불러오지 못했어요. ${describeError(error)}`;
    line.hidden = false;
  } finally {
    if (ticket === listing.ticket) {
      moreButton.hidden = !listing.cursor;
      moreButton.disabled = false;
    }
  }
}

const relative = new Intl.RelativeTimeFormat("ko", { numeric: "auto" });

// "방금", "5분 전", "어제", ... for the last week; a date before that.
function ago(seconds) {
  const passed = Date.now() / 1000 - seconds;
  if (passed < 60) return "방금";
  if (passed < 3600) return relative.format(-Math.floor(passed / 60), "minute");
  if (passed < 86400) return relative.format(-Math.floor(passed / 3600), "hour");
  if (passed < 7 * 86400) return relative.format(-Math.floor(passed / 86400), "day");
  return new Date(seconds * 1000).toLocaleDateString("ko-KR");
}

function conversationItem(conversation) {
  const item = document.createElement("li");
  item.className = "conversation";
  item.dataset.id = conversation.session_id;
  item.dataset.state = conversation.state;
  item.dataset.title = conversation.title;
  if (conversation.session_id === state.sessionId) {
    item.classList.add("current");
    item.setAttribute("aria-current", "true");
  }
  item.innerHTML = `<button type="button" class="open"><span class="title-row"><span class="title"></span></span>
                    <span class="preview"></span><span class="meta"></span></button>
                    <div class="actions"></div>`;
  item.querySelector(".title").textContent = conversation.title || "(제목 없음)";
  if (conversation.state === "cold") {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "보관됨";
    badge.title = "cold: 오래 쉬어서 Redis 밖에 보관한 대화예요. 열면 다시 불러와요.";
    item.querySelector(".title-row").append(badge);
  }
  item.querySelector(".preview").textContent = conversation.preview || "";
  const character = state.characters.get(conversation.character_id)?.name;
  item.querySelector(".meta").textContent = [character, `메시지 ${conversation.message_count}개`,
                                             ago(conversation.updated_at)].filter(Boolean).join(" · ");
  item.querySelector(".open").title = `마지막 대화: ${clock(conversation.updated_at)}`
    + (conversation.created_at ? ` · 시작: ${clock(conversation.created_at)}` : "");
  item.querySelector(".open").addEventListener("click", () => openConversation(conversation.session_id));
  item.querySelector(".actions").append(button("이름 바꾸기", () => renameConversation(item)),
                                        button("삭제", () => deleteConversation(item)));
  return item;
}

// As ?session=<id> does: its messages in the chat view, ready to go on. A cold one comes
// back to Redis as it is read, so the list is read again after it.
async function openConversation(sessionId) {
  $("#error").hidden = true;
  try {
    await openSession(sessionId);
  } catch (error) {
    showError(error);
  }
  refreshConversations();
}

async function renameConversation(item) {
  const title = prompt("대화 이름 바꾸기", item.dataset.title);
  if (title === null || !title.trim()) return;
  const renamed = await api.renameSession(item.dataset.id, title.trim());
  item.dataset.title = renamed.title;
  item.querySelector(".title").textContent = renamed.title;
}

async function deleteConversation(item) {
  const name = item.dataset.title || "제목 없는";
  if (!confirm(`"${name}" 대화를 지울까요? 메시지와 기억이 모두 지워지고 되돌릴 수 없어요.`)) return;
  await api.deleteSession(item.dataset.id);
  item.remove();
  if (item.dataset.id === state.sessionId) clearSession();
  refreshConversations();
}

// ---- characters, errors, wiring ---------------------------------------------------------

function characterName() {
  return state.characters.get($("#character").value)?.name || "캐릭터";
}

async function loadCharacters(selectId) {
  const page = await api.listCharacters();
  const select = $("#character");
  select.length = 1;
  for (const character of page.items) {
    state.characters.set(character.id, character);
    select.add(new Option(character.name, character.id));
  }
  if (selectId) select.value = selectId;
}

function clearSession() {
  state.sessionId = null;
  state.memories = new Map();
  state.summaryMark = NO_SUMMARY;
  state.follow++;
  $("#messages").replaceChildren();
  $("#memories").replaceChildren();
  for (const id of ["#session-id", "#model", "#usage", "#tokens", "#watermark", "#summary", "#memory-count"]) {
    $(id).textContent = "—";
  }
  const id = $("#character").value;
  $("#card-export").hidden = !id;
  if (id) {
    $("#export-png").href = api.exportUrl(id, "png");
    $("#export-json").href = api.exportUrl(id, "json");
  }
}

function newSession(greetingIndex = 0) {
  clearSession();
  refreshConversations();
  const id = $("#character").value;
  if (state.characters.get(id)?.first_message) runTurn([], { greeting_index: greetingIndex });
}

// ?session=<id>: the stored conversation, its controls and memory, ready to go on.
async function openSession(sessionId) {
  const view = await api.getSession(sessionId);
  $("#character").value = state.characters.has(view.character_id) ? view.character_id : "";
  clearSession();
  state.sessionId = view.session_id;
  $("#session-id").textContent = view.session_id;
  for (const message of view.messages) {
    if (message.role !== "user" && message.role !== "assistant") continue;
    const item = addMessage(message.role, message.content);
    item.dataset.messageId = message.id;
    if (message.role === "assistant") item.dataset.done = "true";
    if (message.alternatives?.length > 1) {
      addAlternatives(item, message.alternatives.map((content, index) => (
        { index, content, selected: index === message.selected })));
    }
  }
  const last = $("#messages").lastElementChild;
  const reply = last?.classList.contains("assistant") ? last : null;
  addControls(reply);
  if (reply) showRecalled(reply, view.memories_recalled);
  await refreshSession();
}

async function importCard(event) {
  const [file] = event.target.files;
  if (!file) return;
  try {
    const character = await api.importCard(file);
    await loadCharacters(character.id);
    newSession();
  } catch (error) {
    showError(error);
  } finally {
    event.target.value = "";
  }
}

async function loadPersona() {
  const persona = await api.getPersona();
  const form = $("#persona-form");
  form.elements.name.value = persona?.name || "";
  form.elements.description.value = persona?.description || "";
}

async function savePersona(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    await api.putPersona({ name: form.get("name"), description: form.get("description") });
  } catch (error) {
    showError(error);
  }
}

function showError(error) {
  const box = $("#error");
  box.textContent = describeError(error);
  box.dataset.status = error.status ?? "";
  box.hidden = false;
}

async function send(event) {
  event.preventDefault();
  const content = $("#input").value.trim();
  if (!content) return;
  $("#input").value = "";
  $("#error").hidden = true;
  $("#send").disabled = true;
  addMessage("user", content);
  await runTurn([{ role: "user", content }]);
  $("#send").disabled = false;
  $("#input").focus();
}

async function createCharacter(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    const character = await api.createCharacter({
      name: form.get("name"), persona: form.get("persona"),
      scenario: { situation: form.get("situation") || null },
      first_message: form.get("first_message"),
    });
    event.target.reset();
    $("#new-character").open = false;
    await loadCharacters(character.id);
    newSession();
  } catch (error) {
    showError(error);
  }
}

$("#docs-link").href = `${api.base}/docs`;
$("#chat-form").addEventListener("submit", send);
$("#input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) $("#chat-form").requestSubmit();
});
$("#character-form").addEventListener("submit", createCharacter);
$("#character").addEventListener("change", () => newSession());
$("#new-session").addEventListener("click", () => newSession());
$("#card-file").addEventListener("change", importCard);
$("#persona-form").addEventListener("submit", savePersona);
$("#conversations-more").addEventListener("click", () => refreshConversations({ more: true }));
// The list names each conversation's character, so it waits for the characters.
loadCharacters().catch(showError)
  .then(() => query.get("session") && openSession(query.get("session")))
  .catch(showError)
  .finally(() => refreshConversations());
loadPersona().catch(showError);
document.body.dataset.ready = "true";
