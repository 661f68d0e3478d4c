"""Text to speech: the engines (GPT-SoVITS on Server A, eSpeak NG embedded), voices, the text
that is spoken, audio storage, per-user speech slots and the sentence pipeline of streamed speech."""
