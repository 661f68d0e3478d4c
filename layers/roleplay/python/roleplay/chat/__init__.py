"""A role-play turn: the request models, the prompt, fitting it in the context, the turn itself
(plain and streamed), summaries, background jobs, and conversation control (control/)."""
