"""One router per resource: explain, retrieve, libraries, jobs, health."""
