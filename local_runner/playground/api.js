// Server B's HTTP API as a browser calls it: the JSON envelope, its errors, and a streamed
// turn (Server-Sent Events over fetch, since EventSource cannot POST). No dependencies.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;        // 0 when the server could not be reached at all
    this.code = code;            // the envelope's stable error code
    this.retryAfter = retryAfter;
  }
}

// What a person should read for each failure; the server's own message follows it.
const STATUS_TEXT = {
  0: "서버에 연결할 수 없어요. 서버가 켜져 있는지, 다른 출처라면 CORS_ALLOW_ORIGINS에 이 페이지가 있는지 확인하세요.",
  401: "로그인이 필요해요.",
  422: "요청 내용이 올바르지 않아요.",
  502: "LLM 서버에 연결할 수 없거나 잘못된 답을 받았어요 (502).",
  503: "서버가 잠시 요청을 받을 수 없어요 (503).",
  504: "LLM 서버가 제시간에 답하지 않았어요 (504).",
};

export function describeError(error) {
  if (!(error instanceof ApiError)) return `알 수 없는 오류: ${error.message || error}`;
  const wait = error.retryAfter ? ` ${error.retryAfter}초 후에 다시 시도해 주세요.` : "";
  // The concurrent-user cap answers in Korean already (the design document's message).
  if (error.code === "too_many_users") return `${error.message}${wait}`;
  const headline = STATUS_TEXT[error.status] || `오류 (${error.status})`;
  return `${headline} ${error.message}${wait}`.trim();
}

async function errorFrom(response) {
  let code = "http_error";
  let message = response.statusText;
  try {
    const body = await response.json();
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch { /* not the envelope: keep the status text */ }
  return new ApiError(response.status, code, message, response.headers.get("Retry-After"));
}

// `base` is the API's origin ("" = the page's own); cookies go along across origins too.
export function apiClient(base = "") {
  async function call(method, path, body) {
    let response;
    const form = body instanceof FormData;  // a file upload: the browser sets its own type
    try {
      response = await fetch(base + path, {
        method,
        credentials: "include",
        headers: body === undefined || form ? {} : { "Content-Type": "application/json" },
        body: body === undefined || form ? body : JSON.stringify(body),
      });
    } catch (cause) {
      throw new ApiError(0, "network_error", String(cause.message || cause));
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  const data = async (method, path, body) => (await (await call(method, path, body)).json()).data;

  return {
    base,
    // Server B answers audio URLs relative to itself.
    resolve: (url) => new URL(url, base || location.href).href,
    listCharacters: () => data("GET", "/api/characters?limit=100"),
    createCharacter: (fields) => data("POST", "/api/characters", fields),
    getSession: (id) => data("GET", `/api/chat/sessions/${encodeURIComponent(id)}`),
    // The caller's conversations (issue 31), newest first: {items, next_cursor}; pass the
    // last page's `next_cursor` as `cursor` for the next one.
    listSessions: ({ limit = 20, cursor = null, characterId = null } = {}) => {
      const params = new URLSearchParams({ limit: String(limit) });
      if (cursor) params.set("cursor", cursor);
      if (characterId) params.set("character_id", characterId);
      return data("GET", `/api/chat/sessions?${params}`);
    },
    renameSession: (sid, title) => data("PATCH", session(sid), { title }),
    deleteSession: (sid) => data("DELETE", session(sid)),
    speak: (text, voiceId) => data("POST", "/api/tts", { text, voice_id: voiceId || "default" }),
    // A Character Card (PNG, JSON or CHARX) as the multipart field `file`.
    importCard: (file) => {
      const form = new FormData();
      form.append("file", file);
      return data("POST", "/api/characters/import", form);
    },
    exportUrl: (id, format) => `${base}/api/characters/${encodeURIComponent(id)}/export?format=${format}`,
    getPersona: () => data("GET", "/api/users/me/persona"),
    putPersona: (persona) => data("PUT", "/api/users/me/persona", persona),

    // Conversation control (issue 18), under the session's own path.
    selectAlternative: (sid, mid, index) =>
      data("POST", `${session(sid)}/messages/${mid}/select`, { index }),
    editMessage: (sid, mid, content) => data("PATCH", `${session(sid)}/messages/${mid}`, { content }),
    deleteMessage: (sid, mid) => data("DELETE", `${session(sid)}/messages/${mid}`),
    // A regenerated or continued reply, streamed like a turn.
    streamControl: (sid, action, request) => stream(`${session(sid)}/${action}`, request),
    // Yields {event, data} for each `delta`, `audio`, `done` or `error` event of one turn.
    streamChat: (request) => stream("/api/chat", request),
  };

  function session(sid) {
    return `/api/chat/sessions/${encodeURIComponent(sid)}`;
  }

  async function* stream(path, request) {
    const response = await call("POST", path, { ...request, stream: true });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const fields = Object.fromEntries(block.split("\n").map((line) => {
          const colon = line.indexOf(":");
          return [line.slice(0, colon), line.slice(colon + 1).trimStart()];
        }));
        if (fields.event && fields.data !== undefined) {
          yield { event: fields.event, data: JSON.parse(fields.data) };
        }
      }
    }
  }
}
