"""Conversation sessions in Redis: the one owner of a session's keys (metadata, messages,
summary, turn lease), the session's scope, the turn's lease and the cap on concurrent users."""
