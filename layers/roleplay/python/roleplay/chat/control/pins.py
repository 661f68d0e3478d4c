"""Pinned facts: short notes the user keeps in the system prompt, after the persona.

Like SillyTavern's author's note, but on the server: up to `MAX_PINS` facts of at most
`PIN_MAX_CHARS` each, kept in the session's meta hash (`pins`, JSON). They are part of
the system prompt, so the context budget counts them like the persona.
"""

from __future__ import annotations

import json
import secrets

from roleplay.characters.persona import PersonaLanguage
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_keys import redis_keys

_LABEL = {"ko": "[고정된 사실]", "en": "[Pinned facts]"}

# KEYS: meta hash. ARGV: pin JSON, max pins. Answers 1, 'gone' or 'full'.
_ADD_SCRIPT = LuaScript("""
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
local raw = redis.call('HGET', KEYS[1], 'pins')
local pins = {}
if raw and raw ~= '' and raw ~= '{}' then pins = cjson.decode(raw) end
if #pins >= tonumber(ARGV[2]) then return 'full' end
pins[#pins + 1] = cjson.decode(ARGV[1])
redis.call('HSET', KEYS[1], 'pins', cjson.encode(pins))
return 'ok'
""")

# KEYS: meta hash. ARGV: pin id ('' for all). Answers 'ok', 'gone' or 'missing'.
_REMOVE_SCRIPT = LuaScript("""
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
local raw = redis.call('HGET', KEYS[1], 'pins')
local pins = {}
if raw and raw ~= '' and raw ~= '{}' then pins = cjson.decode(raw) end
local kept, found = {}, false
for _, pin in ipairs(pins) do
  if ARGV[1] == '' or pin.id == ARGV[1] then found = true else kept[#kept + 1] = pin end
end
if ARGV[1] ~= '' and not found then return 'missing' end
if #kept == 0 then redis.call('HSET', KEYS[1], 'pins', '[]')
else redis.call('HSET', KEYS[1], 'pins', cjson.encode(kept)) end
return 'ok'
""")


def with_pins(persona: str, pins: list[dict[str, str]], language: PersonaLanguage) -> str:
    """The persona followed by the pinned facts (the summary comes after both)."""
    if not pins:
        return persona
    lines = "\n".join(f"- {pin['text']}" for pin in pins)
    return f"{persona}\n\n{_LABEL[language]}\n{lines}"


def new_pin(text: str) -> dict[str, str]:
    return {"id": secrets.token_hex(4), "text": text}


async def add_pin(session_id: str, pin: dict[str, str], max_pins: int) -> str:
    """'ok', 'gone' (no such session) or 'full'."""
    answer = await _ADD_SCRIPT([redis_keys().session(session_id)],
                               [json.dumps(pin, ensure_ascii=False), max_pins])
    return str(answer)


async def remove_pin(session_id: str, pin_id: str | None) -> str:
    """'ok', 'gone' or 'missing'; `pin_id` None removes every pin."""
    return str(await _REMOVE_SCRIPT([redis_keys().session(session_id)], [pin_id or ""]))
