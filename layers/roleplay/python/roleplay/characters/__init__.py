"""Characters and who plays them: the character model and its store, persona formatting,
macros, greetings, the user's own persona, Character Card files (cards/) and lorebooks (lorebook/)."""
