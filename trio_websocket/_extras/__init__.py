"""What is built on the client and the server: reconnecting clients
(``reconnect``), in-process topics (``hub``), multi-process servers
(``workers``, ``worker_process``) and the command line (``cli``, which uses
only the public names).

Rules:
- Nothing below this layer imports it; the package's ``__init__``
  re-exports its public names.
"""
