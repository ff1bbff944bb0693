"""Docker's Engine API: what labd serves, so that Docker's own clients drive the lab.

``schema`` checks every request body and query value in one place (a 400 in Docker's words, never a 500);
``routes`` turns Docker's JSON into the runtime's calls and back; ``labd`` is the HTTP server on the Unix
socket; ``client`` is how the CLI reaches an engine, in this process or over labd's socket.
"""
