"""Descriptor generation with an LLM (any OpenAI-compatible chat-completions server) and the
cleaning of descriptor libraries: ``classes`` reads the CLASSES argument, ``llm_prompts`` holds
the questions asked, ``llm_client`` talks to the server, ``parsing`` reads answers, ``cleaning``
cleans and reports, ``generation`` runs a generation through the store's answer cache, and
``pairs`` asks for the differential descriptions of confused pairs (FuDD)."""
