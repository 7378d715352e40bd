"""The OpenAI-compatible `/v1` surface: public API shapes over the same Pool routing."""
