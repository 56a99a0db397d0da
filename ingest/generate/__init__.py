"""Descriptor generation with an LLM (any OpenAI-compatible chat-completions server) and the
cleaning of descriptor libraries: ``classes`` reads the CLASSES argument, ``prompts`` holds the
prompts, ``client`` talks to the server, ``parsing`` reads answers, ``cleaning`` cleans and
reports, ``job`` runs a generation through the store's answer cache."""
